import { randomBytes } from "node:crypto";
import {
  CoreV1Api,
  NetworkingV1Api,
  NodeV1Api,
  Watch,
  type KubeConfig,
  type V1ObjectMeta,
  type V1PersistentVolumeClaim,
  type V1Pod,
  type V1Secret,
} from "@kubernetes/client-node";
import type {
  ExecResult,
  KillReason,
  Language,
  NetworkMode,
  RuntimeAvailability,
  RuntimeClass,
  Snapshot,
} from "@shells/contract";
import {
  ExecFiles,
  SandboxError,
  type SandboxBackend,
  type SandboxExecOptions,
  type SandboxExecRequest,
  type SandboxFiles,
  type SandboxInfo,
  type SandboxProcess,
  type SandboxSignal,
  type SandboxSpawnRequest,
  type SandboxSpec,
} from "@shells/sandbox";
import { isConflict, isNotFound, toSandboxError } from "./internal/api-errors.js";
import { EgressBridge, type EgressRoute } from "./internal/egress-bridge.js";
import { ExecSession, execPath, type ExecEnd } from "./internal/exec-channel.js";
import {
  COMPONENT_LABEL,
  DEFAULT_IMAGES,
  EGRESS_TOKEN_KEY,
  INSTANCE_LABEL,
  KUBERNETES_SHELL_ID,
  MANAGED_BY,
  SHELL_ID_LABEL,
  SPEC_KEY,
  buildNetworkPolicy,
  buildPod,
  buildPvc,
  buildSecret,
  namesOf,
  selectorOf,
  type ManifestSettings,
  type StoredSpec,
} from "./internal/manifests.js";
import { waitFor, type WatchedResource } from "./internal/object-watch.js";
import { imageVersionOf, killReasonOf, podPhaseOf, podProblemOf } from "./internal/pod-status.js";
import {
  DROP_SNAPSHOT_SCRIPT,
  OOM_CHECK_SCRIPT,
  RESTORE_SCRIPT,
  SIGNAL_SCRIPT,
  SNAPSHOT_NAME,
  SNAPSHOT_SCRIPT,
  execArgv,
  spawnArgv,
} from "./internal/shell-scripts.js";

/** Options of a `KubernetesBackend`. */
export interface KubernetesBackendOptions {
  /** The cluster and credentials (`loadKubeConfig`: a kubeconfig file or the Pod's service account). */
  kubeConfig: KubeConfig;
  /** Namespace the shells' objects live in (Pod Security `restricted` enforced there). */
  namespace: string;
  /** Names this control plane on its objects, so several can share a namespace (default `default`). */
  instance?: string;
  /** RuntimeClass of shell Pods (default `gvisor`); null runs on the cluster's default runtime. */
  runtimeClassName?: string | null;
  /**
   * The runtime class shells on this backend count as. Default: `microvm` for a Kata RuntimeClass
   * (its name contains `kata`), else `container` — never a stronger class than the name promises.
   */
  runtime?: Extract<RuntimeClass, "container" | "microvm">;
  /** Image of each language (defaults: Debian-based official images, `DEFAULT_IMAGES`). */
  images?: Partial<Record<Language, string>>;
  /** The control plane's own image, run as each shell Pod's agent container. */
  agentImage: string;
  /** StorageClass of the shells' volumes (default: the cluster's default class). */
  storageClassName?: string | null;
  /** Size of each shell's snapshots volume, MiB (default 1024). */
  snapshotsDiskMb?: number;
  /**
   * The egress bridge: where the control plane listens for shells' egress and how shells reach it.
   * Left out: shells get no egress at all, and `internet` is refused.
   */
  egress?: {
    /** Port the bridge listens on in this process (and the NetworkPolicy opens). */
    port: number;
    /** Address the bridge listens on (default all). */
    listenHost?: string;
    /** Address shells' agents dial: this Pod's IP (downward API), or a Service in front of it. */
    advertiseHost: string;
    /** Namespace of the control plane's Pods. */
    controlPlaneNamespace: string;
    /** Labels of the control plane's Pods. */
    controlPlaneLabels: Record<string, string>;
  };
  /** How long a shell Pod may take to run (scheduling, image pull), ms (default 180 000). */
  startTimeoutMs?: number;
}

/** Every API request the backend makes, as RBAC rules: the Role in `deploy/kubernetes` grants these. */
export const KUBERNETES_API_PERMISSIONS = {
  namespaced: [
    { apiGroup: "", resource: "pods", verbs: ["create", "delete", "get", "list", "watch"] },
    // WebSocket exec is a GET (RBAC `get`); newer API servers also require `create` on upgrade.
    { apiGroup: "", resource: "pods/exec", verbs: ["create", "get"] },
    { apiGroup: "", resource: "secrets", verbs: ["create", "delete", "get", "list"] },
    {
      apiGroup: "",
      resource: "persistentvolumeclaims",
      verbs: ["create", "delete", "get", "list", "update", "watch"],
    },
    {
      apiGroup: "networking.k8s.io",
      resource: "networkpolicies",
      verbs: ["create", "delete", "get", "list"],
    },
  ],
  /** Cluster-scoped: reading the one RuntimeClass shells run with (availability). */
  cluster: [{ apiGroup: "node.k8s.io", resource: "runtimeclasses", verbs: ["get"] }],
} as const;

/** Annotation on a shell's snapshots PVC listing its snapshots, newest first. */
const SNAPSHOTS_ANNOTATION = "shells.dev/snapshots";
/** How long a stop waits for its Pod to be gone, and a wipe for its volume. */
const GONE_TIMEOUT_MS = 120_000;
/** Grace past an exec's wall clock before the backend ends it itself. */
const EXEC_GRACE_MS = 2_000;
/** How long state scripts (tar of a workspace) may take. */
const STATE_SCRIPT_TIMEOUT_MS = 30 * 60_000;
/** How long a maintenance Pod may run before the kubelet ends it (`activeDeadlineSeconds`). */
const MAINTENANCE_DEADLINE_SECONDS = 900;
/** Tries of an update that lost a race (409 Conflict) before it gives up. */
const CONFLICT_TRIES = 5;

