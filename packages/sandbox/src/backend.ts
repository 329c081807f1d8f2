import type { Duplex } from "node:stream";
import type {
  ExecResult,
  KillReason,
  Language,
  NetworkMode,
  PauseInfo,
  ResolvedResources,
  RuntimeAvailability,
  RuntimeClass,
  Snapshot,
} from "@shells/contract";

/** What a backend needs to provision one shell. */
export interface SandboxSpec {
  /** The shell's id. The backend names every per-shell object after it and keys all calls by it. */
  shellId: string;
  language: Language;
  runtime: RuntimeClass;
  network: NetworkMode;
  resources: ResolvedResources;
  /** Environment of every exec in the shell (an exec's own env overrides it). */
  env: Record<string, string>;
  /**
   * The shell's egress proxy, a unix socket on the host (an HTTP forward proxy: absolute-URI
   * requests, CONNECT, and requests to its own `/bindings/` paths). The backend makes it reachable
   * inside the sandbox at `http://127.0.0.1:` {@link SANDBOX_EGRESS_PORT}. `internet`: the proxy is
   * the sandbox's exactly one way out, and the usual proxy variables point at it; `internet`
   * without it is refused with `unsupported`. `sealed` or `localhost` (a shell granted service
   * bindings): the proxy's listener is the only thing outside the sandbox it can reach, no proxy
   * variables are set, and the proxy itself refuses everything but the shell's bindings.
   */
  egress?: SandboxEgress;
  /**
   * A fork: the new shell's filesystem starts as the state `captureFork` captured (the language,
   * runtime and disk size must be the captured shell's). Left out: a fresh filesystem.
   */
  from?: { captureId: string };
  /**
   * A custom image to run on instead of the language's base image: the base plus extra Debian
   * packages and files baked in, named by its content address (see `customImageId` in the
   * contract). Only a backend with `customImages` honours it; the orchestrator never sends it to
   * another, and such a backend refuses it with `unsupported`.
   */
  image?: SandboxImage;
}

/** A custom image: what `SandboxSpec.image` asks a backend to build (once) and run on. */
export interface SandboxImage {
  /** Content address of the image (`img-…`); equal recipes have equal ids. */
  id: string;
  /** Extra Debian packages, sorted, installed on top of the language's base packages. */
  packages: string[];
  /** Files baked into the image: absolute path, UTF-8 content, permission bits. */
  files: { path: string; content: string; mode: number }[];
  /**
   * Newer toolchains than Debian's, by name and version as the recipe asks (`{ node: "22" }`);
   * absent: none. A backend that cannot fetch one refuses the image.
   */
  toolchains?: Record<string, string>;
}

/**
 * A shell's filesystem state captured at one instant by `captureFork`, held by the backend until
 * `releaseFork`, for any number of `create` calls with `from`.
 */
export interface SandboxForkCapture {
  captureId: string;
  /**
   * How the state reaches the new shells. `layered`: the parent's state became a read-only layer
   * they share, with no copy at all (a stopped parent); `layered_reflink`: it was reflinked into
   * such a layer (a running or paused parent on a filesystem with reflinks: the layer shares the
   * parent's blocks, nothing copied); `layered_copy_once`: it was copied once into such a layer (a
   * running or paused parent on a filesystem without reflinks); `reflink`: each shell's copy shares
   * blocks until written; `copy`: each shell wrote them again.
   */
  method: "layered" | "layered_reflink" | "layered_copy_once" | "reflink" | "copy";
  /** Bytes the capture occupies on the host (each fork copies as much again, or shares it). */
  sizeBytes: number;
  /** How long the shell's processes were held still for the capture (0 when none ran). */
  frozenMs: number;
}

/**
 * The port on the sandbox's loopback where a backend that routes to `SandboxSpec.egress` lets
 * the sandbox reach the egress proxy. Fixed for every backend: binding URLs
 * (`http://127.0.0.1:3128/bindings/<name>`) are made by the control plane from it.
 */
export const SANDBOX_EGRESS_PORT = 3128;

