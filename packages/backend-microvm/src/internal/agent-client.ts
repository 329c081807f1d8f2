import { connect, type Socket } from "node:net";
import { constants } from "node:os";
import type { ExecResult, KillReason } from "@shells/contract";
import type {
  SandboxExecOptions,
  SandboxExecRequest,
  SandboxProcess,
  SandboxSignal,
  SandboxSpawnRequest,
} from "@shells/sandbox";
import {
  AgentKill,
  decodeExit,
  decodeLimits,
  encodeExec,
  encodeLimits,
  encodeFrame,
  encodeResize,
  encodeSpawn,
  encodeU32,
  FrameReader,
  FrameType,
  MAX_EXECS,
  MAX_PAYLOAD,
  type AgentExecTiming,
  type Frame,
  type AppliedLimits,
  type GuestLimits,
} from "./protocol.js";
import { EgressRelay, type EgressRelayOptions } from "./egress-relay.js";

/** How the agent's kill reasons read in an exec's result. */
const KILL_REASONS: Partial<Record<number, KillReason>> = {
  [AgentKill.WALL_CLOCK]: "wall_clock",
  [AgentKill.OUTPUT_LIMIT]: "output_limit",
  [AgentKill.PIDS]: "pids",
  [AgentKill.OOM]: "oom",
  [AgentKill.DISK]: "disk",
};

interface PendingExec {
  onFrame: (frame: Frame) => void;
  onClosed: () => void;
}

/**
 * Where one exec's round trip went: the agent's own timing, and the host's times since it wrote
 * the EXEC (ms, `performance.now()`): the exec's first frame back (output or EXIT), and its EXIT.
 */
export interface ExecTiming extends AgentExecTiming {
  firstFrameMs: number;
  exitMs: number;
}

/** How long past an exec's own wall clock the host waits for the agent before giving up on it. */
const HOST_GRACE_MS = 5_000;

/**
 * One connection to a guest agent over its virtio-serial port (a unix socket QEMU serves). Execs
 * are multiplexed by id; output streams in as it comes.
 */
export class AgentClient {
  readonly #socket: Socket;
  readonly #reader = new FrameReader();
  readonly #execs = new Map<number, PendingExec>();
  #readyWaiters: ((release: string) => void)[] = [];
  #limitsWaiters: ((answer: Buffer) => void)[] = [];
  #nextId = 1;
  #closed = false;
  /** Where the guest's egress streams go; none: every stream is refused. */
  #egress: EgressRelay | null = null;
  /** Why the connection ended, for execs cut off by it (`stopped` unless told otherwise). */
  closeReason: KillReason = "stopped";

