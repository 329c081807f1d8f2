import { spawn, type ChildProcess } from "node:child_process";
import type { ExecResult, KillReason } from "@shells/contract";
import type { SandboxExecOptions, SandboxExecRequest } from "@shells/sandbox";

/** An exec in flight, so stop/destroy can say why it ended. */
export interface InflightExec {
  child: ChildProcess;
  /** Set by stop/restart (`stopped`) or destroy (`deleted`) before they kill the shell. */
  endReason?: KillReason;
}

/** What the helper needs to reach a shell. */
export interface ExecTarget {
  helper: string;
  initPid: number;
  initStart: string;
  cgroupProcs: string[];
  /** The exec's own cgroup's OOM counter (`oom_kill N`). */
  oomEventsFile: string;
  /** Free bytes at or below which a failed command counts as having hit the disk limit. */
  diskFullBytes: number;
  rootCapabilities: "none" | "package-manager";
  /**
   * A shell claimed from the pool: the hostname it is given (and its loopback raised, for
   * `localhost`) by every entry, from the first on (see native/enter.c).
   */
  naming?: { hostname: string; loopbackUp: boolean };
}

/** The helper's answer on fd 3. */
type HelperStatus =
  { kind: "not_running" } | { kind: "done"; exitCode: number; reason: string; truncated: boolean };

function parseStatus(text: string): HelperStatus | null {
  const line = text.trim();
  if (line === "not_running") return { kind: "not_running" };
  const match = /^exit=(-?\d+) reason=(\w*) truncated=([01])$/.exec(line);
  if (!match) return null;
  return {
    kind: "done",
    exitCode: Number(match[1]),
    reason: match[2] ?? "",
    truncated: match[3] === "1",
  };
}

const KILL_REASONS: readonly string[] = [
  "oom",
  "pids",
  "wall_clock",
  "cpu",
  "disk",
  "output_limit",
  "stopped",
  "deleted",
  "host_restart",
];

/**
 * The helper's own environment for a command whose environment is `env`: every variable under the
 * `SHELLS_ENV_` prefix, which the helper unwraps only in the command's process, inside the shell.
 * The helper starts as host root, so its own environment must hold nothing its dynamic loader or C
 * library reads (`LD_PRELOAD`, `LD_LIBRARY_PATH`, `GCONV_PATH`, `GLIBC_TUNABLES`, …): a caller could
 * otherwise run a library of its choosing, e.g. one written into the shell, as host root.
 */
export function helperEnvironment(env: Record<string, string>): Record<string, string> {
  const wrapped: Record<string, string> = {};
  for (const [name, value] of Object.entries(env)) wrapped[`SHELLS_ENV_${name}`] = value;
  return wrapped;
}

/** The helper arguments exec and spawn share: which shell to enter, and where the command starts. */
export function shellEntryArgs(
  target: Pick<
    ExecTarget,
    "initPid" | "initStart" | "cgroupProcs" | "oomEventsFile" | "rootCapabilities" | "naming"
  >,
  cwd: string,
): string[] {
  return [...entryArgs(target), ...placementArgs(target, cwd)];
}

/** Which shell and cgroups the helper enters. */
function entryArgs(target: Omit<ReadyTarget, "helper">): string[] {
  return [
    "--init-pid",
    String(target.initPid),
    "--init-start",
    target.initStart,
    ...target.cgroupProcs.flatMap((file) => ["--cgroup-procs", file]),
    "--oom-events",
    target.oomEventsFile,
    "--root-caps",
    target.rootCapabilities,
  ];
}

/** Where the command starts, and a claimed shell's naming (see ExecTarget.naming). */
function placementArgs(target: Pick<ExecTarget, "naming">, cwd: string): string[] {
  return [
    "--cwd",
    cwd,
    ...(target.naming ? ["--hostname", target.naming.hostname] : []),
    ...(target.naming?.loopbackUp ? ["--loopback-up"] : []),
  ];
}

/** What a ready helper is started with: the shell and exec cgroup it enters ahead of its exec. */
export type ReadyTarget = Pick<
  ExecTarget,
  "helper" | "initPid" | "initStart" | "cgroupProcs" | "oomEventsFile" | "rootCapabilities"
>;

/**
 * An exec helper started ahead of its exec (see native/exec.c, `--wait-request`): it has pinned the
 * shell's init and joined the shell's namespaces and one exec cgroup, and waits for the command on
 * fd 4. So the exec that takes it starts no process and moves none between cgroups: the request is
 * one write. Used once; ended by closing fd 4 without a request (it exits) or by the shell's stop
 * (it is in the shell's cgroups).
 */