/** Control characters a terminal turns into signals for its foreground group. */
const TERMINAL_SIGNALS: Partial<Record<SandboxSignal, string>> = {
  SIGINT: "\x03",
  SIGQUIT: "\x1c",
  SIGTSTP: "\x1a",
};

const text = (chunks: Buffer[]) => Buffer.concat(chunks).toString("utf8");
const newId = (prefix: string) => `${prefix}${randomBytes(8).toString("hex")}`;

/**
 * The Kubernetes backend: one Pod per shell, under a RuntimeClass (gVisor by default; Kata counts
 * as `microvm`), with Pod Security `restricted`, no service account token, a default-deny
 * NetworkPolicy, limits from the shell's resources, a Secret for its spec and credentials, and its
 * state on a PVC; execs and terminals go through the Pod's exec subresource. Everything it sends is
 * built by the pure functions of `internal/manifests.ts`.
 *
 * UNVERIFIED AGAINST A LIVE CLUSTER: no Kubernetes API server was available where this was built.
 * Its objects are validated against the Kubernetes 1.33 OpenAPI schemas and its handling of the
 * API's answers (watch events, 409/404/410, exec channel frames) against recorded protocol frames
 * on a loopback server; the conformance suite runs only when `SHELLS_TEST_KUBECONFIG` names a
 * cluster.
 *
 * Offers: create, exec, spawn (pipes and terminals), files (`ExecFiles`), stop/start/restart (the
 * Pod is deleted and made again; the PVC stays), snapshots (tar archives on the shell's snapshots
 * volume, made by the agent container), restore, reinstall_os (a new Pod on the newest image of the
 * language's tag; `/workspace` stays), wipe_state (a new state volume) and destroy. Not offered:
 * pause, forks, ports, usage counters.
 */
export class KubernetesBackend implements SandboxBackend {
  readonly name = "kubernetes";
  readonly networkModes: readonly NetworkMode[];
  readonly #kubeConfig: KubeConfig;
  readonly #core: CoreV1Api;
  readonly #networking: NetworkingV1Api;
  readonly #node: NodeV1Api;
  readonly #watch: Watch;
  readonly #settings: ManifestSettings;
  readonly #runtime: Extract<RuntimeClass, "container" | "microvm">;
  readonly #startTimeoutMs: number;
  readonly #egressOptions: KubernetesBackendOptions["egress"] | undefined;
  readonly #bridge: EgressBridge | null;
  #bridgeListening: Promise<number> | null = null;
  /** Specs read from Secrets (or given to create), by shell id. */
  readonly #specs = new Map<string, SandboxSpec>();
  /** Why a shell's processes are ending, while a stop or destroy of it runs. */
  readonly #ending = new Map<string, KillReason>();
  /** Open exec and spawn connections, by shell id (closed by `close`). */
  readonly #sessions = new Map<string, Set<ExecSession>>();
  /** Lifecycle calls in flight, by shell id: one at a time per shell. */
  readonly #locks = new Map<string, Promise<unknown>>();
  /** Maintenance Pods this process uses now (others are leftovers, reaped by `list`). */
  readonly #maintenance = new Set<string>();

  constructor(options: KubernetesBackendOptions) {
    this.#kubeConfig = options.kubeConfig;
    this.#core = options.kubeConfig.makeApiClient(CoreV1Api);
    this.#networking = options.kubeConfig.makeApiClient(NetworkingV1Api);
    this.#node = options.kubeConfig.makeApiClient(NodeV1Api);
    this.#watch = new Watch(options.kubeConfig);
    const runtimeClassName =
      options.runtimeClassName === undefined ? "gvisor" : options.runtimeClassName;
    this.#runtime =
      options.runtime ??
      (runtimeClassName && /kata/i.test(runtimeClassName) ? "microvm" : "container");
    this.#startTimeoutMs = options.startTimeoutMs ?? 180_000;
    this.#egressOptions = options.egress;
    this.#settings = {
      namespace: options.namespace,
      instance: options.instance ?? "default",
      runtimeClassName,
      images: { ...DEFAULT_IMAGES, ...options.images },
      agentImage: options.agentImage,
      storageClassName: options.storageClassName ?? null,
      snapshotsDiskMb: options.snapshotsDiskMb ?? 1024,
      egress: options.egress
        ? {
            host: options.egress.advertiseHost,
            port: options.egress.port,
            controlPlaneNamespace: options.egress.controlPlaneNamespace,
            controlPlaneLabels: options.egress.controlPlaneLabels,
          }
        : null,
    };
    this.networkModes = options.egress
      ? ["sealed", "localhost", "internet"]
      : ["sealed", "localhost"];
    this.#bridge = options.egress
      ? new EgressBridge((shellId) => this.#egressRoute(shellId))
      : null;
  }

  /** The objects' settings (namespace, images, RuntimeClass…), as the builders see them. */
  get settings(): Readonly<ManifestSettings> {
    return this.#settings;
  }

  /** Starts the egress bridge's listener (the server calls it at start; `create` makes sure). */
  listenEgress(): Promise<number> {
    if (!this.#bridge || !this.#egressOptions) return Promise.resolve(0);
    this.#bridgeListening ??= this.#bridge.listen(
      this.#egressOptions.port,
      this.#egressOptions.listenHost,
    );
    return this.#bridgeListening;
  }

