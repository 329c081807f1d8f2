import type { ExecResult } from "@shells/contract";
import type { SandboxProcess, SandboxSignal, SandboxSpawnRequest } from "../backend.js";
import { fromModel, runScript, toModel, type SimRun } from "./sim-shell.js";

/**
 * A modeled long-lived process. `cat` echoes its input; `sh`/`bash` read lines and interpret each
 * with the simulator's shell model (with a pty: echoing input and printing a `$ ` prompt). Anything
 * else ends at once with exit 127, saying the simulator does not model it.
 */
export function spawnSimulated(
  request: SandboxSpawnRequest,
  context: Omit<SimRun, "argv" | "stdin" | "deadline" | "emit">,
  onOutput: (stream: "stdout" | "stderr", chunk: Uint8Array) => void | Promise<void>,
): SandboxProcess {
  const started = performance.now();
  let finish: (result: ExecResult) => void = () => undefined;
  const exit = new Promise<ExecResult>((resolve) => (finish = resolve));
  let ended = false;
  const end = (exitCode: number, killReason?: ExecResult["killReason"]) => {
    if (ended) return;
    ended = true;
    finish({
      exitCode,
      stdout: "",
      stderr: "",
      durationMs: Math.round(performance.now() - started),
      ...(killReason ? { killReason } : {}),
    });
  };
  context.signal.addEventListener(
    "abort",
    () => end(137, context.signal.reason as ExecResult["killReason"]),
    { once: true },
  );
  const program = request.command[0] ?? "";
  const tty = request.pty !== undefined;
  const out = (text: string) =>
    onOutput("stdout", fromModel(tty ? text.replace(/\n/g, "\r\n") : text));
  let pending = "";
  let queue = Promise.resolve();

  const interactiveShell =
    program === "sh" || program === "bash" || program === "/bin/sh" || program === "/bin/bash";
  if (!interactiveShell && program !== "cat") {
    queue = queue.then(async () => {
      await onOutput(
        "stderr",
        fromModel(
          `simulator: \`${program}\` is not modeled as a long-lived process (the simulator runs no code)\n`,
        ),
      );
      end(127);
    });
  } else if (interactiveShell && tty) {
    queue = queue.then(() => out("$ "));
  }

  const runLine = async (line: string) => {
    const exit = /^exit(?:\s+(\d+))?$/.exec(line.trim());
    if (exit) return end(Number(exit[1] ?? 0));
    if (line.trim() === "tty") return out("/dev/pts/0\n$ ");
    if (line.trim() === "stty size") return out(`${size.rows} ${size.cols}\n$ `);
    const result = await runScript({
      ...context,
      argv: ["sh", "-c", line],
      stdin: "",
      deadline: performance.now() + 60_000,
    });
    await out(result.stdout + result.stderr + (tty ? "$ " : ""));
  };
  const size = { cols: request.pty?.cols ?? 80, rows: request.pty?.rows ?? 24 };

  return {
    exit,
    async write(data) {
      if (ended) return;
      const text = toModel(data);
      if (program === "cat") {
        queue = queue.then(() => out(text));
        return queue;
      }
      if (tty && text === "\u0003") {
        queue = queue.then(() => out("^C\n$ "));
        pending = "";
        return queue;
      }
      if (tty) queue = queue.then(() => out(text.replace(/\r/g, "\n")));
      pending += text.replace(/\r/g, "\n");
      let newline: number;
      while ((newline = pending.indexOf("\n")) >= 0) {
        const line = pending.slice(0, newline);
        pending = pending.slice(newline + 1);
        queue = queue.then(() => runLine(line));
      }
      return queue;
    },
    closeStdin() {
      queue = queue.then(() => end(0));
    },
    resize(cols, rows) {
      size.cols = cols;
      size.rows = rows;
    },
    signal(name: SandboxSignal) {
      if (name === "SIGINT" && tty) return;
      end(
        128 +
          ({ SIGHUP: 1, SIGINT: 2, SIGQUIT: 3, SIGKILL: 9, SIGTERM: 15, SIGTSTP: 20, SIGCONT: 18 }[
            name
          ] ?? 9),
      );
    },
  };
}