const SANDBOX_EGRESS_URL = `http://127.0.0.1:${SANDBOX_EGRESS_PORT}`;
/**
 * The variables that point ordinary clients (curl, pip, npm, Python's urllib, Go's net/http) at an
 * `internet` shell's egress proxy: every backend that claims `internet` sets them in every exec
 * (the shell's and the exec's own env override them). Loopback stays direct.
 */
export const SANDBOX_EGRESS_ENV: Readonly<Record<string, string>> = {
  HTTP_PROXY: SANDBOX_EGRESS_URL,
  HTTPS_PROXY: SANDBOX_EGRESS_URL,
  http_proxy: SANDBOX_EGRESS_URL,
  https_proxy: SANDBOX_EGRESS_URL,
  NO_PROXY: "localhost,127.0.0.1,::1",
  no_proxy: "localhost,127.0.0.1,::1",
};

/** Where a shell's traffic to the outside goes: its egress proxy, kept by the control plane. */
export interface SandboxEgress {
  /** Absolute path of the proxy's unix socket; it may come and go while the shell runs. */
  socketPath: string;
}

/** A step of a slow preparation (an image build), for the caller to show. */
export interface SandboxProgress {
  /** What happens now, in words (`downloading packages`). */
  message: string;
  /** How far along, 0–100, where the backend can tell. */
  percent?: number;
}

/** A sandbox as the backend sees it. */
export interface SandboxInfo {
  shellId: string;
  /**
   * `running`: namespaces are held open and execs work; `paused`: they are held, with every
   * process frozen (see `pause`); `stopped`: only filesystem state exists.
   */
  state: "running" | "paused" | "stopped";
  /** Version of the base image under the shell's root filesystem, when the backend has images. */
  imageVersion: string | null;
  /**
   * How this sandbox is isolated, in words, when the backend runs it in more than one way
   * (`microvm (kvm)`, `microvm (emulated)`); recorded on the shell.
   */
  isolation?: string;
}

/**
 * What a sandbox's processes have used, as its backend reads it (cgroup counters for containers).
 * CPU time is a counter that only grows within one `epoch`; a new epoch (the sandbox's cgroup was
 * made again: a stop and start, a restart) starts it again from zero.
 */
export interface SandboxUsage {
  /** CPU time (user + system) of the sandbox's processes since the epoch began, microseconds. */
  cpuUsec: number;
  /** Memory charged to the sandbox now, bytes. */
  memoryBytes: number;
  /** Names where the counters started; a different value means they started again from zero. */
  epoch: string;
}

/** One command to run in a shell. Every field is resolved by the orchestrator. */
export interface SandboxExecRequest {
  command: string[];
  env: Record<string, string>;
  /** Absolute path inside the shell. */
  cwd: string;
  /** Standard input: UTF-8 text or raw bytes. */
  stdin: string | Uint8Array | undefined;
  /** Wall-clock limit; past it the command is killed with `wall_clock`. */
  timeoutMs: number;
  /** Output limit for stdout and stderr together; past it the command is killed with `output_limit`. */
  maxOutputBytes: number;
}

/** Hooks of one exec. */
export interface SandboxExecOptions {
  /** Aborting kills the command; the result then carries the abort reason's kill reason or `stopped`. */
  signal?: AbortSignal;
  /**
   * Called with each chunk of output as it arrives, before the exec ends. When it returns a
   * promise, the backend reads no more output of that exec until the promise settles, so a slow
   * consumer slows the process (it blocks on a full pipe) instead of growing memory.
   */
  onOutput?: (stream: "stdout" | "stderr", chunk: Uint8Array) => void | Promise<void>;
}

/** A long-lived process in a shell (a terminal, an interpreter). */
export interface SandboxSpawnRequest {
  command: string[];
  env: Record<string, string>;
  cwd: string;
  /** Run on a pseudo-terminal of this size; the terminal's output arrives as `stdout`. */
  pty?: { cols: number; rows: number };
}

/** Signals a caller may send to a spawned process. */
export type SandboxSignal =
  "SIGINT" | "SIGTERM" | "SIGKILL" | "SIGHUP" | "SIGQUIT" | "SIGTSTP" | "SIGCONT";

