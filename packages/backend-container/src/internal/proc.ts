import { spawn, type SpawnOptions } from "node:child_process";
import { readFile } from "node:fs/promises";

/** Outcome of a host command run to completion. */
export interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Runs a host command and collects its output (bounded: these are our own tools, not user code). */
export function run(
  command: string,
  args: string[],
  options: SpawnOptions & { input?: string; onStderrLine?: (line: string) => void } = {},
): Promise<RunResult> {
  const { input, onStderrLine, ...spawnOptions } = options;
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { ...spawnOptions, stdio: ["pipe", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    let partial = "";
    const cap = 1 << 20;
    child.stdout.setEncoding("utf8").on("data", (chunk: string) => {
      if (stdout.length < cap) stdout += chunk;
    });
    child.stderr.setEncoding("utf8").on("data", (chunk: string) => {
      if (stderr.length < cap) stderr += chunk;
      if (onStderrLine) {
        partial += chunk;
        const lines = partial.split("\n");
        partial = lines.pop() ?? "";
        for (const line of lines) onStderrLine(line);
      }
    });
    child.on("error", reject);
    child.on("close", (code, signal) => resolve({ code, signal, stdout, stderr }));
    child.stdin.on("error", () => undefined);
    child.stdin.end(input ?? "");
  });
}

/** Runs a host command and throws with its stderr when it fails. */
export async function runChecked(
  command: string,
  args: string[],
  options: SpawnOptions = {},
): Promise<string> {
  const result = await run(command, args, options);
  if (result.code !== 0) {
    const how = result.code === null ? `signal ${result.signal}` : `exit ${result.code}`;
    throw new Error(
      `${command} ${args[0] ?? ""} failed (${how}): ${result.stderr.trim().slice(-2000)}`,
    );
  }
  return result.stdout;
}

/**
 * Start time of a process in clock ticks since boot (/proc/PID/stat field 22), or null when it is
 * gone. With the pid it names one process for good: a recycled pid has another start time.
 */
export async function processStartTime(pid: number): Promise<string | null> {
  try {
    const stat = await readFile(`/proc/${pid}/stat`, "utf8");
    // The command name (field 2) may contain spaces and parentheses; fields resume after the last ')'.
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    // fields[0] is field 3 (state); field 22 is fields[19]. A zombie has exited already.
    if (fields[0] === "Z") return null;
    return fields[19] ?? null;
  } catch {
    return null;
  }
}

/** True while the process with this pid and start time is alive (not a zombie, not recycled). */
export async function isAlive(pid: number, startTime: string): Promise<boolean> {
  return (await processStartTime(pid)) === startTime;
}

/** Resolves after `ms` milliseconds. */
export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