  async availability(): Promise<RuntimeAvailability[]> {
    const entry = (available: boolean, reason: string): RuntimeAvailability[] => [
      { runtime: this.#runtime, available, backend: this.name, reason },
    ];
    const server = this.#kubeConfig.getCurrentCluster()?.server ?? "?";
    const { namespace, runtimeClassName } = this.#settings;
    try {
      await this.#core.listNamespacedPod({ namespace, limit: 1 });
    } catch (error) {
      return entry(
        false,
        `${toSandboxError(error, `listing pods in namespace ${namespace} at ${server}`).message}`,
      );
    }
    if (runtimeClassName) {
      try {
        await this.#node.readRuntimeClass({ name: runtimeClassName });
      } catch (error) {
        return entry(
          false,
          isNotFound(error)
            ? `the cluster at ${server} has no RuntimeClass ${runtimeClassName}`
            : toSandboxError(error, `reading RuntimeClass ${runtimeClassName}`).message,
        );
      }
    }
    return entry(
      true,
      `kubernetes: Pods in namespace ${namespace} at ${server} with ${runtimeClassName ? `RuntimeClass ${runtimeClassName}` : "the cluster's default runtime"} — unverified against a live cluster`,
    );
  }

  async create(spec: SandboxSpec): Promise<SandboxInfo> {
    if (spec.runtime !== this.#runtime)
      throw new SandboxError(
        "unsupported",
        `the kubernetes backend runs ${this.#runtime}, not ${spec.runtime}`,
      );
    if (!this.networkModes.includes(spec.network))
      throw new SandboxError(
        "unsupported",
        `network mode ${spec.network} is not available on kubernetes without the egress bridge`,
        { network: spec.network },
      );
    if (spec.network === "internet" && !spec.egress)
      throw new SandboxError("unsupported", "internet needs the shell's egress proxy");
    if (spec.from) throw new SandboxError("unsupported", "forks are not available on kubernetes");
    if (!KUBERNETES_SHELL_ID.test(spec.shellId))
      throw new SandboxError(
        "unsupported",
        `shell id ${JSON.stringify(spec.shellId)} cannot name Kubernetes objects (lowercase letters, digits and dashes, at most 52)`,
      );
    return this.#locked(spec.shellId, async () => {
      const egressToken =
        spec.egress && this.#bridge ? randomBytes(32).toString("base64url") : null;
      if (egressToken) await this.listenEgress();
      try {
        const secret = await this.#ensureSecret(buildSecret(this.#settings, spec, egressToken));
        const stored = this.#specFromSecret(secret);
        this.#specs.set(spec.shellId, stored);
        const token = secretValue(secret, EGRESS_TOKEN_KEY);
        if (token && stored.egress && this.#bridge)
          this.#bridge.allow(spec.shellId, { token, socketPath: stored.egress.socketPath });
        await this.#ensureVolumesAndPolicy(stored);
        const pod = await this.#startPod(stored);
        return this.#info(stored, pod);
      } catch (error) {
        // A create that failed leaves nothing behind.
        await this.#teardown(spec.shellId).catch(() => undefined);
        throw toSandboxError(error, `creating shell ${spec.shellId}`);
      }
    });
  }

  async exec(
    shellId: string,
    request: SandboxExecRequest,
    options: SandboxExecOptions = {},
  ): Promise<ExecResult> {
    const pod = await this.#runningPod(shellId);
    const execId = newId("x");
    const input =
      typeof request.stdin === "string" ? Buffer.from(request.stdin, "utf8") : request.stdin;
    const argv = execArgv({
      execId,
      cwd: request.cwd,
      stdinBytes: input?.length ?? 0,
      timeoutMs: request.timeoutMs,
      env: request.env,
      command: request.command,
    });
    const started = Date.now();
    const output = { stdout: [] as Buffer[], stderr: [] as Buffer[] };
    let outputBytes = 0;
    let truncated = false;
    let hostKill: KillReason | undefined;
    const kill = (reason: KillReason) => {
      if (hostKill) return;
      hostKill = reason;
      void this.#signal({ shellId, pod }, execId, "ALRM", "").catch(() => undefined);
    };
    const session = await this.#open(
      shellId,
      pod,
      "shell",
      argv,
      { tty: false },
      (stream, chunk) => {
        if (truncated) return;
        const room = request.maxOutputBytes - outputBytes;
        const part = chunk.length > room ? chunk.subarray(0, room) : chunk;
        outputBytes += part.length;
        output[stream].push(Buffer.from(part));
        if (chunk.length > room) {
          truncated = true;
          kill("output_limit");
        }
        return part.length > 0 ? options.onOutput?.(stream, part) : undefined;
      },
    );
    const onAbort = () => {
      const reason = options.signal?.reason as unknown;
      kill(typeof reason === "string" ? (reason as KillReason) : "stopped");
    };
    if (options.signal?.aborted) onAbort();
    else options.signal?.addEventListener("abort", onAbort, { once: true });
    // `timeout` inside the Pod keeps the wall clock; this ends an exec whose Pod stopped answering.
    let cutOff: NodeJS.Timeout | undefined;
    const safety = setTimeout(() => {
      kill("wall_clock");
      cutOff = setTimeout(() => session.close(), EXEC_GRACE_MS);
    }, request.timeoutMs + EXEC_GRACE_MS);
    try {
      if (input && input.length > 0) await session.write(input).catch(() => undefined);
      const end = await session.end;
      const durationMs = Date.now() - started;
      const result = (exitCode: number, killReason: KillReason | undefined): ExecResult => ({
        exitCode,
        stdout: text(output.stdout),
        stderr: text(output.stderr),
        durationMs,
        ...(killReason ? { killReason } : {}),
        ...(truncated ? { truncated } : {}),
      });
      if (end.kind === "exit") {
        let killReason = hostKill;
        if (!killReason && end.exitCode === 137) {
          if (durationMs >= request.timeoutMs) killReason = "wall_clock";
          else if (await this.#diedOfOom({ shellId, pod }, execId)) killReason = "oom";
        }
        return result(end.exitCode, killReason);
      }
      const ending = await this.#endingReason(shellId, pod);
      if (end.kind === "error" && !ending)
        throw new SandboxError("failed", `the exec in shell ${shellId} failed: ${end.message}`);
      return result(137, hostKill ?? ending ?? "stopped");
    } finally {
      clearTimeout(safety);
      clearTimeout(cutOff);
      options.signal?.removeEventListener("abort", onAbort);
    }
  }

  async spawn(
    shellId: string,
    request: SandboxSpawnRequest,
    options: { onOutput: NonNullable<SandboxExecOptions["onOutput"]> },
  ): Promise<SandboxProcess> {
    const pod = await this.#runningPod(shellId);
    const spawnId = newId("p");
    const tty = Boolean(request.pty);
    const env = { ...request.env };
    // A terminal needs a terminal type; the caller's env (or the shell's) may name another.
    if (tty && env.TERM === undefined && this.#specs.get(shellId)?.env.TERM === undefined)
      env.TERM = "xterm-256color";
    const argv = spawnArgv({ spawnId, cwd: request.cwd, tty, env, command: request.command });
    const started = Date.now();
    const session = await this.#open(shellId, pod, "shell", argv, { tty }, options.onOutput);
    if (request.pty) session.resize(request.pty.cols, request.pty.rows);
    const exit = session.end.then(async (end: ExecEnd): Promise<ExecResult> => {
      const base = { stdout: "", stderr: "", durationMs: Date.now() - started };
      if (end.kind === "exit") return { ...base, exitCode: end.exitCode };
      const reason = (await this.#endingReason(shellId, pod)) ?? "stopped";
      return { ...base, exitCode: 137, killReason: reason };
    });
    return {
      write: (data) => session.write(typeof data === "string" ? Buffer.from(data, "utf8") : data),
      closeStdin: () => {
        // Protocol v5 closes stdin alone; before it, a terminal still reads ^D as end of input.
        if (!session.closeStdin() && tty)
          void session.write(Buffer.from("\x04")).catch(() => undefined);
      },
      resize: (cols, rows) => {
        if (tty) session.resize(cols, rows);
      },
      signal: (name) => {
        const key = TERMINAL_SIGNALS[name];
        if (tty && key) void session.write(Buffer.from(key)).catch(() => undefined);
        else
          void this.#signal({ shellId, pod }, spawnId, name.replace(/^SIG/, ""), "-").catch(
            () => undefined,
          );
      },
      exit,
    };
  }

  /** File operations run as small POSIX scripts in the shell's container (`ExecFiles`). */
  readonly files: SandboxFiles = new ExecFiles((id, request, options) =>
    this.exec(id, request, options),
  );

  async stop(shellId: string, reason: KillReason = "stopped"): Promise<SandboxInfo> {
    return this.#locked(shellId, async () => {
      const spec = await this.#spec(shellId);
      await this.#stopPod(shellId, reason);
      return this.#info(spec, null);
    });
  }