/** A handle on a spawned process. It has no wall clock of its own: its owner ends it. */
export interface SandboxProcess {
  /** Writes to stdin (or the terminal); resolves once the bytes are accepted. */
  write(data: Uint8Array | string): Promise<void>;
  /** Closes stdin (EOF). */
  closeStdin(): void;
  /** Resizes the terminal; no-op without a pty. */
  resize(cols: number, rows: number): void;
  /** Sends a signal to the process's group (with a pty, to the terminal's foreground group). */
  signal(name: SandboxSignal): void;
  /**
   * Settles when the process ends, with the exec result shape (stdout/stderr empty: the output went
   * to `onOutput`). Stop, restart and destroy of the sandbox end it with `stopped`/`deleted`.
   */
  readonly exit: Promise<ExecResult>;
}

/** One interpreter turn run by a backend that hosts interpreters itself (see `interpreterTurn`). */
export interface SandboxTurnRequest {
  language: "python" | "node";
  code: string;
  /** The shell's environment, given to the namespace when it is created. */
  env: Record<string, string>;
  timeoutMs: number;
}

/** A turn's answer: its output, its last expression's value (JSON or a repr) or its error. */
export interface SandboxTurnResult {
  stdout: string;
  stderr: string;
  value: unknown;
  error: { name: string; message: string; traceback: string } | null;
  /** True when this turn started with fresh globals (first turn, or after the interpreter ended). */
  restarted: boolean;
}

/** An entry of a shell's filesystem as a backend reports it. */
export interface SandboxFileInfo {
  /** Absolute path inside the shell. */
  path: string;
  type: "file" | "directory" | "symlink" | "other";
  sizeBytes: number;
  mode: number;
  modifiedAt: string;
}

/** File operations inside a shell. Sizes are bounded by the caller. */
export interface SandboxFiles {
  stat(shellId: string, path: string): Promise<SandboxFileInfo>;
  /** Entries of a directory, sorted by name. */
  list(shellId: string, path: string): Promise<SandboxFileInfo[]>;
  /** A file's bytes; `path_not_found`, or `wrong_file_type` for a directory; refuses files over `maxBytes`. */
  read(shellId: string, path: string, maxBytes: number): Promise<Uint8Array>;
  /** Creates or replaces a file (and missing parent directories). */
  write(shellId: string, path: string, data: Uint8Array, mode?: number): Promise<SandboxFileInfo>;
  /** Removes a file, or a directory (`recursive` for a non-empty one). */
  remove(shellId: string, path: string, recursive: boolean): Promise<void>;
  /** A tar archive of a directory's contents; refuses archives over `maxBytes`. */
  exportTar(shellId: string, path: string, maxBytes: number): Promise<Uint8Array>;
  /**
   * Unpacks a tar archive into a directory (created if missing). The archive was checked by the
   * caller; the sandbox unpacks it as its own root, so nothing can land outside the shell.
   */
  importTar(shellId: string, path: string, tar: Uint8Array): Promise<void>;
}

/** Why a backend call failed. The orchestrator maps each code to an API error. */
export type SandboxErrorCode =
  /** The backend holds no sandbox for this shell id. */
  | "not_found"
  /** The call needs a running sandbox and this one is stopped. */
  | "not_running"
  /** The call needs running processes and this sandbox is paused (see `pause`). */
  | "paused"
  /** No snapshot of that name. */
  | "snapshot_not_found"
  /** This host cannot run the requested runtime class (details name what is missing). */
  | "unavailable"
  /** The request is outside what the backend supports (e.g. a network mode it does not offer). */
  | "unsupported"
  /** A file or directory the request names does not exist in the shell. */
  | "path_not_found"
  /** The path exists but is the wrong kind (a directory where a file is needed, or the reverse). */
  | "wrong_file_type"
  /** Nothing listens on the port `connectPort` was asked for. */
  | "connection_refused"
  /** Anything else: the host failed. */
  | "failed";