  private constructor(socket: Socket) {
    this.#socket = socket;
    socket.on("data", (chunk: Buffer) => {
      let frames: Frame[];
      try {
        frames = this.#reader.push(chunk);
      } catch {
        socket.destroy();
        return;
      }
      for (const frame of frames) this.#dispatch(frame);
    });
    socket.on("close", () => {
      this.#closed = true;
      this.#egress?.closeAll();
      for (const pending of [...this.#execs.values()]) pending.onClosed();
      this.#execs.clear();
    });
    socket.on("error", () => undefined);
  }

  /** Connects to the agent socket, retrying while QEMU has not made it yet. */
  static async connect(path: string, timeoutMs: number): Promise<AgentClient> {
    const until = Date.now() + timeoutMs;
    for (;;) {
      try {
        const socket = await new Promise<Socket>((resolve, reject) => {
          const s = connect(path);
          s.once("connect", () => resolve(s));
          s.once("error", reject);
        });
        return new AgentClient(socket);
      } catch (error) {
        if (Date.now() > until) throw error;
        await new Promise((resolve) => setTimeout(resolve, 5));
      }
    }
  }

  /**
   * Relays the guest's egress streams (connections to its listeners at 127.0.0.1:3128 and, for
   * `internet`, 127.0.0.53:53) to the shell's egress proxy; null refuses them all.
   */
  serveEgress(options: EgressRelayOptions | null): void {
    this.#egress?.closeAll();
    this.#egress = options
      ? new EgressRelay((type, id, payload) => {
          if (!this.#closed) this.#socket.write(encodeFrame(type, id, payload));
        }, options)
      : null;
  }

  /** Whether the connection is gone (QEMU exited or closed it). */
  get closed(): boolean {
    return this.#closed;
  }

  /** Resolves with the guest's kernel release once the agent answers. */
  async ready(timeoutMs: number): Promise<string> {
    const answer = new Promise<string>((resolve) => this.#readyWaiters.push(resolve));
    this.#socket.write(encodeFrame(FrameType.PING, 0));
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new Error(`the guest agent did not answer within ${timeoutMs} ms`)),
        timeoutMs,
      );
    });
    const closed = new Promise<never>((_, reject) => {
      this.#socket.once("close", () =>
        reject(new Error("the VM exited before its agent answered")),
      );
    });
    try {
      return await Promise.race([answer, timeout, closed]);
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * Sends the shell's limits (pids.max and memory.max of the guest's shell-wide cgroup, the disk's
   * size, loopback up or down) and resolves with what the guest applied; rejects when it could not
   * apply them, so a shell never runs without its limits.
   */
  async setLimits(limits: GuestLimits, timeoutMs: number): Promise<AppliedLimits> {
    const answer = new Promise<Buffer>((resolve) => this.#limitsWaiters.push(resolve));
    this.#socket.write(encodeFrame(FrameType.LIMITS, 0, encodeLimits(limits)));
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new Error(`the guest agent did not take the limits within ${timeoutMs} ms`)),
        timeoutMs,
      );
    });
    try {
      const applied = decodeLimits(await Promise.race([answer, timeout]));
      if (applied.error !== 0)
        throw new Error(`the guest could not set the shell's limits (errno ${applied.error})`);
      return {
        memoryBytes: applied.memoryBytes,
        pids: applied.pids,
        filesystemBytes: applied.filesystemBytes,
      };
    } finally {
      clearTimeout(timer);
    }
  }

  /** Runs one command in the guest; `onTiming` hears where its time went once it exited. */
  exec(
    request: SandboxExecRequest,
    options: SandboxExecOptions = {},
    onTiming?: (timing: ExecTiming) => void,
  ): Promise<ExecResult> {
    if (this.#closed) return Promise.resolve(this.#cutOff(0, "", "", false));
    const id = this.#allocateId();
    const started = Date.now();
    const sentAt = performance.now();
    let firstFrameMs: number | undefined;
    const stdout: Buffer[] = [];
    const stderr: Buffer[] = [];
    let outputChain: Promise<void> = Promise.resolve();
    let hostKill: KillReason | undefined;

    return new Promise<ExecResult>((resolve) => {
      let finished = false;
      const finish = (result: ExecResult) => {
        if (finished) return;
        finished = true;
        clearTimeout(safety);
        options.signal?.removeEventListener("abort", onAbort);
        this.#execs.delete(id);
        // Output handed to onOutput is delivered before the result.
        void outputChain.then(() => resolve(result));
      };
      const kill = (reason: KillReason) => {
        hostKill ??= reason;
        if (!this.#closed) this.#socket.write(encodeFrame(FrameType.KILL, id));
      };
      const onAbort = () => {
        const reason = options.signal?.reason as unknown;
        kill(typeof reason === "string" ? (reason as KillReason) : "stopped");
      };
      // The agent keeps the wall clock; this only guards against a guest that stopped answering.
      const safety = setTimeout(() => {
        kill("wall_clock");
        finish(this.#cutOff(started, text(stdout), text(stderr), false, "wall_clock"));
      }, request.timeoutMs + HOST_GRACE_MS);

      this.#execs.set(id, {
        onFrame: (frame) => {
          firstFrameMs ??= performance.now() - sentAt;
          if (frame.type === FrameType.STDOUT || frame.type === FrameType.STDERR) {
            const stream = frame.type === FrameType.STDOUT ? "stdout" : "stderr";
            const chunk = Buffer.from(frame.payload);
            (stream === "stdout" ? stdout : stderr).push(chunk);
            if (options.onOutput) {
              const onOutput = options.onOutput;
              outputChain = outputChain.then(() => onOutput(stream, chunk));
            }
          } else if (frame.type === FrameType.EXIT) {
            const exit = decodeExit(frame.payload);
            onTiming?.({ ...exit.timing, firstFrameMs, exitMs: performance.now() - sentAt });
            const killReason = hostKill ?? KILL_REASONS[exit.killReason];
            finish({
              exitCode: exit.exitCode,
              stdout: text(stdout),
              stderr: text(stderr),
              durationMs: Date.now() - started,
              ...(killReason ? { killReason } : {}),
              ...(exit.truncated ? { truncated: true } : {}),
            });
          }
        },
        onClosed: () =>
          finish(this.#cutOff(started, text(stdout), text(stderr), false, this.closeReason)),
      });
      if (options.signal?.aborted) onAbort();
      else options.signal?.addEventListener("abort", onAbort, { once: true });

      // The command and its stdin leave in one write (corked): the guest takes them in one read,
      // woken once, not once per frame.
      this.#socket.cork();
      this.#socket.write(
        encodeFrame(
          FrameType.EXEC,
          id,
          encodeExec({
            argv: request.command,
            env: request.env,
            cwd: request.cwd,
            timeoutMs: request.timeoutMs,
            maxOutputBytes: request.maxOutputBytes,
          }),
        ),
      );
      const input =
        typeof request.stdin === "string" ? Buffer.from(request.stdin, "utf8") : request.stdin;
      for (let offset = 0; input && offset < input.length; offset += MAX_PAYLOAD)
        this.#socket.write(
          encodeFrame(FrameType.STDIN, id, input.subarray(offset, offset + MAX_PAYLOAD)),
        );
      this.#socket.write(encodeFrame(FrameType.STDIN, id));
      this.#socket.uncork();
    });
  }

  /**
   * Starts a long-lived process in the guest (on a pty when asked) and hands it back at once: a
   * command that cannot start ends with exit 127 and says why on stderr, as in a shell. Output
   * follows the exec backpressure contract: while an `onOutput` promise is pending, later chunks
   * wait in order and the agent is told (FLOW) to stop reading the process, which then blocks on
   * its full pipe or pty. The process has no wall clock; stop, restart and destroy end it.
   */
  spawn(
    request: SandboxSpawnRequest,
    onOutput: NonNullable<SandboxExecOptions["onOutput"]>,
  ): SandboxProcess {
    const id = this.#allocateId();
    const started = Date.now();
    let ended = this.#closed;
    const send = (type: FrameType, payload?: Uint8Array) =>
      new Promise<void>((resolve) => {
        if (ended || this.#closed) resolve();
        else this.#socket.write(encodeFrame(type, id, payload), () => resolve());
      });

    // Chunks wait here, in order, while a consumer holds back; the agent pauses meanwhile.
    const queue: ["stdout" | "stderr", Uint8Array][] = [];
    let holding = false;
    let whenDrained: (() => void)[] = [];
    const drain = () => {
      holding = false;
      while (queue.length > 0) {
        const [stream, chunk] = queue.shift()!;
        const consumed = onOutput(stream, chunk);
        if (consumed instanceof Promise) {
          holding = true;
          consumed.then(drain, drain);
          return;
        }
      }
      void send(FrameType.FLOW, encodeU32(0));
      const waiters = whenDrained;
      whenDrained = [];
      for (const waiter of waiters) waiter();
    };
    const deliver = (stream: "stdout" | "stderr", chunk: Uint8Array) => {
      if (holding) {
        queue.push([stream, chunk]);
        return;
      }
      const consumed = onOutput(stream, chunk);
      if (consumed instanceof Promise) {
        holding = true;
        void send(FrameType.FLOW, encodeU32(1));
        consumed.then(drain, drain);
      }
    };
    const drained = () =>
      holding ? new Promise<void>((resolve) => whenDrained.push(resolve)) : Promise.resolve();

    const exit = new Promise<ExecResult>((resolve) => {
      const finish = (exitCode: number, killReason: KillReason | undefined) => {
        if (ended) return;
        ended = true;
        this.#execs.delete(id);
        void drained().then(() =>
          resolve({
            exitCode,
            stdout: "",
            stderr: "",
            durationMs: Date.now() - started,
            ...(killReason ? { killReason } : {}),
          }),
        );
      };
      if (ended) {
        resolve(this.#cutOff(started, "", "", false));
        return;
      }
      this.#execs.set(id, {
        onFrame: (frame) => {
          if (frame.type === FrameType.STDOUT || frame.type === FrameType.STDERR)
            deliver(
              frame.type === FrameType.STDOUT ? "stdout" : "stderr",
              Uint8Array.from(frame.payload),
            );
          else if (frame.type === FrameType.EXIT) {
            const result = decodeExit(frame.payload);
            finish(result.exitCode, KILL_REASONS[result.killReason]);
          }
        },
        onClosed: () => finish(137, this.closeReason),
      });
    });
    void send(
      FrameType.SPAWN,
      encodeSpawn({ argv: request.command, env: request.env, cwd: request.cwd, pty: request.pty }),
    );

    return {
      exit,
      write: async (data) => {
        const bytes = typeof data === "string" ? Buffer.from(data, "utf8") : Buffer.from(data);
        for (let offset = 0; offset < bytes.length; offset += MAX_PAYLOAD)
          await send(FrameType.STDIN, bytes.subarray(offset, offset + MAX_PAYLOAD));
      },
      closeStdin: () => void send(FrameType.STDIN),
      resize: (cols, rows) => {
        if (request.pty) void send(FrameType.RESIZE, encodeResize(cols, rows));
      },
      signal: (name: SandboxSignal) =>
        void send(FrameType.SIGNAL, encodeU32(constants.signals[name])),
    };
  }

  /** Ends execs with `reason` and closes the connection (QEMU keeps running). */
  close(reason: KillReason = "stopped"): void {
    this.closeReason = reason;
    this.#socket.destroy();
  }

  #cutOff(
    started: number,
    stdout: string,
    stderr: string,
    truncated: boolean,
    reason: KillReason = this.closeReason,
  ): ExecResult {
    return {
      exitCode: 137,
      stdout,
      stderr,
      durationMs: started ? Date.now() - started : 0,
      killReason: reason,
      ...(truncated ? { truncated } : {}),
    };
  }

  #allocateId(): number {
    for (let tries = 0; tries < 0xffff; tries++) {
      const id = this.#nextId;
      this.#nextId = (this.#nextId % 0xffff) + 1;
      if (!this.#execs.has(id)) {
        if (this.#execs.size >= MAX_EXECS) break;
        return id;
      }
    }
    throw new Error(`more than ${MAX_EXECS} execs at once in one microvm`);
  }

  #dispatch(frame: Frame): void {
    if (frame.type === FrameType.READY) {
      const release = frame.payload.toString("utf8");
      const waiters = this.#readyWaiters;
      this.#readyWaiters = [];
      for (const waiter of waiters) waiter(release);
      return;
    }
    if (frame.type === FrameType.LIMITS) {
      this.#limitsWaiters.shift()?.(Buffer.from(frame.payload));
      return;
    }
    if (frame.type >= FrameType.NET_OPEN && frame.type <= FrameType.NET_CLOSE) {
      if (this.#egress) this.#egress.onFrame(frame);
      else if (frame.type === FrameType.NET_OPEN)
        this.#socket.write(encodeFrame(FrameType.NET_CLOSE, frame.id));
      return;
    }
    this.#execs.get(frame.id)?.onFrame(frame);
  }
}

function text(chunks: Buffer[]): string {
  return Buffer.concat(chunks).toString("utf8");
}