  async start(shellId: string): Promise<SandboxInfo> {
    return this.#locked(shellId, async () => {
      const spec = await this.#spec(shellId);
      await this.#ensureVolumesAndPolicy(spec);
      return this.#info(spec, await this.#startPod(spec));
    });
  }

  async restart(shellId: string): Promise<SandboxInfo> {
    return this.#locked(shellId, async () => {
      const spec = await this.#spec(shellId);
      await this.#stopPod(shellId, "stopped");
      await this.#ensureVolumesAndPolicy(spec);
      return this.#info(spec, await this.#startPod(spec));
    });
  }

  /**
   * A tar archive of `/workspace` on the shell's snapshots volume, made by the agent container (of
   * the running Pod, or of a maintenance Pod for a stopped shell). Kubernetes cannot freeze a Pod,
   * so a running shell's processes keep running during the archive.
   */
  async snapshot(shellId: string, name: string): Promise<Snapshot> {
    if (!SNAPSHOT_NAME.test(name))
      throw new SandboxError("unsupported", `snapshot name ${JSON.stringify(name)} is not allowed`);
    return this.#locked(shellId, async () => {
      const spec = await this.#spec(shellId);
      const answer = await this.#withAgent(spec, (target) =>
        this.#script(target, "agent", SNAPSHOT_SCRIPT, [name]),
      );
      const sizeBytes = Number(answer.trim().split("\n").pop());
      const snapshot: Snapshot = {
        name,
        sizeBytes: Number.isFinite(sizeBytes) ? sizeBytes : 0,
        createdAt: new Date().toISOString(),
      };
      await this.#updateSnapshots(shellId, (list) => [
        snapshot,
        ...list.filter((s) => s.name !== name),
      ]);
      return snapshot;
    });
  }

  async listSnapshots(shellId: string): Promise<Snapshot[]> {
    const { list } = await this.#readSnapshots(shellId);
    return list;
  }

  /**
   * Puts a snapshot back as `/workspace`: the shell's Pod is deleted, a maintenance Pod swaps the
   * workspace for the unpacked archive (crash-safe, see `RESTORE_SCRIPT`), and a running shell
   * gets a new Pod on it.
   */
  async restore(shellId: string, name: string): Promise<Snapshot> {
    return this.#locked(shellId, async () => {
      const spec = await this.#spec(shellId);
      const snapshot = (await this.#readSnapshots(shellId)).list.find((s) => s.name === name);
      if (!snapshot)
        throw new SandboxError(
          "snapshot_not_found",
          `shell ${shellId} has no snapshot named ${JSON.stringify(name)}`,
        );
      const wasRunning = (await this.#readPod(namesOf(shellId).pod)) !== null;
      await this.#stopPod(shellId, "stopped");
      await this.#withAgent(spec, (target) =>
        this.#script(target, "agent", RESTORE_SCRIPT, [name]),
      );
      if (wasRunning) await this.#startPod(spec);
      return snapshot;
    });
  }

  /** A new Pod on the newest image of the language's tag (pulled again); `/workspace` stays. */
  async reinstallOs(shellId: string): Promise<SandboxInfo> {
    return this.#locked(shellId, async () => {
      const spec = await this.#spec(shellId);
      const wasRunning = (await this.#readPod(namesOf(shellId).pod)) !== null;
      if (!wasRunning) return this.#info(spec, null);
      await this.#stopPod(shellId, "stopped");
      return this.#info(spec, await this.#startPod(spec));
    });
  }

  /** A new, empty state volume in place of the old one; snapshots stay. */
  async wipeState(shellId: string): Promise<SandboxInfo> {
    return this.#locked(shellId, async () => {
      const spec = await this.#spec(shellId);
      const names = namesOf(shellId);
      const wasRunning = (await this.#readPod(names.pod)) !== null;
      await this.#stopPod(shellId, "stopped");
      await this.#deleteIgnoringMissing(() =>
        this.#core.deleteNamespacedPersistentVolumeClaim({
          name: names.statePvc,
          namespace: this.#settings.namespace,
        }),
      );
      await waitFor(
        this.#watch,
        this.#pvcResource(),
        names.statePvc,
        (pvc) => (pvc ? undefined : true),
        GONE_TIMEOUT_MS,
        () => `volume ${names.statePvc} was not deleted within ${GONE_TIMEOUT_MS / 1000}s`,
      );
      await this.#ensureVolumesAndPolicy(spec);
      return this.#info(spec, wasRunning ? await this.#startPod(spec) : null);
    });
  }

  async destroy(shellId: string): Promise<void> {
    if (!KUBERNETES_SHELL_ID.test(shellId)) return;
    await this.#locked(shellId, () => this.#teardown(shellId));
  }

  /**
   * Every shell with an object of this instance (its Secret, Pod, volumes or policy), so the
   * control plane can adopt what it knows and destroy what it does not. Maintenance Pods that
   * ended, or outlived their deadline, are leftovers of a crash and are deleted here (a running one
   * may be another replica's work).
   */
  async list(): Promise<SandboxInfo[]> {
    const namespace = this.#settings.namespace;
    const labelSelector = selectorOf(this.#settings);
    try {
      const [secrets, pods, pvcs, policies] = await Promise.all([
        this.#core.listNamespacedSecret({ namespace, labelSelector }),
        this.#core.listNamespacedPod({ namespace, labelSelector }),
        this.#core.listNamespacedPersistentVolumeClaim({ namespace, labelSelector }),
        this.#networking.listNamespacedNetworkPolicy({ namespace, labelSelector }),
      ]);
      const ids = new Set<string>();
      const shellPods = new Map<string, V1Pod>();
      for (const item of [...secrets.items, ...pvcs.items, ...policies.items]) {
        const id = item.metadata?.labels?.[SHELL_ID_LABEL];
        if (id) ids.add(id);
      }
      for (const pod of pods.items) {
        const id = pod.metadata?.labels?.[SHELL_ID_LABEL];
        const name = pod.metadata?.name ?? "";
        if (!id) continue;
        if (pod.metadata?.labels?.[COMPONENT_LABEL] === "maintenance") {
          if (!this.#maintenance.has(name) && isLeftover(pod))
            await this.#deleteIgnoringMissing(() =>
              this.#core.deleteNamespacedPod({ name, namespace, gracePeriodSeconds: 0 }),
            );
          continue;
        }
        ids.add(id);
        shellPods.set(id, pod);
      }
      const secretsById = new Map(
        secrets.items.map((s) => [s.metadata?.labels?.[SHELL_ID_LABEL] ?? "", s]),
      );
      return [...ids].sort().map((shellId) => {
        const secret = secretsById.get(shellId);
        const pod = shellPods.get(shellId) ?? null;
        if (secret) return this.#info(this.#specFromSecret(secret), pod);
        return {
          shellId,
          state: pod && podPhaseOf(pod) === "running" ? "running" : "stopped",
          imageVersion: pod ? imageVersionOf(pod) : null,
          isolation: this.#isolation(),
        } satisfies SandboxInfo;
      });
    } catch (error) {
      throw toSandboxError(error, `listing the shells in namespace ${namespace}`);
    }
  }

  /** Closes this process's exec connections (their execs end `host_restart`) and the bridge. */
  async close(): Promise<void> {
    for (const [shellId, sessions] of this.#sessions) {
      this.#ending.set(shellId, "host_restart");
      for (const session of sessions) session.close();
    }
    this.#sessions.clear();
    await this.#bridge?.close();
  }

  // ---- objects ----

  async #ensureSecret(secret: V1Secret): Promise<V1Secret> {
    const namespace = this.#settings.namespace;
    const name = secret.metadata!.name!;
    return this.#createOrAdopt(
      "secret",
      secret.metadata!,
      () => this.#core.createNamespacedSecret({ namespace, body: secret }),
      () => this.#core.readNamespacedSecret({ name, namespace }),
    );
  }

  /** Makes (or finds, after a cut create or wipe) the shell's volumes and NetworkPolicy. */
  async #ensureVolumesAndPolicy(spec: SandboxSpec): Promise<void> {
    const namespace = this.#settings.namespace;
    for (const volume of ["state", "snapshots"] as const) {
      const pvc = buildPvc(this.#settings, spec, volume);
      await this.#createOrAdopt(
        "persistentvolumeclaim",
        pvc.metadata!,
        () => this.#core.createNamespacedPersistentVolumeClaim({ namespace, body: pvc }),
        () =>
          this.#core.readNamespacedPersistentVolumeClaim({ name: pvc.metadata!.name!, namespace }),
      );
    }
    const policy = buildNetworkPolicy(this.#settings, spec);
    await this.#createOrAdopt(
      "networkpolicy",
      policy.metadata!,
      () => this.#networking.createNamespacedNetworkPolicy({ namespace, body: policy }),
      () =>
        this.#networking.readNamespacedNetworkPolicy({ name: policy.metadata!.name!, namespace }),
    );
  }

  /**
   * Creates an object; when its name is taken (409 `AlreadyExists`, e.g. by a create a crash cut
   * short) the existing object is adopted if it is this instance's object of the same shell, and
   * refused otherwise.
   */
  async #createOrAdopt<O extends { metadata?: V1ObjectMeta }>(
    kind: string,
    meta: V1ObjectMeta,
    create: () => Promise<O>,
    read: () => Promise<O>,
  ): Promise<O> {
    try {
      return await create();
    } catch (error) {
      if (!isConflict(error)) throw toSandboxError(error, `creating ${kind} ${meta.name}`);
    }
    const existing = await read().catch((error: unknown) => {
      throw toSandboxError(error, `reading ${kind} ${meta.name}`);
    });
    const labels = existing.metadata?.labels ?? {};
    const ours =
      Object.entries(MANAGED_BY).every(([key, value]) => labels[key] === value) &&
      labels[INSTANCE_LABEL] === meta.labels?.[INSTANCE_LABEL] &&
      labels[SHELL_ID_LABEL] === meta.labels?.[SHELL_ID_LABEL];
    if (!ours)
      throw new SandboxError(
        "failed",
        `${kind} ${meta.name} already exists in namespace ${this.#settings.namespace} and is not this control plane's object of that shell`,
      );
    return existing;
  }

  /** Creates the shell's Pod (or adopts the one a cut call left) and waits until it runs. */
  async #startPod(spec: SandboxSpec): Promise<V1Pod> {
    const namespace = this.#settings.namespace;
    const body = buildPod(this.#settings, spec);
    const name = body.metadata!.name!;
    this.#ending.delete(spec.shellId);
    const existing = await this.#createOrAdopt(
      "pod",
      body.metadata!,
      () => this.#core.createNamespacedPod({ namespace, body }),
      () => this.#core.readNamespacedPod({ name, namespace }),
    );
    if (existing.metadata?.deletionTimestamp || podPhaseOf(existing) === "ended") {
      // A Pod that ended (or is going) cannot run again: make a new one.
      await this.#stopPod(spec.shellId, "stopped");
      this.#ending.delete(spec.shellId);
      await this.#core.createNamespacedPod({ namespace, body }).catch((error: unknown) => {
        throw toSandboxError(error, `creating pod ${name}`);
      });
    }
    return this.#waitRunning(name, "shell");
  }

  #waitRunning(name: string, container: "shell" | "agent"): Promise<V1Pod> {
    let last: string | null = null;
    return waitFor(
      this.#watch,
      this.#podResource(),
      name,
      (pod) => {
        if (!pod) throw new SandboxError("failed", `pod ${name} was deleted before it ran`);
        if (podPhaseOf(pod, container) === "running") return pod;
        const problem = podProblemOf(pod);
        if (problem?.fatal) throw new SandboxError("failed", `pod ${name}: ${problem.message}`);
        last = problem?.message ?? last;
        return undefined;
      },
      this.#startTimeoutMs,
      () =>
        `pod ${name} did not run within ${Math.round(this.#startTimeoutMs / 1000)}s${last ? `: ${last}` : ""}`,
    );
  }

  /** Deletes the shell's Pod (its processes end with `reason`) and waits until it is gone. */
  async #stopPod(shellId: string, reason: KillReason): Promise<void> {
    const name = namesOf(shellId).pod;
    this.#ending.set(shellId, reason);
    await this.#deletePodAndWait(name);
  }

  async #deletePodAndWait(name: string): Promise<void> {
    const namespace = this.#settings.namespace;
    await this.#deleteIgnoringMissing(() =>
      this.#core.deleteNamespacedPod({ name, namespace, gracePeriodSeconds: 0 }),
    );
    await waitFor(
      this.#watch,
      this.#podResource(),
      name,
      (pod) => (pod ? undefined : true),
      GONE_TIMEOUT_MS,
      () => `pod ${name} was not gone within ${GONE_TIMEOUT_MS / 1000}s`,
    );
  }

  /**
   * Deletes every object of a shell: those its labels find (this instance's objects of that shell,
   * whatever their names), Pods first. One already gone (404) counts as deleted; an object of the
   * same name that is not this instance's (a create refused it) is never touched.
   */
  async #teardown(shellId: string): Promise<void> {
    const namespace = this.#settings.namespace;
    const labelSelector = selectorOf(this.#settings, shellId);
    this.#ending.set(shellId, "deleted");
    this.#bridge?.forget(shellId);
    this.#specs.delete(shellId);
    const names = (list: { items: { metadata?: V1ObjectMeta }[] }) =>
      list.items.map((item) => item.metadata?.name).filter((name): name is string => !!name);
    let found: [string[], string[], string[], string[]];
    try {
      const lists = await Promise.all([
        this.#core.listNamespacedPod({ namespace, labelSelector }),
        this.#networking.listNamespacedNetworkPolicy({ namespace, labelSelector }),
        this.#core.listNamespacedSecret({ namespace, labelSelector }),
        this.#core.listNamespacedPersistentVolumeClaim({ namespace, labelSelector }),
      ]);
      found = [names(lists[0]), names(lists[1]), names(lists[2]), names(lists[3])];
    } catch (error) {
      throw toSandboxError(error, `listing the objects of shell ${shellId}`);
    }
    const [pods, policies, secrets, pvcs] = found;
    for (const name of pods)
      await this.#deleteIgnoringMissing(() =>
        this.#core.deleteNamespacedPod({ name, namespace, gracePeriodSeconds: 0 }),
      );
    for (const name of policies)
      await this.#deleteIgnoringMissing(() =>
        this.#networking.deleteNamespacedNetworkPolicy({ name, namespace }),
      );
    for (const name of secrets)
      await this.#deleteIgnoringMissing(() =>
        this.#core.deleteNamespacedSecret({ name, namespace }),
      );
    // A PVC goes once no Pod uses it (the API server holds it until then).
    for (const name of pvcs)
      await this.#deleteIgnoringMissing(() =>
        this.#core.deleteNamespacedPersistentVolumeClaim({ name, namespace }),
      );
  }

  async #deleteIgnoringMissing(deletion: () => Promise<unknown>): Promise<void> {
    try {
      await deletion();
    } catch (error) {
      if (!isNotFound(error)) throw toSandboxError(error, "deleting an object");
    }
  }

  async #readPod(name: string): Promise<V1Pod | null> {
    try {
      return await this.#core.readNamespacedPod({ name, namespace: this.#settings.namespace });
    } catch (error) {
      if (isNotFound(error)) return null;
      throw toSandboxError(error, `reading pod ${name}`);
    }
  }

  /** The shell's Pod's name when it runs; `not_found` for an unknown shell, else `not_running`. */
  async #runningPod(shellId: string): Promise<string> {
    if (!KUBERNETES_SHELL_ID.test(shellId))
      throw new SandboxError("not_found", `no shell ${shellId}`);
    const name = namesOf(shellId).pod;
    const pod = await this.#readPod(name);
    if (pod && podPhaseOf(pod) === "running") return name;
    await this.#spec(shellId);
    throw new SandboxError("not_running", `shell ${shellId} is stopped`);
  }

  #podResource(): WatchedResource<V1Pod> {
    const namespace = this.#settings.namespace;
    return {
      kind: "pod",
      path: `/api/v1/namespaces/${namespace}/pods`,
      list: (fieldSelector) => this.#core.listNamespacedPod({ namespace, fieldSelector }),
    };
  }

  #pvcResource(): WatchedResource<V1PersistentVolumeClaim> {
    const namespace = this.#settings.namespace;
    return {
      kind: "persistentvolumeclaim",
      path: `/api/v1/namespaces/${namespace}/persistentvolumeclaims`,
      list: (fieldSelector) =>
        this.#core.listNamespacedPersistentVolumeClaim({ namespace, fieldSelector }),
    };
  }

  // ---- specs and egress ----

  async #spec(shellId: string): Promise<SandboxSpec> {
    const known = this.#specs.get(shellId);
    if (known) return known;
    if (!KUBERNETES_SHELL_ID.test(shellId))
      throw new SandboxError("not_found", `no shell ${shellId}`);
    let secret: V1Secret;
    try {
      secret = await this.#core.readNamespacedSecret({
        name: namesOf(shellId).secret,
        namespace: this.#settings.namespace,
      });
    } catch (error) {
      if (isNotFound(error)) throw new SandboxError("not_found", `no kubernetes shell ${shellId}`);
      throw toSandboxError(error, `reading shell ${shellId}`);
    }
    const spec = this.#specFromSecret(secret);
    this.#specs.set(shellId, spec);
    return spec;
  }

  #specFromSecret(secret: V1Secret): SandboxSpec {
    const raw = secretValue(secret, SPEC_KEY);
    if (!raw) throw new SandboxError("failed", `secret ${secret.metadata?.name} holds no spec`);
    const { envNames, ...rest } = JSON.parse(raw) as StoredSpec;
    const env: Record<string, string> = {};
    for (const name of envNames) env[name] = secretValue(secret, `env.${name}`) ?? "";
    return { ...rest, env };
  }

  /** A shell's egress route, from its Secret (the bridge asks after a control-plane restart). */
  async #egressRoute(shellId: string): Promise<EgressRoute | null> {
    if (!KUBERNETES_SHELL_ID.test(shellId)) return null;
    const secret = await this.#core
      .readNamespacedSecret({ name: namesOf(shellId).secret, namespace: this.#settings.namespace })
      .catch(() => null);
    if (!secret) return null;
    const token = secretValue(secret, EGRESS_TOKEN_KEY);
    const spec = this.#specFromSecret(secret);
    return token && spec.egress ? { token, socketPath: spec.egress.socketPath } : null;
  }

  // ---- execs ----

  async #open(
    shellId: string,
    pod: string,
    container: "shell" | "agent",
    argv: string[],
    io: { tty: boolean },
    onOutput: NonNullable<SandboxExecOptions["onOutput"]>,
  ): Promise<ExecSession> {
    const path = execPath(this.#settings.namespace, pod, container, argv, {
      stdin: true,
      tty: io.tty,
    });
    let session: ExecSession;
    try {
      session = await ExecSession.open(this.#kubeConfig, path, onOutput);
    } catch (error) {
      const message = (error as { message?: string } | null)?.message ?? String(error);
      if (/\b404\b/.test(message))
        throw new SandboxError("not_running", `shell ${shellId} is stopped`);
      throw new SandboxError(
        "failed",
        `opening an exec in pod ${pod} failed: ${message}`,
        {},
        { cause: error },
      );
    }
    let open = this.#sessions.get(shellId);
    if (!open) this.#sessions.set(shellId, (open = new Set()));
    open.add(session);
    void session.end.then(() => open.delete(session));
    return session;
  }

  /** Runs a fixed script in a Pod's container and returns its stdout; non-zero exit is `failed`. */
  async #script(
    { shellId, pod }: PodTarget,
    container: "shell" | "agent",
    script: string,
    args: string[],
  ): Promise<string> {
    const stdout: Buffer[] = [];
    const stderr: Buffer[] = [];
    const session = await this.#open(
      shellId,
      pod,
      container,
      ["/bin/sh", "-c", script, "sh", ...args],
      { tty: false },
      (stream, chunk) => {
        (stream === "stdout" ? stdout : stderr).push(Buffer.from(chunk));
      },
    );
    const timer = setTimeout(() => session.close(), STATE_SCRIPT_TIMEOUT_MS);
    try {
      const end = await session.end;
      if (end.kind === "exit" && end.exitCode === 0) return text(stdout);
      const why =
        end.kind === "exit"
          ? `exit ${end.exitCode}`
          : end.kind === "error"
            ? end.message
            : "the connection closed";
      throw new SandboxError(
        "failed",
        `a state operation in pod ${pod} failed (${why}): ${text(stderr).trim()}`,
      );
    } finally {
      clearTimeout(timer);
    }
  }

  /** Sends a signal to an exec or spawn in the shell container (see `SIGNAL_SCRIPT`). */
  async #signal(target: PodTarget, id: string, signal: string, group: "" | "-"): Promise<void> {
    await this.#script(target, "shell", SIGNAL_SCRIPT, [id, signal, group]);
  }

  async #diedOfOom(target: PodTarget, execId: string): Promise<boolean> {
    const answer = await this.#script(target, "shell", OOM_CHECK_SCRIPT, [execId]).catch(() => "");
    return answer.trim() === "oom";
  }

  /** Why a shell's execs ended when their connection did: a stop in progress, or the Pod's status. */
  async #endingReason(shellId: string, pod: string): Promise<KillReason | undefined> {
    const ending = this.#ending.get(shellId);
    if (ending) return ending;
    const status = await this.#readPod(pod).catch(() => null);
    return status ? killReasonOf(status) : "stopped";
  }

  // ---- state work ----

  /**
   * Runs `work` with a Pod whose agent container sees the shell's volumes: the shell's own Pod when
   * it runs, else a maintenance Pod made for the work and deleted after it.
   */
  async #withAgent<T>(spec: SandboxSpec, work: (target: PodTarget) => Promise<T>): Promise<T> {
    const names = namesOf(spec.shellId);
    const running = await this.#readPod(names.pod);
    if (running && podPhaseOf(running) === "running")
      return work({ shellId: spec.shellId, pod: names.pod });
    const namespace = this.#settings.namespace;
    const body = buildPod(this.#settings, spec, "maintenance", MAINTENANCE_DEADLINE_SECONDS);
    this.#maintenance.add(names.maintenancePod);
    try {
      await this.#deletePodAndWait(names.maintenancePod);
      await this.#core.createNamespacedPod({ namespace, body }).catch((error: unknown) => {
        throw toSandboxError(error, `creating pod ${names.maintenancePod}`);
      });
      await this.#waitRunning(names.maintenancePod, "agent");
      return await work({ shellId: spec.shellId, pod: names.maintenancePod });
    } finally {
      await this.#deletePodAndWait(names.maintenancePod).catch(() => undefined);
      this.#maintenance.delete(names.maintenancePod);
    }
  }

  async #readSnapshots(
    shellId: string,
  ): Promise<{ pvc: V1PersistentVolumeClaim; list: Snapshot[] }> {
    if (!KUBERNETES_SHELL_ID.test(shellId))
      throw new SandboxError("not_found", `no shell ${shellId}`);
    let pvc: V1PersistentVolumeClaim;
    try {
      pvc = await this.#core.readNamespacedPersistentVolumeClaim({
        name: namesOf(shellId).snapshotsPvc,
        namespace: this.#settings.namespace,
      });
    } catch (error) {
      if (isNotFound(error)) throw new SandboxError("not_found", `no kubernetes shell ${shellId}`);
      throw toSandboxError(error, `reading the snapshots of ${shellId}`);
    }
    const raw = pvc.metadata?.annotations?.[SNAPSHOTS_ANNOTATION];
    const list = raw ? (JSON.parse(raw) as Snapshot[]) : [];
    return { pvc, list };
  }

  /**
   * Rewrites the snapshot list on the snapshots PVC. The update carries the resource version it
   * read, so a concurrent writer makes it fail with 409 Conflict; it then reads and tries again.
   */
  async #updateSnapshots(shellId: string, change: (list: Snapshot[]) => Snapshot[]): Promise<void> {
    for (let attempt = 1; ; attempt++) {
      const { pvc, list } = await this.#readSnapshots(shellId);
      const next = change(list);
      const body: V1PersistentVolumeClaim = {
        ...pvc,
        metadata: {
          ...pvc.metadata,
          annotations: {
            ...pvc.metadata?.annotations,
            [SNAPSHOTS_ANNOTATION]: JSON.stringify(next),
          },
        },
      };
      try {
        await this.#core.replaceNamespacedPersistentVolumeClaim({
          name: pvc.metadata!.name!,
          namespace: this.#settings.namespace,
          body,
        });
        const dropped = list.filter((s) => !next.some((n) => n.name === s.name));
        for (const snapshot of dropped)
          await this.#withAgent(await this.#spec(shellId), (target) =>
            this.#script(target, "agent", DROP_SNAPSHOT_SCRIPT, [snapshot.name]),
          ).catch(() => undefined);
        return;
      } catch (error) {
        if (!isConflict(error) || attempt >= CONFLICT_TRIES)
          throw toSandboxError(error, `recording the snapshots of ${shellId}`);
      }
    }
  }

  // ---- helpers ----

  #isolation(): string {
    const { runtimeClassName } = this.#settings;
    return `kubernetes (${runtimeClassName ? `RuntimeClass ${runtimeClassName}` : "default runtime"})`;
  }

  #info(spec: SandboxSpec, pod: V1Pod | null): SandboxInfo {
    const running = pod !== null && podPhaseOf(pod) === "running";
    return {
      shellId: spec.shellId,
      state: running ? "running" : "stopped",
      imageVersion: (pod && imageVersionOf(pod)) ?? this.#settings.images[spec.language],
      isolation: this.#isolation(),
    };
  }

  #locked<T>(shellId: string, work: () => Promise<T>): Promise<T> {
    const previous = this.#locks.get(shellId) ?? Promise.resolve();
    const next = previous.catch(() => undefined).then(work);
    const settled = next.catch(() => undefined);
    this.#locks.set(shellId, settled);
    void settled.then(() => {
      if (this.#locks.get(shellId) === settled) this.#locks.delete(shellId);
    });
    return next;
  }
}

/** A maintenance Pod nobody works in any more: it ended, or it is older than its deadline. */
function isLeftover(pod: V1Pod): boolean {
  if (podPhaseOf(pod, "agent") === "ended") return true;
  const created = pod.metadata?.creationTimestamp;
  const age = created ? Date.now() - new Date(created).getTime() : 0;
  return age > (MAINTENANCE_DEADLINE_SECONDS + 60) * 1000;
}

/** A Pod the backend runs a command in, and the shell it belongs to. */
interface PodTarget {
  shellId: string;
  pod: string;
}

/** A Secret's value by key (`data` is base64; `stringData` only on objects this process built). */
function secretValue(secret: V1Secret, key: string): string | undefined {
  const encoded = secret.data?.[key];
  if (encoded !== undefined) return Buffer.from(encoded, "base64").toString("utf8");
  return secret.stringData?.[key];
}
