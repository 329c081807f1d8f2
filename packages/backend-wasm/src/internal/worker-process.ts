import { spawn, type ChildProcess } from "node:child_process";
import { createInterface } from "node:readline";
import { SandboxError, type SandboxErrorCode } from "@shells/sandbox";
import type { GuestHttpAnswer, GuestHttpRequest } from "./egress-client.js";

/** The interpreters a worker hosts. */
export type WasmLanguage = "python" | "node";

/** One exec as the worker runs it: a program (code or a file in `/workspace`) and its inputs. */
export interface WorkerExec {
  mode: "code" | "file";
  source: string;
  argv: string[];
  env: Record<string, string>;
  cwd: string;
  stdin: Uint8Array | null;
  /** Scripts run first in the same globals (node's `--require`); empty for python. */
  preload?: string[];
}

/** What an interpreter turn answers: its last expression's value or its error. */
export interface TurnAnswer {
  value: unknown;
  error: { name: string; message: string; traceback: string } | null;
  /** True when this turn created the namespace (the worker's first turn). */
  fresh: boolean;
}

/** How an exec in the worker ended. `crashed`: the worker process died before answering. */
export type WorkerOutcome =
  | {
      kind: "done";
      exitCode: number;
      answer?: TurnAnswer;
      /** A write of this exec was refused because the shell's disk quota was full. */
      diskFull?: boolean;
    }
  | { kind: "crashed" }
  /** Stopped while it still waited its turn in the queue: it never ran. */
  | { kind: "skipped" };

/** Events the worker writes, one JSON object per line. */
type WorkerEvent =
  | { type: "ready"; loadMs: number; fromSnapshot?: boolean }
  | { type: "output"; stream: "stdout" | "stderr"; data: string }
  | { type: "done"; id: number; exitCode: number; answer?: TurnAnswer; diskFull?: boolean }
  | { type: "fatal"; message: string }
  /** Guest code made an HTTP request; it waits for the `http-response` of the same id. */
  | { type: "http"; id: number; request: GuestHttpRequest }
  /** The interrupt of request `id` reached the interpreter: its guest code unwinds from now on. */
  | { type: "interrupting"; id: number }
  | {
      type: "file";
      id: number;
      ok: boolean;
      value?: unknown;
      error?: { code: SandboxErrorCode; message: string; details: Record<string, unknown> };
    };

/** How much of a worker's own stderr is kept to explain a failed start. */
const STDERR_TAIL = 4096;

/**
 * One interpreter worker process (already jailed by the command it is started with) and the framed
 * protocol to it: `exec` requests and `interrupt`s go in on stdin, `ready`, `output` and `done`
 * events come out on stdout. One exec runs at a time; callers queue on `exec` itself, and each
 * request's `stop` signal interrupts that request alone: before it is sent it is skipped, while it
 * runs its guest code is interrupted, after its answer it does nothing.
 */
export class WorkerProcess {
  /** Settles when the interpreter is loaded; rejects when the worker dies first. */
  readonly ready: Promise<number>;
  /** Settles when the process has exited. */
  readonly exited: Promise<void>;
  /** Whether the interpreter started from the backend's memory snapshot (known once ready). */
  fromSnapshot = false;
  private readonly child: ChildProcess;
  private alive = true;
  private nextId = 1;
  private current: {
    id: number;
    onOutput: (stream: "stdout" | "stderr", chunk: Uint8Array) => void;
    settle: (outcome: WorkerOutcome) => void;
    stop?: AbortSignal;
  } | null = null;
  private queue: Promise<unknown> = Promise.resolve();
  private readonly files = new Map<
    number,
    { resolve: (value: unknown) => void; reject: (error: Error) => void }
  >();
  private stderrTail = "";
  /**
   * Carries the guest's HTTP requests out (to the shell's egress proxy); set when a shell takes
   * the worker. Until then, and for a shell with no proxy, requests fail as with no network.
   */
  onHttp: ((request: GuestHttpRequest) => Promise<GuestHttpAnswer>) | null = null;
  #interruptReached = false;

  /**
   * Whether the request stopped by `stop` runs now and its interrupt has reached the interpreter
   * (its code is unwinding); false while it waits in the queue or after it ended.
   */
  interruptReached(stop: AbortSignal): boolean {
    return this.current?.stop === stop && this.#interruptReached;
  }

  /** Whether the request stopped by `stop` is the one running now. */
  runs(stop: AbortSignal): boolean {
    return this.current?.stop === stop;
  }

