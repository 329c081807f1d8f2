import { spawn } from "node:child_process";
import { constants } from "node:os";
import type { ExecResult, KillReason } from "@shells/contract";
import type {
  SandboxExecOptions,
  SandboxProcess,
  SandboxSignal,
  SandboxSpawnRequest,
} from "@shells/sandbox";
import {
  helperEnvironment,
  ShellNotRunningError,
  shellEntryArgs,
  type ExecTarget,
  type InflightExec,
} from "./exec.js";

/** What the helper needs to reach a shell for a long-lived process. */
export type SpawnTarget = Pick<
  ExecTarget,
  "helper" | "initPid" | "initStart" | "cgroupProcs" | "oomEventsFile" | "rootCapabilities"
>;

type OnOutput = NonNullable<SandboxExecOptions["onOutput"]>;

/** Frames on the helper's stdin (see `cmd_spawn` in native/spawn.c). */
const FRAME_DATA = 0x64; // 'd'
const FRAME_EOF = 0x65; // 'e'
const FRAME_RESIZE = 0x72; // 'r'
const FRAME_SIGNAL = 0x73; // 's'
const MAX_FRAME = 64 * 1024;

function frame(type: number, payload: Uint8Array = new Uint8Array(0)): Buffer {
  const header = Buffer.alloc(5);
  header[0] = type;
  header.writeUInt32BE(payload.length, 1);
  return Buffer.concat([header, payload]);
}

function terminalSize(value: number): number {
  return Math.min(65535, Math.max(1, Math.floor(Number.isFinite(value) ? value : 1)));
}

/**
 * Starts a long-lived process through `shells-sandbox spawn` and resolves once it runs. The helper
 * joins the shell like an exec; it relays stdin (framed together with resizes, signals and EOF, so
 * they stay in order) and output. Ending the helper's stdin tells it the owner is gone: it kills the
 * process. Output follows the exec backpressure contract: while an `onOutput` promise is pending,
 * nothing more is read, the helper stops reading the process, and the process blocks.
 */
export function startProcess(
  target: SpawnTarget,
  request: SandboxSpawnRequest,
  env: Record<string, string>,
  onOutput: OnOutput,
  register: (inflight: InflightExec) => () => void,
): Promise<SandboxProcess> {
  const started = performance.now();
  const args = [
    "spawn",
    ...shellEntryArgs(target, request.cwd),
    ...(request.pty
      ? ["--pty", `${terminalSize(request.pty.cols)}x${terminalSize(request.pty.rows)}`]
      : []),
    "--",
    ...request.command,
  ];
  const child = spawn(target.helper, args, {
    env: helperEnvironment(env),
    stdio: ["pipe", "pipe", "pipe", "pipe"],
  });
  const inflight: InflightExec = { child };
  const unregister = register(inflight);
  const input = child.stdin;
  input?.on("error", () => undefined); // the helper may be gone (stopped shell): exit says why

  let ended = false;
  let inputClosed = false;
  const send = (bytes: Buffer): Promise<void> =>
    new Promise((resolve) => {
      if (ended || !input || input.destroyed) {
        resolve();
        return;
      }
      input.write(bytes, () => resolve());
    });

  let stderrTail = "";
  let pendingConsumers = 0;
  const release = () => {
    pendingConsumers -= 1;
    if (pendingConsumers === 0) {
      child.stdout?.resume();
      child.stderr?.resume();
    }
  };
  const forward = (stream: "stdout" | "stderr") => (chunk: Buffer) => {
    if (stream === "stderr") stderrTail = (stderrTail + chunk.toString("utf8")).slice(-2000);
    const consumed = onOutput(stream, new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.length));
    if (consumed instanceof Promise) {
      pendingConsumers += 1;
      child.stdout?.pause();
      child.stderr?.pause();
      consumed.then(release, release);
    }
  };
  child.stdout?.on("data", forward("stdout"));
  child.stderr?.on("data", forward("stderr"));

  let statusText = "";
  let onStarted: (error?: Error) => void = () => undefined;
  const startedPromise = new Promise<void>((resolve, reject) => {
    onStarted = (error) => (error ? reject(error) : resolve());
  });
  const statusStream = child.stdio[3] as NodeJS.ReadableStream | null;
  statusStream?.setEncoding("utf8");
  statusStream?.on("data", (chunk: string) => {
    statusText += chunk;
    const first = statusText.split("\n", 1)[0];
    if (statusText.includes("\n")) {
      if (first === "started") onStarted();
      else if (first === "not_running")
        onStarted(new ShellNotRunningError("the shell is not running"));
    }
  });

  const exit = new Promise<ExecResult>((resolve, reject) => {
    child.on("error", (error) => {
      ended = true;
      unregister();
      onStarted(error);
      reject(error);
    });
    child.on("close", (code, signal) => {
      ended = true;
      unregister();
      const durationMs = Math.round((performance.now() - started) * 100) / 100;
      const lines = statusText.split("\n");
      if (lines[0] !== "started") {
        const how = code === null ? `signal ${signal}` : `exit ${code}`;
        const error =
          lines[0] === "not_running"
            ? new ShellNotRunningError("the shell is not running")
            : inflight.endReason
              ? new ShellNotRunningError(`the shell was ${inflight.endReason}`)
              : new Error(`spawn helper failed (${how}): ${stderrTail.trim().slice(-500)}`);
        onStarted(error);
        reject(error);
        return;
      }
      const match = /^exit=(-?\d+) reason=(\w*)/.exec(lines[1] ?? "");
      const base = { stdout: "", stderr: "", durationMs };
      if (!match) {
        // No status: the helper was killed (its shell stopped or deleted under it).
        resolve({ exitCode: 137, ...base, killReason: inflight.endReason ?? "stopped" });
        return;
      }
      const exitCode = Number(match[1]);
      let killReason: KillReason | undefined;
      if (match[2] === "oom") killReason = "oom";
      else if (inflight.endReason === "pids") killReason = "pids";
      else if (inflight.endReason && exitCode >= 128) killReason = inflight.endReason;
      resolve({ exitCode, ...base, ...(killReason ? { killReason } : {}) });
    });
  });
  // Until the process runs, a failure to start is the caller's error, reported by spawn().
  exit.catch(() => undefined);

  const handle: SandboxProcess = {
    exit,
    async write(data) {
      if (inputClosed) return;
      const bytes = typeof data === "string" ? Buffer.from(data, "utf8") : Buffer.from(data);
      for (let at = 0; at < bytes.length; at += MAX_FRAME)
        await send(frame(FRAME_DATA, bytes.subarray(at, at + MAX_FRAME)));
    },
    closeStdin() {
      if (inputClosed) return;
      inputClosed = true;
      void send(frame(FRAME_EOF));
    },
    resize(cols, rows) {
      if (!request.pty) return;
      const payload = Buffer.alloc(4);
      payload.writeUInt16BE(terminalSize(cols), 0);
      payload.writeUInt16BE(terminalSize(rows), 2);
      void send(frame(FRAME_RESIZE, payload));
    },
    signal(name: SandboxSignal) {
      const number = constants.signals[name];
      if (typeof number !== "number") return;
      void send(frame(FRAME_SIGNAL, Uint8Array.of(number)));
    },
  };
  return startedPromise.then(() => handle);
}