/** The one error type backends throw. */
export class SandboxError extends Error {
  override readonly name = "SandboxError";
  constructor(
    readonly code: SandboxErrorCode,
    message: string,
    readonly details: Record<string, unknown> = {},
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/**
 * A place shells run. The orchestrator talks to sandboxes only through this interface; a backend
 * never touches the control plane's store, and keeps whatever it needs to survive a control-plane
 * restart on its own side (e.g. under its state directory).
 *
 * Every method is keyed by shell id. Every backend passes `describeSandboxBackend`.
 */
export interface SandboxBackend {
  /** Short name recorded on each shell (`container`, `simulator`, …). */
  readonly name: string;
  /**
   * The network modes `create` accepts. Left out: `sealed` and `localhost`. A backend lists
   * `internet` only when it routes a shell's traffic to `SandboxSpec.egress` and nowhere else; such
   * a backend also honours `egress` in its other modes (service bindings need that).
   */
  readonly networkModes?: readonly NetworkMode[];
  /**
   * Ports of a shell's loopback that belong to the backend itself (e.g. the egress forwarder of
   * `internet` shells), by network mode: `connectPort` refuses them. Left out: none.
   */
  readonly reservedPorts?: Partial<Record<NetworkMode, readonly number[]>>;
  /** The language presets `create` accepts. Left out: every preset. */
  readonly languages?: readonly Language[];
  /** The runtime classes this backend serves and whether this host can run each, with the reason. */
  availability(): Promise<RuntimeAvailability[]>;
  /** Provisions the shell's sandbox and starts it. Throws `unavailable` or `unsupported` when it cannot. */
  create(spec: SandboxSpec): Promise<SandboxInfo>;
  /**
   * Whether `create` of a language can start at once, or must first prepare something slow (a
   * base image build, about a minute). Backends without such a step leave it and
   * `prepareLanguage` out: every create is fast.
   */
  languageReady?(language: Language, image?: SandboxImage): Promise<boolean>;
  /**
   * Prepares what `create` of a language needs (builds its base image), reporting each step.
   * Concurrent calls for one language share one preparation, and each caller sees its progress.
   * Throws `unavailable` with the reason when it cannot.
   */
  prepareLanguage?(
    language: Language,
    onProgress: (progress: SandboxProgress) => void,
    image?: SandboxImage,
  ): Promise<void>;
  /**
   * Whether `create` honours `SandboxSpec.image` (and `languageReady`/`prepareLanguage` build
   * it). Left out: false.
   */
  readonly customImages?: boolean;
  /**
   * Removes the custom images that are not in `keep`, that no sandbox of this backend runs on,
   * and that nothing used for `unusedForMs`; answers their ids. Base images are never removed.
   */
  pruneImages?(keep: ReadonlySet<string>, unusedForMs: number): Promise<string[]>;
  /** Runs a command in a running sandbox and waits for it. A non-zero exit is a result, not an error. */
  exec(
    shellId: string,
    request: SandboxExecRequest,
    options?: SandboxExecOptions,
  ): Promise<ExecResult>;
  /**
   * Ends every process (running execs end with `reason`, `stopped` by default; `quota` when a cap
   * stopped the shell); filesystem state stays. Idempotent. Works on a paused sandbox too.
   */
  stop(shellId: string, reason?: KillReason): Promise<SandboxInfo>;
  /** Starts a stopped sandbox again on its existing state. Idempotent. */
  start(shellId: string): Promise<SandboxInfo>;
  /** Kills every process (of a paused sandbox too) and starts fresh namespaces on the same state. */
  restart(shellId: string): Promise<SandboxInfo>;
  /**
   * Holds every process of a running sandbox where it is, using no CPU: `exec` and `spawn` answer
   * `paused` until `resume`, and nothing in the sandbox runs. The result says how (frozen in
   * memory, or checkpointed to the shell's state and ended). Backends that cannot pause leave it out.
   */
  pause?(shellId: string): Promise<{ info: SandboxInfo; pause: PauseInfo }>;
  /** Lets a paused sandbox's processes run on from where they were. Idempotent on a running one. */
  resume?(shellId: string): Promise<SandboxInfo>;
  /**
   * Starts a long-lived process (a login shell on a pty, an interpreter) in a running sandbox.
   * Output goes to `onOutput` as it comes, with the same backpressure contract as `exec`.
   */
  spawn(
    shellId: string,
    request: SandboxSpawnRequest,
    options: { onOutput: NonNullable<SandboxExecOptions["onOutput"]> },
  ): Promise<SandboxProcess>;
  /**
   * File operations on a running sandbox. Paths are absolute paths inside the shell and are
   * resolved by the sandbox itself, inside its own root: a symlink can never lead out to the host.
   */
  files: SandboxFiles;
  /**
   * Runs an interpreter turn in a namespace that keeps its globals across turns. Offered by
   * backends whose shells are interpreters (no long-lived processes to run a REPL in); others
   * leave it out and turns drive a REPL process through `spawn`.
   */
  interpreterTurn?(shellId: string, request: SandboxTurnRequest): Promise<SandboxTurnResult>;
  /**
   * Captures the shell's filesystem state as a named restore point. A running sandbox's processes
   * are held still for the capture where the backend can, so it is one instant's state.
   */
  snapshot(shellId: string, name: string): Promise<Snapshot>;
  /** Restore points, newest first. */
  listSnapshots(shellId: string): Promise<Snapshot[]>;
  /**
   * A TCP connection to `port` on a running shell's own loopback, made from inside the shell's
   * network namespace: only the shell's loopback is ever dialled, so no port number reaches the
   * host or another shell. `connection_refused` when nothing listens there; `paused` while paused;
   * `unsupported` for a reserved port. The caller owns the stream and destroys it when done.
   * Backends that cannot reach into a shell's network leave it out.
   */
  connectPort?(shellId: string, port: number): Promise<Duplex>;
  /**
   * Captures a shell's filesystem state at one instant for forks (`create` with `from`): a running
   * shell is frozen for the capture and thawed after. Memory is not captured. Backends that cannot
   * fork leave it (and `releaseFork`) out.
   */
  captureFork?(shellId: string): Promise<SandboxForkCapture>;
  /** Drops a capture; the shells created from it are independent of it. Idempotent. */
  releaseFork?(captureId: string): Promise<void>;
  /** Returns the filesystem state to a restore point; running processes are restarted. */
  restore(shellId: string, name: string): Promise<Snapshot>;
  /** Puts the newest base image under the shell, keeping `/workspace`. Running processes are restarted. */
  reinstallOs(shellId: string): Promise<SandboxInfo>;
  /** Destroys all filesystem state, `/workspace` too; the sandbox stays usable in the same state. */
  wipeState(shellId: string): Promise<SandboxInfo>;
  /** Reclaims every per-shell object: processes, cgroups, mounts, directories, snapshots. Idempotent. */
  destroy(shellId: string): Promise<void>;
  /**
   * What the sandbox uses now, for metering; null when it has no processes (stopped) or the host
   * cannot say. Left out by backends that cannot read it: their shells meter time only.
   */
  usage?(shellId: string): Promise<SandboxUsage | null>;
  /**
   * Settles what a crash of the control plane cut in the middle of a step, so that every sandbox
   * is in the state before the step or the state after it: half-made sandboxes (a `create` that
   * never answered) and half-destroyed ones are reclaimed, steps recorded as intents are finished,
   * temporary files are removed, and what stopped sandboxes still hold on the host (cgroups, loop
   * devices, processes) is released. Whole sandboxes are left as they are. The control plane calls
   * it once at start-up, before `list`, while it runs nothing else on the backend. Backends whose
   * sandboxes do not outlive the process leave it out.
   */
  recover?(): Promise<void>;
  /**
   * Memory the backend's pool of started sandboxes holds (at its target), MiB: sandboxes no shell
   * owns yet, which the host's capacity gate counts beside its shells. Absent without a pool.
   */
  pooledMemoryMb?(): number;
  /** Every sandbox this backend holds on this host, for reconciliation after a restart. */
  list(): Promise<SandboxInfo[]>;
  /** Releases what this process holds; sandboxes keep running (a restarted server re-adopts them). */
  close(): Promise<void>;
}