export interface ReadyHelper {
  readonly child: ChildProcess;
  /** When it exited, or could not be started: it is of no use then. */
  readonly gone: boolean;
  /** Settles when the process has ended and its output is closed, however early that was. */
  readonly closed: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

export function startReadyHelper(target: ReadyTarget): ReadyHelper {
  const child = spawn(target.helper, ["exec", "--wait-request", ...entryArgs(target)], {
    env: {},
    stdio: ["pipe", "pipe", "pipe", "pipe", "pipe"],
  });
  let gone = false;
  const closed = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.on("exit", () => (gone = true));
    child.on("error", () => {
      gone = true;
      resolve({ code: null, signal: null });
    });
    child.on("close", (code, signal) => resolve({ code, signal }));
  });
  for (const stream of [child.stdin, child.stdio[4]] as (NodeJS.WritableStream | null)[])
    stream?.on("error", () => undefined); // it may have ended first: the exec then reports that
  return {
    child,
    closed,
    get gone() {
      return gone || child.exitCode !== null || child.signalCode !== null;
    },
  };
}

/**
 * Ends a ready helper no exec took: end of file on its request, so it exits on its own (a frozen
 * one once thawed). Nothing of it keeps the control plane's event loop alive meanwhile.
 */
export function dismissReadyHelper(ready: ReadyHelper): void {
  (ready.child.stdio[4] as NodeJS.WritableStream | null)?.end();
  ready.child.unref();
  for (const stream of ready.child.stdio) (stream as { unref?: () => void } | null)?.unref?.();
}

/**
 * A ready helper's request: the count of arguments, the arguments, then the helper environment's
 * entries, each NUL-terminated. Null when a string holds a NUL (it could not be told apart; such a
 * command is started the ordinary way, which refuses it).
 */
function readyRequest(
  target: Pick<ExecTarget, "naming" | "diskFullBytes">,
  request: SandboxExecRequest,
  env: Record<string, string>,
): string | null {
  const args = [
    "--timeout-ms",
    String(request.timeoutMs),
    "--max-output",
    String(request.maxOutputBytes),
    "--disk-full-bytes",
    String(target.diskFullBytes),
    ...placementArgs(target, request.cwd),
    ...(request.stdin === undefined ? ["--stdin-null"] : []),
    "--",
    ...request.command,
  ];
  const environment = Object.entries(helperEnvironment(env)).map(([k, v]) => `${k}=${v}`);
  const strings = [String(args.length), ...args, ...environment];
  if (strings.some((text) => text.includes("\0"))) return null;
  return strings.map((text) => `${text}\0`).join("");
}

/** Thrown when the shell's init is gone (the caller maps it to `not_running`). */
export class ShellNotRunningError extends Error {
  override readonly name = "ShellNotRunningError";
}

/**
 * Runs one command through the exec helper. The helper enforces the wall clock and the output
 * limit itself and reports the kill reason; this side streams output, forwards aborts, and keeps a
 * backstop timer in case the helper itself hangs.
 */