  constructor(command: string[], env: Record<string, string>) {
    const [file, ...args] = command as [string, ...string[]];
    this.child = spawn(file, args, { stdio: ["pipe", "pipe", "pipe"], env, detached: false });
    this.child.stdin?.on("error", () => undefined); // a dead worker surfaces through `exit`
    this.child.stderr?.on("data", (chunk: Buffer) => {
      this.stderrTail = (this.stderrTail + chunk.toString("utf8")).slice(-STDERR_TAIL);
    });
    let markReady: (ms: number) => void = () => undefined;
    let failReady: (error: Error) => void = () => undefined;
    this.ready = new Promise<number>((resolve, reject) => {
      markReady = resolve;
      failReady = reject;
    });
    this.ready.catch(() => undefined);
    this.exited = new Promise<void>((resolve) => {
      this.child.on("exit", () => {
        this.alive = false;
        failReady(
          new Error(`interpreter worker exited before it was ready: ${this.diagnostics()}`),
        );
        const current = this.current;
        this.current = null;
        current?.settle({ kind: "crashed" });
        for (const pending of this.files.values())
          pending.reject(
            new SandboxError("failed", "the interpreter worker ended during a file request"),
          );
        this.files.clear();
        resolve();
      });
      this.child.on("error", (error) => {
        this.alive = false;
        failReady(error);
        resolve();
      });
    });
    const lines = createInterface({ input: this.child.stdout! });
    lines.on("line", (line) => {
      let event: WorkerEvent;
      try {
        event = JSON.parse(line) as WorkerEvent;
      } catch {
        return; // not a protocol line: the worker wrote garbage, which only its own exec can cause
      }
      if (event.type === "file") {
        const pending = this.files.get(event.id);
        this.files.delete(event.id);
        if (event.ok) pending?.resolve(event.value);
        else {
          const error = event.error ?? {
            code: "failed",
            message: "file request failed",
            details: {},
          };
          pending?.reject(new SandboxError(error.code, error.message, error.details));
        }
      } else if (event.type === "http") {
        const carry =
          this.onHttp ?? (() => Promise.resolve({ ok: false, error: "network is unreachable" }));
        void carry(event.request)
          .catch((error: unknown) => ({ ok: false as const, error: String(error) }))
          .then((answer) => this.send({ type: "http-response", id: event.id, answer }));
      } else if (event.type === "ready") {
        this.fromSnapshot = event.fromSnapshot === true;
        markReady(event.loadMs);
      } else if (event.type === "fatal") this.stderrTail += event.message;
      else if (event.type === "interrupting" && this.current?.id === event.id)
        this.#interruptReached = true;
      else if (event.type === "output")
        this.current?.onOutput(event.stream, Buffer.from(event.data, "base64"));
      else if (event.type === "done" && this.current?.id === event.id) {
        const current = this.current;
        this.current = null;
        current.settle({
          kind: "done",
          exitCode: event.exitCode,
          answer: event.answer,
          ...(event.diskFull ? { diskFull: true } : {}),
        });
      }
    });
  }

  /** The host pid of the worker's outermost process (the jail's entry). */
  get pid(): number | undefined {
    return this.child.pid;
  }

  /** Whether the process is still running. */
  get running(): boolean {
    return this.alive;
  }

  /** The tail of the worker's own stderr, to explain a failure. */
  diagnostics(): string {
    return this.stderrTail.trim() || "(no output)";
  }

  /**
   * Runs one exec after any queued before it. Output goes to `onOutput` as it arrives; resolves
   * with the exit code, or `crashed` when the worker died (killed from outside, or out of memory).
   */
  exec(
    request: WorkerExec,
    onOutput: (stream: "stdout" | "stderr", chunk: Uint8Array) => void,
    stop: AbortSignal,
  ): Promise<WorkerOutcome> {
    return this.request(
      {
        type: "exec",
        mode: request.mode,
        source: request.source,
        argv: request.argv,
        env: request.env,
        cwd: request.cwd,
        stdin: request.stdin ? Buffer.from(request.stdin).toString("base64") : null,
        preload: request.preload ?? [],
      },
      onOutput,
      stop,
    );
  }

  /**
   * Runs one interpreter turn in the worker's persistent namespace (globals kept across turns,
   * apart from the execs' fresh ones), queued like `exec`. The outcome carries the turn's answer.
   */
  turn(
    code: string,
    env: Record<string, string>,
    onOutput: (stream: "stdout" | "stderr", chunk: Uint8Array) => void,
    stop: AbortSignal,
    /** Drop the namespace first: the turn starts with fresh globals. */
    fresh = false,
  ): Promise<WorkerOutcome> {
    return this.request({ type: "turn", code, env, fresh }, onOutput, stop);
  }

  private request(
    message: Record<string, unknown>,
    onOutput: (stream: "stdout" | "stderr", chunk: Uint8Array) => void,
    stop: AbortSignal,
  ): Promise<WorkerOutcome> {
    const run = async (): Promise<WorkerOutcome> => {
      await this.ready;
      if (!this.alive) return { kind: "crashed" };
      if (stop.aborted) return { kind: "skipped" };
      const id = this.nextId++;
      // The worker applies an interrupt only to the request it names, and only while it runs.
      const interrupt = () => this.send({ type: "interrupt", id });
      stop.addEventListener("abort", interrupt, { once: true });
      const outcome = await new Promise<WorkerOutcome>((settle) => {
        this.current = { id, onOutput, settle, stop };
        this.#interruptReached = false;
        this.send({ ...message, id });
      });
      stop.removeEventListener("abort", interrupt);
      return outcome;
    };
    const result = this.queue.then(run, run);
    this.queue = result.catch(() => undefined);
    return result;
  }

  /**
   * A file request served by the worker process itself, inside the jail, beside any running
   * exec: paths resolve in the jail's own view, confined to `/workspace` and `/tmp`. Rejects with
   * the `SandboxError` the worker reports.
   */
  async file(request: { op: string; path: string } & Record<string, unknown>): Promise<unknown> {
    await this.ready;
    if (!this.alive) throw new SandboxError("failed", "the interpreter worker is not running");
    const id = this.nextId++;
    return new Promise<unknown>((resolve, reject) => {
      this.files.set(id, { resolve, reject });
      this.send({ ...request, type: "file", id });
    });
  }

  /**
   * Sets the shell's disk quota over `/workspace` (0: none, a pooled worker before its claim). It
   * applies to every request sent after it; the worker counts the workspace as it takes it.
   */
  setDiskLimit(bytes: number): void {
    this.send({ type: "limits", diskBytes: bytes });
  }

  /** Kills the worker and everything in its jail; resolves once it has exited. */
  async kill(): Promise<void> {
    if (this.alive) this.child.kill("SIGKILL");
    await this.exited;
  }

  private send(message: unknown): void {
    if (this.alive) this.child.stdin?.write(`${JSON.stringify(message)}\n`);
  }
}
