import { z } from "zod";
import { BindingGrants } from "./bindings.js";
import { ShellGitSource } from "./git-source.js";

/** Language presets a shell can be created with. */
export const Language = z.enum(["bash", "python", "node", "rust", "go"]);
export type Language = z.infer<typeof Language>;

/** Isolation classes, weakest wall first. A shell never runs in a weaker class than requested. */
export const RuntimeClass = z.enum(["wasm", "container", "microvm"]);
export type RuntimeClass = z.infer<typeof RuntimeClass>;

/** Network modes. `sealed` is the default: no egress at all. */
export const NetworkMode = z.enum(["sealed", "localhost", "internet"]);
export type NetworkMode = z.infer<typeof NetworkMode>;

/** A host name rule: `example.com` (that name only) or `*.example.com` (names under it). */
export const EgressHostRule = z
  .string()
  .max(253)
  .regex(
    /^(\*\.)?([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.?$/,
    "a host name or *.suffix",
  );
/** An address range in CIDR notation (`10.0.0.0/8`, `2001:db8::/32`). */
export const EgressCidr = z.union([z.cidrv4(), z.cidrv6()]);

/** A destination port. */
export const EgressPort = z.int().min(1).max(65535);

/**
 * What a shell never reaches, whatever its allowlist and the levels above allow: hosts (exact or
 * `*.suffix`), address ranges, destination ports. A deny only ever narrows.
 */
export const ShellEgressDeny = z.strictObject({
  hosts: z.array(EgressHostRule).max(256).optional(),
  cidrs: z.array(EgressCidr).max(256).optional(),
  ports: z.array(EgressPort).max(64).optional(),
});
export type ShellEgressDeny = z.infer<typeof ShellEgressDeny>;

/**
 * Egress of a shell or run (the seed-004 shape). `deny_all`: nothing but what `allow` names (an
 * empty list: the shell is `sealed`, with no way out at all); `allowlist`: the `internet` mode
 * narrowed to `allow`, which must name something. Entries are host names, `*.suffix` or CIDRs;
 * `deny` refuses some of what `allow` lets through (`allow: ["*.example.com"], deny: { hosts:
 * ["admin.example.com"] }`). The org's egress policy still applies on top (a shell narrows it,
 * never widens it).
 */
export const ShellEgress = z.strictObject({
  mode: z.enum(["deny_all", "allowlist"]),
  allow: z.array(z.union([EgressCidr, EgressHostRule])).max(256),
  deny: ShellEgressDeny.optional(),
});
export type ShellEgress = z.infer<typeof ShellEgress>;

/** Body of `PATCH /api/v1/shells/:id/egress`: the running shell's new allowlist. */
export const ShellEgressChange = z.strictObject({
  egress: ShellEgress,
  /** Typed confirmation (the shell's name or id) when the org gates widening by `confirm`. */
  confirm: z.string().max(256).optional(),
});
export type ShellEgressChange = z.infer<typeof ShellEgressChange>;

/** Body of `POST /api/v1/shells/:id/bindings`: the service binding to grant a running shell. */
export const ShellBindingAttach = z.strictObject({
  /** The binding's name (one of the org's bindings). */
  binding: z.string().min(1).max(64),
  /** Typed confirmation (the shell's name or id) when the org gates attaching by `confirm`. */
  confirm: z.string().max(256).optional(),
});
export type ShellBindingAttach = z.infer<typeof ShellBindingAttach>;

/**
 * Lifecycle states of a shell. `paused`: its processes are held where they are (frozen, not
 * ended) and use no CPU; execs are refused until `resume`, and it is not metered as running.
 */
export const ShellStatus = z.enum([
  "provisioning",
  "running",
  "paused",
  "stopped",
  "error",
  "deleted",
]);
export type ShellStatus = z.infer<typeof ShellStatus>;

/** Lifecycle capabilities invoked through `POST /shells/:id/actions/:capability`. */
export const Capability = z.enum([
  "logs",
  "restart",
  "snapshot",
  "restore",
  "reinstall_os",
  "stop",
  "start",
  "wipe_state",
  "pause",
  "resume",
]);
export type Capability = z.infer<typeof Capability>;

/**
 * The states in which each capability is legal. Anything else answers 409 `invalid_state`.
 * Filesystem capabilities work on a stopped shell too (they need the state, not the processes);
 * a paused shell can be snapshotted (its state is still), stopped or restarted, and otherwise
 * needs `resume` first.
 */
export const CAPABILITY_LEGAL_IN: Record<Capability, readonly ShellStatus[]> = {
  logs: ["provisioning", "running", "paused", "stopped", "error"],
  restart: ["running", "paused", "error"],
  snapshot: ["running", "paused", "stopped"],
  restore: ["running", "stopped"],
  reinstall_os: ["running", "stopped"],
  stop: ["running", "paused", "error"],
  start: ["stopped"],
  wipe_state: ["running", "stopped"],
  pause: ["running"],
  resume: ["paused"],
};

/** Kill reasons: why the sandbox ended a process. Precise and part of the contract. */
export const KillReason = z.enum([
  "oom",
  "pids",
  "wall_clock",
  "cpu",
  "disk",
  "output_limit",
  "stopped",
  "deleted",
  "host_restart",
  /** The shell was stopped because its project reached a period cap (`running_seconds`, `cost`). */
  "quota",
  /** The shell was stopped because it moved more bytes through its egress proxy than its org allows. */
  "egress_limit",
]);
export type KillReason = z.infer<typeof KillReason>;

const name = z
  .string()
  .min(1)
  .max(63)
  .regex(/^[a-z0-9]([a-z0-9-]*[a-z0-9])?$/, "lowercase letters, digits and inner dashes");

const envName = z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, "an environment variable name");
/** Environment for a shell or exec: at most 128 variables, values up to 32 KiB. */
export const EnvMap = z
  .record(envName, z.string().max(32 * 1024))
  .refine((env) => Object.keys(env).length <= 128, "at most 128 variables");

/** Resource limits of a shell. Every field has a server-side default and maximum. */
export const Resources = z.strictObject({
  /** CPU cores (fractional), enforced as a CFS quota. */
  cpu: z.number().min(0.1).max(64).optional(),
  /** Memory limit in MiB; the sandbox is OOM-killed past it. */
  memoryMb: z.int().min(16).max(262144).optional(),
  /** Maximum number of processes/threads. */
  pids: z.int().min(8).max(65536).optional(),
  /** Writable filesystem state in MiB; writes past it fail with ENOSPC. */
  diskMb: z.int().min(16).max(1048576).optional(),
});
export type Resources = z.infer<typeof Resources>;

/** Resource limits as recorded on a shell: every field resolved. */
export const ResolvedResources = z.strictObject({
  cpu: z.number(),
  memoryMb: z.int(),
  pids: z.int(),
  diskMb: z.int(),
});
export type ResolvedResources = z.infer<typeof ResolvedResources>;

/** A shell's name: unique within the org, and never shaped like a shell id. */
const shellName = name.refine(
  (n) => !/^sh-[0-9a-z]{10}$/.test(n),
  "a name that does not look like a shell id (sh-xxxxxxxxxx)",
);

/** `name` (its latest version) or `name@version`, as `template` in a shell or run request. */
export const TemplateRef = z
  .string()
  .max(80)
  .regex(/^[a-z0-9]([a-z0-9-]*[a-z0-9])?(@[1-9][0-9]{0,8})?$/, "a template name or name@version");

/** Body of `POST /api/v1/shells`. The same contract as the console's create dialog and MCP. */
export const ShellCreate = z.strictObject({
  /** Unique within the org; defaults to the shell's id. A name may not look like a shell id. */
  name: shellName.optional(),
  /**
   * A template (`name` for its latest version, or `name@version`): its values are the defaults
   * of every field left out here, and the fields it locks may only be narrowed (422
   * `template_locked` names the field otherwise). Its managed files are written at create.
   */
  template: TemplateRef.optional(),
  /** Required unless a template gives it. */
  language: Language.optional(),
  /** Defaults to `container` (or the org's isolation floor when higher). */
  runtime: RuntimeClass.optional(),
  /** Defaults to the org's default network mode (`sealed` unless the org changed it). */
  network: NetworkMode.optional(),
  /** Egress allowlist; sets the network mode (see `ShellEgress`). */
  egress: ShellEgress.optional(),
  region: z.string().min(1).max(64).optional(),
  /** Project name; defaults to `default`. */
  project: name.optional(),
  resources: Resources.optional(),
  /** Seconds until the shell is stopped automatically. */
  ttlSeconds: z
    .int()
    .min(10)
    .max(30 * 24 * 3600)
    .optional(),
  /** Environment of every exec in the shell. Values are never returned by the API. */
  env: EnvMap.optional(),
  /**
   * Secret environment of every exec in the shell: stored only sealed, never returned, and
   * replaced by `[redacted]` in every stored log, history entry and stream frame.
   */
  secretEnv: EnvMap.optional(),
  /**
   * Service bindings the shell may call, by name (`binding_not_found` for one the org lacks). Each
   * sets `SHELLS_BINDING_<NAME>_URL` in the shell; its secret never enters the shell. Works in every
   * network mode: a shell that is not `internet` reaches its bindings and nothing else.
   */
  bindings: BindingGrants.optional(),
  /**
   * A git repo's files at one ref, cloned by the control plane (never in the sandbox) and copied
   * into `/workspace` at create, without `.git`; `SHELLS_GIT_COMMIT` names the commit. A private
   * repo's credential comes from the binding named in `git.binding` and never enters the shell.
   */
  git: ShellGitSource.optional(),
});
export type ShellCreate = z.input<typeof ShellCreate>;

/** A shell as the API returns it. */
export const Shell = z.strictObject({
  id: z.string(),
  name: z.string(),
  project: z.string(),
  status: ShellStatus,
  /** Why the shell is in its status (set for `error`, `stopped` by TTL, …). */
  statusReason: z.string().nullable(),
  language: Language,
  runtime: RuntimeClass,
  network: NetworkMode,
  /** The shell's own egress allowlist, when it has one (the org's policy applies on top). */
  egress: ShellEgress.optional(),
  region: z.string(),
  resources: ResolvedResources,
  /** Names of the environment variables set on the shell; values are never returned. */
  envKeys: z.array(z.string()),
  /** Names of the shell's secret environment variables; their values are never returned. */
  secretEnvKeys: z.array(z.string()),
  /** Names of the service bindings granted to the shell at launch (never their secrets). */
  bindings: z.array(z.string()).optional(),
  /** The template the shell was made from, as `name@version`. */
  template: z.string().nullable().optional(),
  /** The backend that runs this shell (`container`, `simulator`, …). */
  backend: z.string(),
  /** Version of the base image the shell's root filesystem runs on, when the backend has one. */
  imageVersion: z.string().nullable(),
  /**
   * How the shell is isolated, when its backend runs the class in more than one way: `microvm
   * (kvm)` (hardware virtualization) or `microvm (emulated)` (QEMU without KVM: the same wall,
   * slower). Null otherwise.
   */
  isolation: z.string().nullable(),
  ttlSeconds: z.int().nullable(),
  expiresAt: z.iso.datetime().nullable(),
  createdAt: z.iso.datetime(),
  updatedAt: z.iso.datetime(),
});
export type Shell = z.infer<typeof Shell>;

/** Most shells one fork makes. */
export const MAX_FORK_COUNT = 20;

/** The fields of a fork request (the REST body, and the agent tool's arguments with `shell`). */
export const FORK_FIELDS = {
  /** How many shells to make from the parent's state. */
  count: z.int().min(1).max(MAX_FORK_COUNT),
  /** Their names, one per shell in order (default: each shell's id). */
  names: z.array(shellName).min(1).max(MAX_FORK_COUNT).optional(),
};

/** A fork request's rules across fields: one distinct name per shell, when names are given. */
export function withForkRules<T extends z.ZodType<{ count: number; names?: string[] | undefined }>>(
  schema: T,
) {
  return schema
    .refine((fork) => !fork.names || fork.names.length === fork.count, {
      message: "names must name exactly `count` shells",
      path: ["names"],
    })
    .refine((fork) => !fork.names || new Set(fork.names).size === fork.names.length, {
      message: "names must differ from each other",
      path: ["names"],
    });
}

/** Body of `POST /api/v1/shells/:id/fork`. */
export const ShellFork = withForkRules(z.strictObject(FORK_FIELDS));
export type ShellFork = z.infer<typeof ShellFork>;

/** One shell of a fork that could not be made. */
export const ForkFailure = z.strictObject({
  /** Its position among the `count` asked for, from 0. */
  index: z.int(),
  name: z.string().nullable(),
  /** The error code a create would have answered (`limit_exceeded`, `name_taken`, …). */
  code: z.string(),
  message: z.string(),
});
export type ForkFailure = z.infer<typeof ForkFailure>;

/** Result of a fork. */
export const ShellForkResult = z.strictObject({
  /** The shell forked from. */
  parent: z.string(),
  /** The new shells, in the order asked for; each one was an audited create of its own. */
  shells: z.array(Shell),
  /** Shells that were not made, with why; after the first failure no more are tried. */
  failed: z.array(ForkFailure),
  /** What the new shells start from. */
  state: z.strictObject({
    /**
     * The parent's filesystem at one instant. `layered`: the parent's state became a read-only
     * layer the new shells (and the parent) stack on, copy-on-write, with nothing copied (a stopped
     * parent); `layered_reflink`: the same for a running or paused parent, its state reflinked into
     * the layer (the host's filesystem has reflinks: XFS, btrfs), sharing its blocks, nothing
     * copied; `layered_copy_once`: the same, after one copy of the parent's state into the layer (a
     * running or paused parent on a filesystem without reflinks, such as ext4), not one per shell;
     * `reflink`: the copies share the parent's blocks until written; `copy`: every allocated block
     * was copied again, once for the capture and once per shell (the host's filesystem has no
     * reflinks, or the parent is already stacked as deep as allowed).
     */
    filesystem: z.strictObject({
      method: z.enum(["layered", "layered_reflink", "layered_copy_once", "reflink", "copy"]),
      /** Bytes of the parent's state each new shell holds on the host's disk. */
      bytesPerShell: z.int(),
      /** How long the parent's processes were frozen for the capture (0 when it ran none). */
      parentFrozenMs: z.number(),
    }),
    /** Processes and memory are not forked: the new shells start with fresh processes. */
    memory: z.literal("not_copied"),
  }),
  /** What happened, in words. */
  message: z.string(),
});
export type ShellForkResult = z.infer<typeof ShellForkResult>;

/** Body of `POST /api/v1/shells/:id/ports`. */
export const PortExpose = z.strictObject({
  /** The TCP port a server listens on inside the shell (on its loopback, or on all addresses). */
  port: z.int().min(1).max(65535),
  /** How long the URL works, in seconds (default 3600, at most a day). */
  ttlSeconds: z
    .int()
    .min(60)
    .max(24 * 3600)
    .optional(),
});
export type PortExpose = z.infer<typeof PortExpose>;

/**
 * A URL that reaches a server listening on a port inside a shell (HTTP and WebSocket), through the
 * control plane. The URL carries its own short-lived token: whoever holds it reaches that port of
 * that shell, and nothing else, until it expires or the key that made it is revoked.
 */
export const PortUrl = z.strictObject({
  id: z.string(),
  shellId: z.string(),
  port: z.int(),
  /** Treat it as a secret: its path holds the token. Requests to it reach `port` in the shell. */
  url: z.string(),
  expiresAt: z.iso.datetime(),
});
export type PortUrl = z.infer<typeof PortUrl>;

/**
 * A port URL as listed: which port, who made it, until when — never the URL itself, whose path is
 * its token (the server keeps only the token's hash; the URL is answered once, when it is made).
 */
export const ExposedPort = z.strictObject({
  id: z.string(),
  shellId: z.string(),
  port: z.int(),
  createdBy: z.strictObject({ type: z.enum(["user", "agent"]), id: z.string() }),
  createdAt: z.iso.datetime(),
  expiresAt: z.iso.datetime(),
  /** When it was revoked; null while it stands. */
  revokedAt: z.iso.datetime().nullable(),
});
export type ExposedPort = z.infer<typeof ExposedPort>;

/** A named restore point of a shell's filesystem state. */
export const Snapshot = z.strictObject({
  name: z.string(),
  sizeBytes: z.int(),
  createdAt: z.iso.datetime(),
});
export type Snapshot = z.infer<typeof Snapshot>;

/** One line of a shell's execution log. */
export const LogEntry = z.strictObject({
  time: z.iso.datetime(),
  kind: z.enum(["system", "exec"]),
  message: z.string(),
});
export type LogEntry = z.infer<typeof LogEntry>;

/** Body of `POST /api/v1/shells/:id/actions/:capability`. Every field is optional. */
export const ActionRequest = z.strictObject({
  /** Typed confirmation (the shell's name or id) for actions the org gates by `confirm`. */
  confirm: z.string().max(256).optional(),
  /** `snapshot`: the name of the restore point to create (default: a timestamp). */
  name: name.optional(),
  /** `restore`: the restore point to return to (default: the newest). */
  snapshot: name.optional(),
  /** `logs`: how many of the newest entries to return (default 200). */
  tail: z.int().min(1).max(10000).optional(),
});
export type ActionRequest = z.infer<typeof ActionRequest>;

/**
 * How `pause` holds a shell's processes. `freeze`: stopped in place by the cgroup freezer; their
 * memory stays resident on the host. `checkpoint`: written to the shell's state and ended, so
 * their memory is freed (where the host can checkpoint processes).
 */
export const PauseInfo = z.strictObject({
  method: z.enum(["freeze", "checkpoint"]),
  /** Whether the processes' memory was released while paused. */
  memoryReleased: z.boolean(),
  /** Why this method, in words (e.g. why checkpointing is not possible on this host). */
  reason: z.string(),
});
export type PauseInfo = z.infer<typeof PauseInfo>;

/** Result of a lifecycle action. */
export const ActionResult = z.strictObject({
  capability: Capability,
  /** What happened, in words a person or a model can act on. */
  message: z.string(),
  shell: Shell,
  /** `snapshot`: the restore point created; `restore`: the one returned to. */
  snapshot: Snapshot.optional(),
  /** `logs`: the newest log entries, oldest first. */
  logs: z.array(LogEntry).optional(),
  /** `pause`: how the processes are held. */
  pause: PauseInfo.optional(),
});
export type ActionResult = z.infer<typeof ActionResult>;

/** Body of `POST /api/v1/shells/:id/exec`. */
export const ExecRequest = z.strictObject({
  /** argv of the command; the first element is looked up on the shell's PATH. */
  command: z
    .array(z.string().max(128 * 1024))
    .min(1)
    .max(4096),
  env: EnvMap.optional(),
  /** Secret environment of this exec: never stored, and redacted from its log entry and streamed output. */
  secretEnv: EnvMap.optional(),
  /** Working directory inside the shell; defaults to `/workspace`. */
  cwd: z.string().min(1).max(4096).optional(),
  /** Bytes written to the command's standard input (UTF-8). */
  stdin: z
    .string()
    .max(512 * 1024)
    .optional(),
  /** Wall-clock limit in milliseconds (default 60 000, at most 1 hour). */
  timeoutMs: z
    .int()
    .min(1)
    .max(3600 * 1000)
    .optional(),
});
export type ExecRequest = z.infer<typeof ExecRequest>;

/** Result of an exec. A non-zero exit code is a result, not an error. */
export const ExecResult = z.strictObject({
  /** Exit status; 128 + signal number when a signal ended the command. */
  exitCode: z.int(),
  stdout: z.string(),
  stderr: z.string(),
  durationMs: z.number(),
  /** Set when the sandbox ended the command on purpose. */
  killReason: KillReason.optional(),
  /** Set when output past the limit was cut. */
  truncated: z.boolean().optional(),
});
export type ExecResult = z.infer<typeof ExecResult>;