export function runExec(
  target: ExecTarget,
  request: SandboxExecRequest,
  env: Record<string, string>,
  options: SandboxExecOptions,
  register: (inflight: InflightExec) => () => void,
  /** A ready helper of the exec's cgroup to run the command with, instead of starting one. */
  ready?: ReadyHelper,
): Promise<ExecResult> {
  const started = performance.now();
  const payload = ready && !ready.gone ? readyRequest(target, request, env) : null;
  if (ready && payload === null) dismissReadyHelper(ready);
  const args = [
    "exec",
    ...shellEntryArgs(target, request.cwd),
    "--timeout-ms",
    String(request.timeoutMs),
    "--max-output",
    String(request.maxOutputBytes),
    "--disk-full-bytes",
    String(target.diskFullBytes),
    "--",
    ...request.command,
  ];
  const child =
    ready && payload !== null
      ? ready.child
      : spawn(target.helper, args, {
          env: helperEnvironment(env),
          stdio: [request.stdin === undefined ? "ignore" : "pipe", "pipe", "pipe", "pipe"],
        });
  if (ready && payload !== null) {
    (child.stdio[4] as NodeJS.WritableStream).end(payload);
    if (request.stdin === undefined) child.stdin?.end();
  }
  const inflight: InflightExec = { child };
  const unregister = register(inflight);

  return new Promise<ExecResult>((resolve, reject) => {
    const stdout: Buffer[] = [];
    const stderr: Buffer[] = [];
    let outputBytes = 0;
    let statusText = "";
    let abortReason: KillReason | undefined;
    let backstopFired = false;

    // Backpressure: while a consumer's promise is pending, stop reading; the helper then blocks
    // on its full pipe and the command on its own (the helper still enforces the wall clock).
    let pendingConsumers = 0;
    const release = () => {
      pendingConsumers -= 1;
      if (pendingConsumers === 0) {
        child.stdout?.resume();
        child.stderr?.resume();
      }
    };
    const collect = (stream: "stdout" | "stderr", sink: Buffer[]) => (chunk: Buffer) => {
      // The helper already cuts at the limit; this guards the control plane's memory regardless.
      if (outputBytes >= request.maxOutputBytes) return;
      const piece = chunk.subarray(0, request.maxOutputBytes - outputBytes);
      outputBytes += piece.length;
      sink.push(piece);
      const consumed = options.onOutput?.(stream, piece);
      if (consumed instanceof Promise) {
        pendingConsumers += 1;
        child.stdout?.pause();
        child.stderr?.pause();
        consumed.then(release, release);
      }
    };
    child.stdout?.on("data", collect("stdout", stdout));
    child.stderr?.on("data", collect("stderr", stderr));
    const statusStream = child.stdio[3] as NodeJS.ReadableStream | null;
    statusStream?.setEncoding("utf8");
    statusStream?.on("data", (chunk: string) => {
      statusText += chunk;
    });
    if (request.stdin !== undefined && child.stdin) {
      child.stdin.on("error", () => undefined); // the command may exit without reading its input
      child.stdin.end(request.stdin);
    }

    const onAbort = () => {
      const reason: unknown = options.signal?.reason;
      abortReason =
        typeof reason === "string" && KILL_REASONS.includes(reason)
          ? (reason as KillReason)
          : "stopped";
      child.kill("SIGTERM");
    };
    if (options.signal?.aborted) onAbort();
    else options.signal?.addEventListener("abort", onAbort, { once: true });

    // The helper kills at timeoutMs; this only fires if the helper itself is stuck.
    const backstop = setTimeout(() => {
      backstopFired = true;
      child.kill("SIGKILL");
    }, request.timeoutMs + 10_000);

    child.on("error", (error) => {
      clearTimeout(backstop);
      options.signal?.removeEventListener("abort", onAbort);
      unregister();
      reject(error);
    });
    const finish = (code: number | null, signal: NodeJS.Signals | null) => {
      clearTimeout(backstop);
      options.signal?.removeEventListener("abort", onAbort);
      unregister();
      const status = parseStatus(statusText);
      const durationMs = Math.round((performance.now() - started) * 100) / 100;
      const base = {
        stdout: Buffer.concat(stdout).toString("utf8"),
        stderr: Buffer.concat(stderr).toString("utf8"),
        durationMs,
      };
      if (status?.kind === "not_running") {
        reject(new ShellNotRunningError("the shell is not running"));
        return;
      }
      if (status?.kind === "done") {
        let killReason: KillReason | undefined;
        if (status.reason === "aborted")
          killReason = inflight.endReason ?? abortReason ?? "stopped";
        else if (KILL_REASONS.includes(status.reason)) killReason = status.reason as KillReason;
        // The pids watch ended this exec's processes (it filled the shell's process limit), whatever
        // exit status its first process managed to report.
        else if (inflight.endReason === "pids") killReason = "pids";
        else if (inflight.endReason && status.exitCode >= 128) killReason = inflight.endReason;
        resolve({
          exitCode: status.exitCode,
          ...base,
          ...(killReason ? { killReason } : {}),
          ...(status.truncated ? { truncated: true } : {}),
        });
        return;
      }
      // No status: the helper was killed (the shell was stopped or deleted under it) or failed.
      const endReason = inflight.endReason ?? (backstopFired ? "wall_clock" : abortReason);
      if (endReason) {
        resolve({ exitCode: 137, ...base, killReason: endReason });
        return;
      }
      const how = code === null ? `signal ${signal}` : `exit ${code}`;
      reject(new Error(`exec helper failed (${how}): ${base.stderr.trim().slice(-500)}`));
    };
    // A ready helper's close may have come before this exec took it.
    if (ready && payload !== null)
      void ready.closed.then(({ code, signal }) => finish(code, signal));
    else child.on("close", finish);
  });
}
