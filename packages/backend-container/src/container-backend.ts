import { randomBytes } from "node:crypto";
import { readlinkSync } from "node:fs";
import { basename, dirname, isAbsolute } from "node:path";
import type { Duplex } from "node:stream";
import { mkdir, readdir, rename, rm, stat, symlink } from "node:fs/promises";
import type {
  ExecResult,
  KillReason,
  Language,
  PauseInfo,
  RuntimeAvailability,
  Snapshot,
} from "@shells/contract";
import {
  ExecFiles,
  SANDBOX_EGRESS_ENV,
  SANDBOX_EGRESS_PORT,
  SandboxError,
  SharedPreparations,
  type SandboxBackend,
  type SandboxExecOptions,
  type SandboxExecRequest,
  type SandboxForkCapture,
  type SandboxImage,
  type SandboxInfo,
  type SandboxProcess,
  type SandboxProgress,
  type SandboxSpawnRequest,
  type SandboxSpec,
  type SandboxUsage,
} from "@shells/sandbox";
import {
  detectCgroups,
  type ExecCgroup,
  ShellCgroup,
  shellCgroupName,
  type CgroupHost,
} from "./internal/cgroups.js";
import {
  allocatedBytes,
  copyDisk,
  createDisk,
  loopBackings,
  repairDiskIfNeeded,
  waitForLoopDetached,
} from "./internal/disk.js";
import {
  dismissReadyHelper,
  runExec,
  ShellNotRunningError,
  startReadyHelper,
  type ExecTarget,
  type InflightExec,
  type ReadyHelper,
} from "./internal/exec.js";
import { launchHolder } from "./internal/holder.js";
import {
  layerDisk,
  linkTo,
  makeLayer,
  MAX_LAYER_DEPTH,
  removePendingLayers,
  sweepLayers,
  type LayerRef,
} from "./internal/layers.js";
import { connectInShell, PortRefusedError } from "./internal/port.js";
import { startProcess } from "./internal/spawn.js";
import { checkContainerHost, type ContainerHostReport } from "./internal/host-check.js";
import { DiskPool } from "./internal/disk-pool.js";
import { parsePoolKind, poolKindOf, SandboxPool, type PoolKind } from "./internal/sandbox-pool.js";
import {
  customImageReady,
  ensureCustomImage,
  ensureImage,
  findImage,
  newestImage,
  presetVersions,
  pruneCustomImages,
  pruneToolchainDownloads,
  type BuildImageOptions,
  type ImageBuildProgress,
  type ImageInfo,
} from "./internal/images.js";
import { ensureHelper } from "./internal/native.js";
import { favorDynmods, type DynmodsState } from "./internal/cgroup-dynmods.js";
import { isAlive, run, sleep } from "./internal/proc.js";
import {
  claimUidSlot,
  listShellIds,
  liveHolder,
  readJson,
  releaseUidSlot,
  releaseUidSlotsOwnedBy,
  uidBaseOf,
  writeJson,
  type HolderRecord,
  type ShellIntent,
  type ShellRecord,
} from "./internal/state.js";

/** A pino-like logger; every method takes an object and/or a message. */
export interface ContainerLogger {
  info(obj: unknown, msg?: string): void;
  warn(obj: unknown, msg?: string): void;
  error(obj: unknown, msg?: string): void;
}

/** Options of the container backend. */
export interface ContainerBackendOptions {
  /** Where shells, images and the compiled helper live, e.g. `<dataDir>/container`. Root-only. */
  stateDir: string;
  /** Base images directory (default `<stateDir>/images`); several state dirs may share one. */
  imagesDir?: string;
  /**
   * Host-wide registry of claimed uid ranges (default `/var/lib/shells/uid-slots`). Shared by every
   * state dir on the host, so no two shells ever map root to the same host uids.
   */
  uidRegistryDir?: string;
  /** Name of the cgroup (in each hierarchy) that holds one cgroup per shell (default `shells`). */
  cgroupParent?: string;
  /** Debian suite and mirror for image builds (defaults: host codename, mmdebstrap's mirror). */
  debianSuite?: string;
  debianMirror?: string;
  /**
   * What root inside a shell may do beyond owning the shell's files. `none` (default): no
   * capabilities at all, the host sees CapEff 0 on every sandbox process. `package-manager`:
   * Docker's default set (chown to other users, setuid), which dpkg needs for packages that ship
   * files owned by other users. Either way the capabilities are confined to the shell's user
   * namespace, whose root is an unprivileged host uid.
   */
  rootCapabilities?: "none" | "package-manager";
  logger?: ContainerLogger;
  /**
   * Formatted shell disks to keep ready under `<stateDir>/warm-disks` (default 0: none), so a
   * create of `warmDiskMb` takes one instead of running mkfs; refilled in the background after
   * each claim and by `warm()`. Each costs its allocated blocks on the host's disk (a few MiB of a
   * sparse file) and no memory.
   */
  warmDisks?: number;
  /**
   * Size of the pools' disks (warm disks and pooled sandboxes), MiB (default 1024, the server's
   * default `diskMb`).
   */
  warmDiskMb?: number;
  /**
   * Started sandboxes to keep ready per pool kind (default none), claimed by creates of that
   * language with the pool's disk size, no custom image and no fork. A language's own kind
   * (`bash`) serves shells without an egress proxy (network `sealed` or `localhost`); its
   * `:internet` kind (`bash:internet`) is started with the egress forwarder and its network walls,
   * and serves shells with a proxy (`internet`, or service bindings). Each holds its keeper and
   * init and costs memory (see `availability()`). Refilled in the background after each claim and
   * by `warm()`, once `recover()` has run.
   */
  pool?: Partial<Record<PoolKind, number>>;
  /** How long a shell's ready exec helper waits unused before it is dismissed (default 5 min). */
  readyHelperIdleMs?: number;
  /** Image build progress (a first create of a language builds its image, about a minute). */
  onProgress?: (event: ImageBuildProgress) => void;
}

/** Environment every exec starts from; the shell's env and the exec's env override it. */
const BASE_ENV: Record<string, string> = {
  PATH: "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
  HOME: "/root",
  LANG: "C.UTF-8",
};

/**
 * Shells given an egress proxy: the port on the shell's loopback where the egress forwarder
 * (native/egress.c) listens, relaying each connection to the shell's egress proxy; `internet`
 * shells' execs get `SANDBOX_EGRESS_ENV`, which points ordinary clients at it.
 */
const EGRESS_PORT = SANDBOX_EGRESS_PORT;

/** Longest unix socket path the kernel takes (sun_path, with its terminating zero). */
const UNIX_PATH_MAX = 108;

/** How often the pids watch looks at shells with exec cgroups (see #checkPids). */
const PIDS_WATCH_MS = 200;
/** How long no exec may have begun or ended before ready helpers are started (see #prepareReady). */
const READY_QUIET_MS = 100;
/** How long a shell's ready helper waits unused before it is dismissed (see #startReady). */
const READY_IDLE_MS = 5 * 60_000;

/** One shell's pids watch: refused forks counted so far, and the execs in flight by cgroup name. */
interface PidsWatch {
  shell: ShellCgroup;
  refused: number;
  /** Execs in flight by cgroup name; null while the exec is being started. */
  live: Map<string, InflightExec | null>;
  /** Exec cgroups being made and not yet in `live`: while any is, the sweep removes nothing. */
  creating: number;
  /** Exec cgroups the watch has killed in: never handed to another exec (a kill may still run). */
  killed: Set<string>;
}

/** How this backend pauses: the cgroup freezer, with the processes' memory kept resident. */
const PAUSE_BY_FREEZER: PauseInfo = {
  method: "freeze",
  memoryReleased: false,
  reason:
    "processes are frozen in place by the cgroup freezer and keep their memory; the container backend does not checkpoint processes to disk",
};

function pausedError(shellId: string): SandboxError {
  return new SandboxError("paused", `shell ${shellId} is paused; resume it first`);
}

/** Shell ids name directories, cgroups and mount paths: keep them to a safe alphabet. */
const SHELL_ID = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/;
/**
 * Ids of pooled sandboxes (boxes), which name their dir under `boxes/`, their cgroups and their
 * uid registry entry for life: a claimed box keeps them, and the shell's id is a symlink
 * `shells/<shellId>` → `../boxes/<boxId>`. The leading `_` is outside SHELL_ID's alphabet, so a
 * box id is never a shell id.
 */
const BOX_ID = /^_box-[0-9a-f]{12}$/;
/**
 * Limits a pooled sandbox starts with: small, because it holds them (and the capacity gate counts
 * them) until claimed; its claim writes the shell's own. Memory and pids a little above the
 * keeper's and init's needs; one CPU, so the start is not throttled.
 */
const POOL_LIMITS = { memoryMb: 64, pids: 32, cpu: 1 } as const;
const SNAPSHOT_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/;
const CAPTURE_ID = /^fork-[0-9a-f]{16}$/;
/** Age past which a capture nobody released is a crash's leftover. */
const CAPTURE_MAX_AGE_MS = 60 * 60 * 1000;

/** What `<stateDir>/forks/<id>/capture.json` says of a capture. */
interface CaptureMeta {
  captureId: string;
  parent: string;
  language: SandboxSpec["language"];
  diskMb: number;
  imageVersion: string | null;
  /** Host uid of root in the captured files. */
  diskUidBase: number;
  /**
   * `layered`: the new shells stack on `layers` with empty disks of their own; `copy`: each copies
   * the capture's `disk.img` (the parent's chain was as deep as allowed) and stacks on `layers`.
   */
  mode?: "layered" | "copy";
  /** The layers the new shells stack on, top first (the parent's state, shared read-only). */
  layers?: LayerRef[];
  createdAt: string;
}

interface SnapshotMeta extends Snapshot {
  seq: number;
  /**
   * The layers the shell stacked on when the snapshot was taken: the archive is the upper only,
   * so the snapshot is the archive over these (they are kept while the snapshot is).
   */
  layers?: LayerRef[];
  /** Host uid of root in the archived files (the shell's disk's at the time). */
  diskUidBase?: number;
  /** File name of the archive in the snapshots dir (`<name>.tar` when left out, as before). */
  archive?: string;
}

/** The archive file of a snapshot. */
function archiveOf(meta: SnapshotMeta): string {
  return meta.archive ?? `${meta.name}.tar`;
}

/**
 * Files a step writes beside a shell's state and renames into place when complete (a restored or
 * wiped disk, a JSON record being replaced); after a crash, what is left of them is garbage.
 */
const TEMPORARY_FILE = /^disk\.(restore|wipe|stack)\.img$|\.tmp$/;

/**
 * The `container` runtime class: each shell is a set of Linux namespaces (user, mount, pid, net,
 * ipc, uts, cgroup) held open by a tiny keeper/init pair, with cgroup limits, an overlay root
 * filesystem over a per-language Debian base image, and a size-limited disk for its state.
 *
 * Root inside maps to an unprivileged host uid range unique to the shell; processes run with
 * trimmed capabilities, no_new_privs and a seccomp filter (native/confine.c). An exec joins the
 * shell's namespaces and cgroups, so background processes outlive the exec that started them.
 * Shells survive the control plane: everything needed to re-adopt them is under `stateDir`.
 * Needs root; `checkContainerHost()` says what else.
 */
export class ContainerBackend implements SandboxBackend {
  readonly name = "container";
  readonly networkModes = ["sealed", "localhost", "internet"] as const;
  /** The egress forwarder's listeners on an `internet` shell's loopback (native/egress.c). */
  readonly reservedPorts = { internet: [EGRESS_PORT, EGRESS_PORT + 1] } as const;
  readonly #stateDir: string;
  readonly #imagesDir: string;
  readonly #registryDir: string;
  readonly #cgroupParent: string;
  readonly #options: ContainerBackendOptions;
  #cgroupHost: CgroupHost | null = null;
  #hostReport: { at: number; report: ContainerHostReport } | null = null;
  readonly #locks = new Map<string, Promise<unknown>>();
  readonly #inflight = new Map<string, Set<InflightExec>>();
  readonly #holders = new Map<string, HolderRecord>();
  readonly #pidsWatch = new Map<string, PidsWatch>();
  /**
   * Per shell, an exec cgroup the last exec left empty, handed to the next exec: making and
   * removing a cgroup in every hierarchy is most of an exec's own cost on cgroup v1.
   */
  readonly #idleGroups = new Map<string, ExecCgroup>();
  /**
   * By exec cgroup name, the ready helper waiting in an idle exec cgroup (see ReadyHelper): the
   * exec that takes the group takes it, and starts no process of its own.
   */
  readonly #readyHelpers = new Map<string, ReadyHelper>();
  /** Idle exec cgroups waiting for a ready helper until the host is quiet, by shell id. */
  readonly #readyWanted = new Map<string, ExecCgroup>();
  #readyTimer: NodeJS.Timeout | null = null;
  /** When an exec last began or ended (see #prepareReady). */
  #lastExecAt = 0;
  #closing = false;
  #dynmods: DynmodsState | null = null;
  readonly #diskPool: DiskPool;
  readonly #sandboxPool: SandboxPool;
  /** Boxes this backend started for its pool: `recover` leaves them alone. */
  readonly #ownBoxes = new Set<string>();
  /** Claimed boxes by shell id (the symlinks' targets, as read). */
  readonly #aliases = new Map<string, string>();
  /** Creates starting a sandbox of their own now (the pool's refill waits for them). */
  #creating = 0;
  /** Image builds under way for `prepareLanguage`, one per language. */
  readonly #imageBuilds = new SharedPreparations<string>();
  #pidsTimer: NodeJS.Timeout | null = null;
  #pidsChecking = false;

  /**
   * File operations as fixed scripts run by `exec` inside the shell, as its root, from `/`: every
   * path is resolved by the shell's own mount namespace, whose root is the shell's overlay (`..`
   * stops at it, symlinks lead only to places inside it), so nothing of the host is reachable.
   * They work on a paused shell too where this host can run them beside its frozen processes.
   */
  readonly files = new ExecFiles((id, request, options) =>
    this.#exec(id, request, options ?? {}, "beside"),
  );

  constructor(options: ContainerBackendOptions) {
    this.#options = options;
    this.#stateDir = options.stateDir.replace(/\/+$/, "");
    this.#imagesDir = options.imagesDir ?? `${this.#stateDir}/images`;
    this.#registryDir = options.uidRegistryDir ?? "/var/lib/shells/uid-slots";
    this.#cgroupParent = options.cgroupParent ?? "shells";
    this.#diskPool = new DiskPool(
      `${this.#stateDir}/warm-disks`,
      options.warmDisks ?? 0,
      options.warmDiskMb ?? 1024,
      (error) => this.#log("warn", { err: error }, "refilling the warm disk pool failed"),
    );
    this.#sandboxPool = new SandboxPool(
      new Map(
        Object.entries(options.pool ?? {}).filter(([, count]) => (count ?? 0) > 0) as [
          PoolKind,
          number,
        ][],
      ),
      options.warmDiskMb ?? 1024,
      {
        start: (kind) => this.#startPooled(kind),
        busy: () => this.#creating > 0,
        onError: (error) =>
          this.#log("warn", { err: error }, "refilling the warm sandbox pool failed"),
      },
    );
  }

  /**
   * Fills the warm disk pool (`warmDisks`) and the sandbox pool (`pool`) in the background;
   * settles once both are full (or a refill failed, which is logged). A no-op without pools. Call
   * it after `recover()`, which discards the pooled sandboxes it does not know.
   */
  async warm(): Promise<void> {
    this.#diskPool.refill();
    this.#sandboxPool.refill();
    await this.#diskPool.settled();
    await this.#sandboxPool.settled();
  }

  /**
   * Memory the sandbox pool holds at its target, MiB: each pooled sandbox's limit until it is
   * claimed (then its shell's limit counts, as any shell's). The capacity gate adds it.
   */
  pooledMemoryMb(): number {
    return this.#sandboxPool.report().reduce((sum, p) => sum + p.target, 0) * POOL_LIMITS.memoryMb;
  }

  async availability(): Promise<RuntimeAvailability[]> {
    const report = await this.#hostCheck();
    return [
      {
        runtime: "container",
        available: report.available,
        backend: this.name,
        reason: report.reason,
        ...(this.#diskPool.target > 0 ? { warmPool: await this.#diskPool.report() } : {}),
        ...(this.#sandboxPool.enabled ? { sandboxPool: await this.#sandboxPoolReport() } : {}),
        // What each language's shells get: the toolchain version in its newest base image.
        ...(report.available ? { presets: await presetVersions(this.#imagesDir) } : {}),
      },
    ];
  }

  /** Custom images (`SandboxSpec.image`) are built with the base image builder and cached. */
  readonly customImages = true;

  /**
   * Whether the language's base image (or the custom image `image`) is built: a create without
   * it builds it first.
   */
  async languageReady(language: Language, image?: SandboxImage): Promise<boolean> {
    if (image) return customImageReady(this.#imagesDir, image.id);
    return (await newestImage(this.#imagesDir, language)) !== null;
  }

  /**
   * Builds the language's base image (or the custom image `image`) when there is none, reporting
   * mmdebstrap's steps with a rough percentage. Concurrent calls share one build (across
   * processes too, by the build lock).
   */
  async prepareLanguage(
    language: Language,
    onProgress: (progress: SandboxProgress) => void,
    image?: SandboxImage,
  ): Promise<void> {
    if (await this.languageReady(language, image)) return;
    await this.#imageBuilds.run(image?.id ?? language, onProgress, async (report) => {
      try {
        await this.#ensureImage(language, image, {
          ...this.#buildOptions(),
          onProgress: (event) => {
            this.#options.onProgress?.(event);
            report({
              message: event.message,
              ...(event.percent === undefined ? {} : { percent: event.percent }),
            });
          },
        });
      } catch (error) {
        throw new SandboxError(
          "unavailable",
          `cannot prepare the ${language} image: ${(error as Error).message}`,
          {},
          { cause: error },
        );
      }
    });
  }
  /** The base image of `language`, or the custom image `image` on it, built when missing. */
  #ensureImage(
    language: Language,
    image: SandboxImage | undefined,
    options: BuildImageOptions,
  ): Promise<ImageInfo> {
    return image
      ? ensureCustomImage(this.#imagesDir, language, image, options)
      : ensureImage(this.#imagesDir, language, options);
  }

  /**
   * Removes the custom images outside `keep` that no shell of this host runs on (whatever its
   * phase: a stopped shell's overlay still needs its image) and nothing used for `unusedForMs`.
   */
  async pruneImages(keep: ReadonlySet<string>, unusedForMs: number): Promise<string[]> {
    const inUse = new Set(keep);
    for (const shellId of await listShellIds(`${this.#stateDir}/shells`)) {
      const record = await readJson<ShellRecord>(`${this.#shellDir(shellId)}/shell.json`);
      if (record?.imageVersion) inUse.add(record.imageVersion);
      if (record?.intent?.kind === "reinstall") inUse.add(record.intent.imageVersion);
    }
    const removed = await pruneCustomImages(this.#imagesDir, inUse, unusedForMs);
    const downloads = await pruneToolchainDownloads(this.#imagesDir, unusedForMs);
    if (downloads.length > 0)
      this.#log("info", { removed: downloads }, "removed toolchain downloads no image uses");
    return removed;
  }

  async create(spec: SandboxSpec): Promise<SandboxInfo> {
    if (!SHELL_ID.test(spec.shellId)) {
      throw new SandboxError(
        "unsupported",
        `shell id ${JSON.stringify(spec.shellId)} has characters the container backend cannot use`,
      );
    }
    if (spec.runtime !== "container") {
      throw new SandboxError(
        "unsupported",
        `the container backend does not run the ${spec.runtime} runtime class`,
      );
    }
    if (spec.network === "internet" && !spec.egress?.socketPath) {
      throw new SandboxError(
        "unsupported",
        "network mode `internet` needs an egress proxy socket, and none was given",
        { network: spec.network },
      );
    }
    // Any mode may have a proxy: a sealed or localhost shell granted service bindings reaches the
    // proxy's listener and nothing else (the proxy refuses all but the bindings).
    if (spec.egress) {
      const socketPath = spec.egress.socketPath;
      if (!isAbsolute(socketPath) || Buffer.byteLength(socketPath) >= UNIX_PATH_MAX) {
        throw new SandboxError(
          "unsupported",
          `the egress proxy socket must be an absolute path under ${UNIX_PATH_MAX} bytes`,
          { socketPath },
        );
      }
    }
    const report = await this.#hostCheck();
    if (!report.available)
      throw new SandboxError("unavailable", report.reason ?? "container runtime unavailable", {
        checks: report.checks,
      });

    return this.#locked(spec.shellId, async () => {
      const shellDir = this.#shellDir(spec.shellId);
      if (await readJson<ShellRecord>(`${shellDir}/shell.json`)) {
        throw new SandboxError("failed", `shell ${spec.shellId} already exists on this host`);
      }
      const capture = spec.from ? await this.#capture(spec.from.captureId, spec) : null;
      let helper: string;
      let image;
      try {
        helper = await ensureHelper(this.#stateDir);
        // A fork runs on its parent's image: its upper dir holds changes to that image.
        image =
          (capture?.imageVersion ? await findImage(this.#imagesDir, capture.imageVersion) : null) ??
          (await this.#ensureImage(spec.language, spec.image, this.#buildOptions()));
      } catch (error) {
        throw new SandboxError(
          "unavailable",
          `cannot prepare the ${spec.language} image: ${(error as Error).message}`,
          {},
          { cause: error },
        );
      }
      // A directory without a record is what a crash before the first write leaves: clear it.
      if (await exists(shellDir)) await this.#teardown(spec.shellId);
      const claimed = capture ? null : await this.#claimPooled(spec, image.version);
      if (claimed) return claimed;
      const record: ShellRecord = {
        shellId: spec.shellId,
        phase: "creating",
        language: spec.language,
        network: spec.network,
        resources: spec.resources,
        env: spec.env,
        ...(spec.egress ? { egressSocket: spec.egress.socketPath } : {}),
        uidSlot: null,
        imageVersion: image.version,
        imageRootfs: image.rootfs,
        createdAt: new Date().toISOString(),
        snapshotSeq: 0,
      };
      this.#creating += 1;
      try {
        await this.#provision(record, helper, capture);
      } catch (error) {
        this.#log("error", { shellId: spec.shellId, err: error }, "create failed; tearing down");
        await this.#teardown(spec.shellId).catch((e: unknown) =>
          this.#log("error", { shellId: spec.shellId, err: e }, "teardown after failed create"),
        );
        throw error instanceof SandboxError
          ? error
          : new SandboxError(
              "failed",
              `creating the shell failed: ${(error as Error).message}`,
              {},
              { cause: error },
            );
      } finally {
        this.#creating -= 1;
      }
      this.#log("info", { shellId: spec.shellId, imageVersion: image.version }, "shell created");
      return { shellId: spec.shellId, state: "running", imageVersion: image.version };
    });
  }

  /**
   * Makes a sandbox's dir, uid range and disk (a fork's: on its capture) and starts it; the
   * record (phase `creating`) says which sandbox and how. The caller tears down on failure.
   */
  async #provision(
    record: ShellRecord,
    helper: string,
    capture: CaptureMeta | null,
  ): Promise<void> {
    const shellDir = this.#shellDir(record.shellId);
    await mkdir(BOX_ID.test(record.shellId) ? this.#boxesDir : `${this.#stateDir}/shells`, {
      recursive: true,
      mode: 0o700,
    });
    await mkdir(shellDir, { mode: 0o700 });
    await writeJson(`${shellDir}/shell.json`, record);
    record.uidSlot = await claimUidSlot(this.#registryDir, shellDir);
    // A fork stacks on its capture's layers (written to the record while the capture still
    // references them, so no sweep can remove them in between).
    if (capture?.layers?.length) record.layers = capture.layers;
    const copied = capture !== null && capture.mode !== "layered";
    if (copied) {
      record.diskUidBase = capture.diskUidBase;
      await copyDisk(`${this.#forksDir}/${capture.captureId}/disk.img`, `${shellDir}/disk.img`);
    }
    await writeJson(`${shellDir}/shell.json`, record);
    if (!copied) await this.#freshDisk(`${shellDir}/disk.img`, record.resources.diskMb);
    await this.#startHolder(record, helper, { freshDisk: true });
    record.phase = "ready";
    await writeJson(`${shellDir}/shell.json`, record);
  }

  /**
   * Starts one sandbox for the pool, with the pool's limits: network `sealed`, or for an
   * `:internet` kind `internet`, its egress forwarder pointed at `egress.sock` in the box's dir,
   * which the claim makes a link to the claiming shell's proxy socket. Its box id.
   */
  async #startPooled(kind: PoolKind): Promise<string> {
    const { language, internet } = parsePoolKind(kind);
    const boxId = `_box-${randomBytes(6).toString("hex")}`;
    this.#ownBoxes.add(boxId);
    try {
      return await this.#locked(boxId, async () => {
        const helper = await ensureHelper(this.#stateDir);
        const image = await ensureImage(this.#imagesDir, language, this.#buildOptions());
        const record: ShellRecord = {
          shellId: boxId,
          boxId,
          phase: "creating",
          language,
          network: internet ? "internet" : "sealed",
          ...(internet ? { egressSocket: this.#boxEgressLink(boxId) } : {}),
          resources: { ...POOL_LIMITS, diskMb: this.#sandboxPool.diskMb },
          env: {},
          uidSlot: null,
          imageVersion: image.version,
          imageRootfs: image.rootfs,
          createdAt: new Date().toISOString(),
          snapshotSeq: 0,
        };
        try {
          await this.#provision(record, helper, null);
          // The first exec of the shell that claims it finds its cgroup made, its helper waiting.
          const group = await this.#cgroup(boxId).createExecGroup();
          this.#idleGroups.set(boxId, group);
          await this.#startReady(boxId, group, { expires: false });
        } catch (error) {
          await this.#teardown(boxId).catch(() => undefined);
          throw error;
        }
        return boxId;
      });
    } catch (error) {
      this.#ownBoxes.delete(boxId);
      throw error;
    }
  }

  /**
   * A create served by a pooled sandbox, when the pool has one that fits (see `pool`); null when
   * it has none and the create starts a sandbox of its own. A shell with an egress proxy takes an
   * `:internet` sandbox (its forwarder and walls made at the sandbox's start), any other a plain
   * one. A custom image or a fork is never pooled: its disk is made at start.
   */
  async #claimPooled(spec: SandboxSpec, imageVersion: string): Promise<SandboxInfo | null> {
    if (spec.image || spec.from || (spec.network === "internet" && !spec.egress)) return null;
    const kind = poolKindOf(spec.language, spec.egress !== undefined);
    for (;;) {
      const boxId = this.#sandboxPool.take(kind, spec.resources.diskMb);
      if (boxId === null) return null;
      try {
        const info = await this.#locked(boxId, () => this.#claim(boxId, spec, imageVersion));
        if (info) return info;
      } catch (error) {
        this.#log("warn", { shellId: spec.shellId, boxId, err: error }, "claim failed; undone");
        // The shell's symlink (if made) and the box both go; the create starts its own sandbox.
        await this.#teardown(spec.shellId).catch(() => undefined);
        await this.#locked(boxId, () => this.#teardown(boxId)).catch(() => undefined);
      } finally {
        this.#ownBoxes.delete(boxId);
      }
    }
  }

  /**
   * Makes a pooled sandbox the shell `spec` asks for, without renaming anything of it: the box's
   * record names the shell first (the claim's intent), then `shells/<shellId>` is made a symlink
   * to the box's dir (atomically: a rename), the shell's limits are written into the box's
   * cgroups, an `:internet` box's forwarder is linked to the shell's proxy, and the CPU time the
   * box used while pooled is recorded to be left out of its usage. The shell's hostname (and
   * loopback, for `localhost`) are set by its first entry (exec or spawn), before anything of it
   * runs: no process is started for them here (see `#execTarget`). A crash before the symlink
   * leaves a box no shell names, which `recover` tears down; after it, a shell still `creating`,
   * torn down like any create cut short. Null when the box is not usable (it is torn down).
   */
  async #claim(
    boxId: string,
    spec: SandboxSpec,
    imageVersion: string,
  ): Promise<SandboxInfo | null> {
    const boxDir = this.#shellDir(boxId);
    const [record, holder] = await Promise.all([
      readJson<ShellRecord>(`${boxDir}/shell.json`),
      liveHolder(boxDir),
    ]);
    if (
      !record ||
      record.phase !== "ready" ||
      record.shellId !== boxId ||
      record.imageVersion !== imageVersion ||
      // A forwarded sandbox for a shell with a proxy, a plain one for any other.
      (record.egressSocket !== undefined) !== (spec.egress !== undefined) ||
      !holder
    ) {
      await this.#teardown(boxId);
      return null;
    }
    Object.assign(record, {
      shellId: spec.shellId,
      phase: "creating",
      network: spec.network,
      resources: spec.resources,
      env: spec.env,
      // A restart starts the forwarder on the proxy's own socket; the link serves until then.
      ...(spec.egress ? { egressSocket: spec.egress.socketPath } : {}),
      createdAt: new Date().toISOString(),
    } satisfies Partial<ShellRecord>);
    await writeJson(`${boxDir}/shell.json`, record);
    const cgroup = this.#cgroup(boxId);
    // The steps after the intent touch different things; they run at once, and all have ended
    // before this returns or throws (the caller then tears down whatever they made).
    const [usage, ...steps] = await Promise.allSettled([
      cgroup.usage(),
      (async () => {
        await mkdir(`${this.#stateDir}/shells`, { recursive: true, mode: 0o700 });
        await replaceSymlink(`../boxes/${boxId}`, `${this.#stateDir}/shells/${spec.shellId}`);
        this.#aliases.set(spec.shellId, boxId);
      })(),
      cgroup.setLimits(spec.resources),
      // The forwarder connects through this link for each connection from now on.
      spec.egress ? replaceSymlink(spec.egress.socketPath, this.#boxEgressLink(boxId)) : undefined,
    ]);
    for (const step of [usage, ...steps]) if (step.status === "rejected") throw step.reason;
    const used = usage.status === "fulfilled" ? usage.value : null;
    if (used) record.cpuBaseline = { epoch: used.epoch, cpuUsec: used.cpuUsec };
    record.phase = "ready";
    await writeJson(`${boxDir}/shell.json`, record);
    this.#holders.delete(boxId);
    this.#holders.set(spec.shellId, holder);
    const idle = this.#idleGroups.get(boxId);
    this.#idleGroups.delete(boxId);
    if (idle) this.#idleGroups.set(spec.shellId, idle);
    // Its ready helper is the shell's now, dismissed when unused as any shell's.
    const waiting = idle ? this.#readyHelpers.get(idle.name) : undefined;
    if (idle && waiting) this.#expireReady(idle.name, waiting);
    this.#log("info", { shellId: spec.shellId, boxId }, "shell created from the sandbox pool");
    return { shellId: spec.shellId, state: "running", imageVersion: record.imageVersion };
  }

  /** What the sandbox pool holds now, for `availability()`. */
  async #sandboxPoolReport(): Promise<NonNullable<RuntimeAvailability["sandboxPool"]>> {
    let memoryBytes = 0;
    const boxes = this.#sandboxPool.boxes();
    for (const boxId of boxes)
      memoryBytes +=
        (
          await this.#cgroup(boxId)
            .usage()
            .catch(() => null)
        )?.memoryBytes ?? 0;
    return {
      languages: this.#sandboxPool.report(),
      diskMb: this.#sandboxPool.diskMb,
      memoryMbEach: POOL_LIMITS.memoryMb,
      memoryMb: this.pooledMemoryMb(),
      memoryBytes,
    };
  }

  exec(
    shellId: string,
    request: SandboxExecRequest,
    options: SandboxExecOptions = {},
  ): Promise<ExecResult> {
    return this.#exec(shellId, request, options, "refuse");
  }

  /**
   * An exec. `whilePaused`: `refuse` answers `paused` on a paused shell; `beside` (file
   * operations) runs the command outside the shell's freezer group, so it runs while the shell's
   * own processes stay frozen, and ends whatever it left behind when it returns (nothing of a
   * paused shell may keep running). Where the freezer cannot leave an exec out (cgroup v2, where
   * freezing is hierarchical), `beside` is refused as well.
   */
  async #exec(
    shellId: string,
    request: SandboxExecRequest,
    options: SandboxExecOptions,
    whilePaused: "refuse" | "beside",
  ): Promise<ExecResult> {
    const { target, env, record, paused } = await this.#execTarget(shellId, request.env);
    const cgroup = this.#cgroup(shellId);
    if (paused && (whilePaused === "refuse" || cgroup.host.version === 2))
      throw pausedError(shellId);
    const diskBytes = record.resources.diskMb * 1024 * 1024;
    // A paused shell's idle group may hold a frozen ready helper, which no kill ends until the thaw.
    const group = await this.#execGroup(shellId, { fresh: paused });
    this.#lastExecAt = performance.now();
    this.#readyWanted.delete(shellId);
    const ready = paused ? undefined : this.#takeReady(group);
    const freezerProcs = cgroup.freezerDir
      ? `${cgroup.freezerDir}/${group.name}/cgroup.procs`
      : null;
    try {
      const result = await runExec(
        {
          ...target,
          cgroupProcs: paused
            ? group.procsFiles.filter((file) => file !== freezerProcs)
            : group.procsFiles,
          oomEventsFile: group.oomEventsFile,
          diskFullBytes: Math.max(1024 * 1024, Math.floor(diskBytes / 100)),
        },
        request,
        env,
        options,
        (inflight) => this.#track(shellId, inflight, group),
        ready,
      );
      if (result.killReason === undefined && (await group.filledShellLimit())) {
        // It filled the shell's process limit and ended before the watch looked: end what it left.
        await group.kill().catch(() => undefined);
        return { ...result, killReason: "pids" };
      }
      return result;
    } catch (error) {
      throw this.#execError(shellId, "exec", error);
    } finally {
      this.#lastExecAt = performance.now();
      if (paused) await group.kill().catch(() => undefined);
      await this.#releaseGroup(shellId, group);
    }
  }

  async spawn(
    shellId: string,
    request: SandboxSpawnRequest,
    options: { onOutput: NonNullable<SandboxExecOptions["onOutput"]> },
  ): Promise<SandboxProcess> {
    const { target, env, paused } = await this.#execTarget(shellId, request.env);
    if (paused) throw pausedError(shellId);
    // A terminal needs a terminal type; the caller's env (or the shell's) may name another.
    if (request.pty && env.TERM === undefined) env.TERM = "xterm-256color";
    const group = await this.#execGroup(shellId);
    // A spawn starts its own helper: one waiting in the group would keep it from being emptied.
    const waiting = this.#takeReady(group);
    if (waiting) dismissReadyHelper(waiting);
    try {
      const process = await startProcess(
        { ...target, cgroupProcs: group.procsFiles, oomEventsFile: group.oomEventsFile },
        request,
        env,
        options.onOutput,
        (inflight) => this.#track(shellId, inflight, group),
      );
      process.exit.finally(() => this.#releaseGroup(shellId, group)).catch(() => undefined);
      return process;
    } catch (error) {
      await this.#releaseGroup(shellId, group);
      throw this.#execError(shellId, "spawn", error);
    }
  }

  async stop(shellId: string, reason: KillReason = "stopped"): Promise<SandboxInfo> {
    return this.#locked(shellId, async () => {
      const record = await this.#record(shellId);
      await this.#stopHolder(shellId, reason);
      return this.#info(record, "stopped");
    });
  }

  async start(shellId: string): Promise<SandboxInfo> {
    return this.#locked(shellId, async () => {
      const record = await this.#record(shellId);
      if (!(await this.#liveHolder(shellId)))
        await this.#startHolder(record, await ensureHelper(this.#stateDir));
      if (record.phase === "creating") {
        record.phase = "ready";
        await writeJson(`${this.#shellDir(shellId)}/shell.json`, record);
      }
      return this.#info(record, "running");
    });
  }

  async restart(shellId: string): Promise<SandboxInfo> {
    return this.#locked(shellId, async () => {
      const record = await this.#record(shellId);
      await this.#stopHolder(shellId, "stopped");
      await this.#startHolder(record, await ensureHelper(this.#stateDir));
      return this.#info(record, "running");
    });
  }

  /**
   * Freezes every process of the shell with the cgroup freezer: they stop where they are, use no
   * CPU and keep their memory (resident on the host; the memory limit still bounds it). Execs and
   * spawns are refused with `paused` until `resume`; execs already running are frozen too and
   * finish after it (their wall clock keeps counting). The kernel holds the state, so a paused
   * shell stays paused across control-plane restarts.
   */
  async pause(shellId: string): Promise<{ info: SandboxInfo; pause: PauseInfo }> {
    return this.#locked(shellId, async () => {
      const record = await this.#record(shellId);
      if (record.phase !== "ready" || !(await this.#liveHolder(shellId)))
        throw new SandboxError("not_running", `shell ${shellId} is not running`);
      const cgroup = this.#cgroup(shellId);
      if (!cgroup.freezerDir)
        throw new SandboxError(
          "unsupported",
          "this host mounts no cgroup freezer (cgroup v1 without the freezer hierarchy): shells cannot be paused",
        );
      try {
        await cgroup.freeze();
      } catch (error) {
        throw new SandboxError(
          "failed",
          `pausing shell ${shellId} failed: ${(error as Error).message}`,
          {},
          { cause: error },
        );
      }
      this.#log("info", { shellId }, "shell paused");
      return { info: this.#info(record, "paused"), pause: PAUSE_BY_FREEZER };
    });
  }

  async resume(shellId: string): Promise<SandboxInfo> {
    return this.#locked(shellId, async () => {
      const record = await this.#record(shellId);
      if (record.phase !== "ready" || !(await this.#liveHolder(shellId)))
        throw new SandboxError("not_running", `shell ${shellId} is not running`);
      await this.#cgroup(shellId).thaw();
      this.#log("info", { shellId }, "shell resumed");
      return this.#info(record, "running");
    });
  }

  async snapshot(shellId: string, name: string): Promise<Snapshot> {
    if (!SNAPSHOT_NAME.test(name))
      throw new SandboxError("unsupported", `snapshot name ${JSON.stringify(name)} is not allowed`);
    return this.#locked(shellId, async () => {
      const record = await this.#record(shellId);
      const shellDir = this.#shellDir(shellId);
      const snapshotsDir = `${shellDir}/snapshots`;
      await mkdir(snapshotsDir, { recursive: true, mode: 0o700 });
      const existing = await this.#snapshots(shellId);
      const seq = Math.max(record.snapshotSeq, ...existing.map((s) => s.seq)) + 1;
      // Each archive has a name of its own; the snapshot's metadata naming it is written last and
      // is the commit: a crash before it leaves the previous snapshot of this name whole, and an
      // archive nobody names, which `recover` removes.
      const archive = `${name}.${seq}.tar`;
      const temporary = `${snapshotsDir}/${archive}.tmp`;
      // Running or not: the helper mounts the shell's disk (sharing the live superblock when the
      // shell runs) in a private mount namespace, and tar archives the upper dir with the overlay's
      // own metadata (whiteouts, opaque-dir xattrs) and the shell's numeric owners. A running
      // shell is frozen for the capture, so the archive is the state of one instant. A shell on
      // fork layers is the archive over those layers: they are immutable, and the snapshot's
      // metadata references them, which keeps them while the snapshot exists.
      await this.#stillWhile(record, () =>
        this.#withDisk(record, [
          "tar",
          "--create",
          `--file=${temporary}`,
          "--xattrs",
          "--xattrs-include=*",
          "--numeric-owner",
          "--sparse",
          "--one-file-system",
          "-C",
          `${shellDir}/mnt/disk/upper`,
          ".",
        ]),
      );
      await rename(temporary, `${snapshotsDir}/${archive}`);
      const meta: SnapshotMeta = {
        name,
        sizeBytes: (await stat(`${snapshotsDir}/${archive}`)).size,
        createdAt: new Date().toISOString(),
        seq,
        archive,
        ...(record.layers?.length ? { layers: record.layers } : {}),
        ...(record.uidSlot !== null
          ? { diskUidBase: record.diskUidBase ?? uidBaseOf(record.uidSlot) }
          : {}),
      };
      await writeJson(`${snapshotsDir}/${name}.json`, meta);
      record.snapshotSeq = seq;
      await writeJson(`${shellDir}/shell.json`, record);
      const replaced = existing.find((s) => s.name === name);
      if (replaced && archiveOf(replaced) !== archive)
        await rm(`${snapshotsDir}/${archiveOf(replaced)}`, { force: true });
      // The replaced snapshot may have been the last to stand on some layers.
      if (replaced?.layers?.length) await this.#sweepLayers();
      return { name: meta.name, sizeBytes: meta.sizeBytes, createdAt: meta.createdAt };
    });
  }

  /**
   * A connection to `port` on the shell's loopback by the helper's `connect` mode, which joins only
   * the shell's network namespace and dials only 127.0.0.1 or ::1, then drops every capability.
   */
  async connectPort(shellId: string, port: number): Promise<Duplex> {
    const { target, record, paused } = await this.#execTarget(shellId, {});
    if (paused) throw pausedError(shellId);
    if (record.network === "sealed")
      throw new SandboxError("unsupported", `shell ${shellId} is sealed: it has no network`);
    const reserved: readonly number[] =
      record.network === "internet" ? this.reservedPorts.internet : [];
    if (!Number.isInteger(port) || port < 1 || port > 65535 || reserved.includes(port))
      throw new SandboxError(
        "unsupported",
        `port ${port} cannot be reached in shell ${shellId}${reserved.includes(port) ? " (it is the egress forwarder's)" : ""}`,
        { port },
      );
    try {
      return await connectInShell(target, port);
    } catch (error) {
      if (error instanceof PortRefusedError)
        throw new SandboxError("connection_refused", error.message, { port });
      throw this.#execError(shellId, "exec", error);
    }
  }

  /**
   * The shell's filesystem at one instant, as a layer its forks stack on (see layers.ts). A stopped
   * shell's disk becomes the layer as it is (no copy) and the shell continues on a fresh disk over
   * it; a running or paused one is frozen, its filesystem flushed (syncfs through a mount sharing
   * the live superblock), its disk copied once into the layer and thawed: `layered_reflink` where
   * the state dir's filesystem has reflinks (XFS, btrfs: the layer shares the parent's blocks, O(1)
   * in the disk's size), else `layered_copy_once` (ext4: every allocated block is written once).
   * Each fork then starts on an empty disk of its own over the layer. A shell already on
   * `MAX_LAYER_DEPTH` layers is not stacked deeper: its disk is copied once here and again by each
   * fork (`copy`/`reflink`), which stacks on the parent's layers.
   */
  async captureFork(shellId: string): Promise<SandboxForkCapture> {
    return this.#locked(shellId, async () => {
      const record = await this.#record(shellId);
      if (record.uidSlot === null) throw new SandboxError("failed", "shell record is incomplete");
      const shellDir = this.#shellDir(shellId);
      await this.#sweepCaptures();
      const captureId = `fork-${randomBytes(8).toString("hex")}`;
      const dir = `${this.#forksDir}/${captureId}`;
      await mkdir(dir, { recursive: true, mode: 0o700 });
      const diskUidBase = record.diskUidBase ?? uidBaseOf(record.uidSlot);
      const chain = record.layers ?? [];
      let layer: LayerRef | null = null;
      try {
        const running = (await this.#liveHolder(shellId)) !== null;
        const deep = chain.length >= MAX_LAYER_DEPTH;
        const started = performance.now();
        let frozenMs = 0;
        let method: SandboxForkCapture["method"];
        if (!running && !deep) {
          // A stopped shell forked again before it ran: its top layer is still all of its state.
          layer =
            record.untouchedSinceStack && chain[0] ? chain[0] : await this.#stackOnOwnDisk(record);
          method = "layered";
        } else {
          // One copy of the disk at one instant: the shell is held still only for the copy.
          const copyStill = (target: string) =>
            this.#stillWhile(record, async () => {
              if (running) await this.#withDisk(record, ["sync", "-f", `${shellDir}/mnt/disk`]);
              const copied = await copyDisk(`${shellDir}/disk.img`, target);
              frozenMs = running ? performance.now() - started : 0;
              return copied;
            });
          if (deep) {
            method = await copyStill(`${dir}/disk.img`);
            // Mounted while copied: the copy's superblock says "not cleanly unmounted".
            await repairDiskIfNeeded(`${dir}/disk.img`);
          } else {
            const made = await makeLayer(this.#stateDir, diskUidBase, copyStill);
            layer = made.ref;
            // A reflink shares the parent's blocks (XFS, btrfs): the layer cost no copy at all.
            method = made.method === "reflink" ? "layered_reflink" : "layered_copy_once";
          }
        }
        const meta: CaptureMeta = {
          captureId,
          parent: shellId,
          language: record.language,
          diskMb: record.resources.diskMb,
          imageVersion: record.imageVersion,
          diskUidBase,
          mode: layer ? "layered" : "copy",
          layers: layer ? [...new Set([layer, ...chain])] : chain,
          createdAt: new Date().toISOString(),
        };
        await writeJson(`${dir}/capture.json`, meta);
        const sizeBytes = await allocatedBytes(
          layer ? layerDisk(this.#stateDir, layer.id) : `${dir}/disk.img`,
        );
        this.#log("info", { shellId, captureId, method, sizeBytes, frozenMs }, "fork captured");
        return { captureId, method, sizeBytes, frozenMs: Math.round(frozenMs * 10) / 10 };
      } catch (error) {
        await rm(dir, { recursive: true, force: true });
        await this.#sweepLayers();
        if (error instanceof SandboxError) throw error;
        throw new SandboxError(
          "failed",
          `capturing shell ${shellId} for a fork failed: ${(error as Error).message}`,
          {},
          { cause: error },
        );
      }
    });
  }

  /**
   * A stopped shell's disk becomes a layer as it is (a hard link: nothing writes it any more) and
   * the shell continues on a fresh disk stacked on it. The `stack` intent makes the swap whole
   * after a crash: `recover` finishes it.
   */
  async #stackOnOwnDisk(record: ShellRecord): Promise<LayerRef> {
    if (record.uidSlot === null) throw new Error("shell record has no uid slot");
    const shellDir = this.#shellDir(record.shellId);
    await waitForLoopDetached(`${shellDir}/disk.img`);
    await repairDiskIfNeeded(`${shellDir}/disk.img`);
    await this.#freshDisk(`${shellDir}/disk.stack.img`, record.resources.diskMb);
    const { ref } = await makeLayer(
      this.#stateDir,
      record.diskUidBase ?? uidBaseOf(record.uidSlot),
      linkTo(`${shellDir}/disk.img`),
    );
    await this.#withIntent(record, { kind: "stack", layer: ref }, () => this.#finishStack(record));
    return ref;
  }

  /** The rest of a stack once its intent is recorded: the fresh disk goes in over the layer. */
  async #finishStack(record: ShellRecord): Promise<void> {
    if (record.intent?.kind !== "stack") return;
    const shellDir = this.#shellDir(record.shellId);
    // The fresh disk is made before the intent is recorded: gone means already renamed in.
    if (await exists(`${shellDir}/disk.stack.img`))
      await rename(`${shellDir}/disk.stack.img`, `${shellDir}/disk.img`);
    const layer = record.intent.layer;
    if (record.layers?.[0]?.id !== layer.id) record.layers = [layer, ...(record.layers ?? [])];
    // The fresh disk is the shell's own: its files will be owned by its own uid range.
    delete record.diskUidBase;
    delete record.intent;
    record.untouchedSinceStack = true;
    await writeJson(`${shellDir}/shell.json`, record);
  }

  /** A formatted, empty disk at `path`: one from the warm pool when it has one of that size. */
  async #freshDisk(path: string, diskMb: number): Promise<void> {
    if (!(await this.#diskPool.claim(path, diskMb))) await createDisk(path, diskMb);
  }

  /** Removes the layers nothing references any more (see layers.ts). */
  async #sweepLayers(): Promise<void> {
    const removed = await sweepLayers(this.#stateDir, this.#forksDir).catch((error: unknown) => {
      this.#log("warn", { err: error }, "removing unused fork layers failed");
      return [];
    });
    if (removed.length > 0) this.#log("info", { layers: removed }, "unused fork layers removed");
  }

  async releaseFork(captureId: string): Promise<void> {
    if (!CAPTURE_ID.test(captureId)) return;
    await rm(`${this.#forksDir}/${captureId}`, { recursive: true, force: true });
    // A layer no fork took (all creates failed) goes with its capture.
    await this.#sweepLayers();
  }

  async listSnapshots(shellId: string): Promise<Snapshot[]> {
    await this.#record(shellId);
    return (await this.#snapshots(shellId)).map(({ name, sizeBytes, createdAt }) => ({
      name,
      sizeBytes,
      createdAt,
    }));
  }

  async restore(shellId: string, name: string): Promise<Snapshot> {
    return this.#locked(shellId, async () => {
      const record = await this.#record(shellId);
      const meta = (await this.#snapshots(shellId)).find((s) => s.name === name);
      if (!meta)
        throw new SandboxError(
          "snapshot_not_found",
          `shell ${shellId} has no snapshot named ${JSON.stringify(name)}`,
        );
      const shellDir = this.#shellDir(shellId);
      const wasRunning = (await this.#liveHolder(shellId)) !== null;
      await this.#stopHolder(shellId, "stopped");
      // Build the restored disk beside the current one and swap it in only when complete.
      const fresh = `${shellDir}/disk.restore.img`;
      await createDisk(fresh, record.resources.diskMb);
      await this.#withDisk(
        record,
        [
          "tar",
          "--extract",
          `--file=${shellDir}/snapshots/${archiveOf(meta)}`,
          "--xattrs",
          "--xattrs-include=*",
          "--numeric-owner",
          "--same-owner",
          "--same-permissions",
          "-C",
          `${shellDir}/mnt/disk/upper`,
        ],
        fresh,
      );
      await rename(fresh, `${shellDir}/disk.img`);
      // The restored state is the archive over the layers the shell stood on when it was taken.
      if (meta.layers?.length) record.layers = meta.layers;
      else delete record.layers;
      delete record.untouchedSinceStack;
      if (meta.diskUidBase !== undefined && record.uidSlot !== null) {
        if (meta.diskUidBase === uidBaseOf(record.uidSlot)) delete record.diskUidBase;
        else record.diskUidBase = meta.diskUidBase;
      }
      await writeJson(`${shellDir}/shell.json`, record);
      await this.#sweepLayers();
      if (wasRunning) await this.#startHolder(record, await ensureHelper(this.#stateDir));
      return { name: meta.name, sizeBytes: meta.sizeBytes, createdAt: meta.createdAt };
    });
  }

  async reinstallOs(shellId: string): Promise<SandboxInfo> {
    return this.#locked(shellId, async () => {
      const record = await this.#record(shellId);
      let image;
      try {
        // A shell on a custom image stays on it (its packages are what its template asked for);
        // one on a base image moves to the language's newest.
        image =
          (record.imageVersion?.startsWith("img-")
            ? await findImage(this.#imagesDir, record.imageVersion)
            : null) ?? (await ensureImage(this.#imagesDir, record.language, this.#buildOptions()));
      } catch (error) {
        throw new SandboxError(
          "unavailable",
          `cannot prepare the ${record.language} image: ${(error as Error).message}`,
          {},
          { cause: error },
        );
      }
      const wasRunning = (await this.#liveHolder(shellId)) !== null;
      await this.#stopHolder(shellId, "stopped");
      await this.#withIntent(
        record,
        { kind: "reinstall", imageVersion: image.version, imageRootfs: image.rootfs },
        () => this.#finishReinstall(record),
      );
      if (wasRunning) await this.#startHolder(record, await ensureHelper(this.#stateDir));
      return this.#info(record, wasRunning ? "running" : "stopped");
    });
  }

  async wipeState(shellId: string): Promise<SandboxInfo> {
    return this.#locked(shellId, async () => {
      const record = await this.#record(shellId);
      const wasRunning = (await this.#liveHolder(shellId)) !== null;
      await this.#stopHolder(shellId, "stopped");
      await this.#withIntent(record, { kind: "wipe" }, () => this.#finishWipe(record));
      if (wasRunning) await this.#startHolder(record, await ensureHelper(this.#stateDir));
      return this.#info(record, wasRunning ? "running" : "stopped");
    });
  }

  async destroy(shellId: string): Promise<void> {
    if (!SHELL_ID.test(shellId)) return;
    await this.#locked(shellId, () => this.#teardown(shellId));
  }

  /**
   * The shell cgroup's counters (CPU time since it was made, memory now); null once stopped. A
   * shell claimed from the pool leaves out the CPU time its sandbox used while pooled.
   */
  async usage(shellId: string): Promise<SandboxUsage | null> {
    if (!SHELL_ID.test(shellId)) return null;
    try {
      const usage = await this.#cgroup(shellId).usage();
      if (!usage || this.#boxIdOf(shellId) === null) return usage;
      const baseline = (await readJson<ShellRecord>(`${this.#shellDir(shellId)}/shell.json`))
        ?.cpuBaseline;
      return baseline?.epoch === usage.epoch
        ? { ...usage, cpuUsec: Math.max(0, usage.cpuUsec - baseline.cpuUsec) }
        : usage;
    } catch {
      return null;
    }
  }

  /**
   * Settles every shell a crash of the control plane left between two states (see
   * `SandboxBackend.recover`): a record still `creating` (a create that never answered) or
   * `destroying` is torn down; a recorded intent is finished (a wipe, a reinstall) or undone (a
   * hold: the shell is thawed); temporary files and unnamed snapshot archives are removed; a shell
   * that is not running gives back what it still holds (its cgroups, its keeper, its loop device),
   * and a running one its empty exec cgroups. Fork captures are dropped: no fork is under way
   * before the control plane serves. Shells it cannot settle are logged and left for the next try.
   */
  async recover(): Promise<void> {
    const shellIds = await listShellIds(`${this.#stateDir}/shells`);
    await rm(this.#forksDir, { recursive: true, force: true });
    // Symlinks a claim made and had not renamed into place.
    for (const entry of await readdir(`${this.#stateDir}/shells`).catch(() => [] as string[]))
      if (entry.startsWith(".") && entry.endsWith(".link"))
        await rm(`${this.#stateDir}/shells/${entry}`, { force: true });
    await this.#removeTemporaries(`${this.#stateDir}/bin`);
    await removePendingLayers(this.#stateDir);
    const looped = await loopBackings();
    for (const shellId of shellIds) {
      if (!SHELL_ID.test(shellId)) continue;
      await this.#locked(shellId, () => this.#recoverShell(shellId, looped)).catch(
        (error: unknown) =>
          this.#log("error", { shellId, err: error }, "recovering the shell after a crash failed"),
      );
    }
    await this.#recoverBoxes();
    // Layers of captures (dropped above) and of shells torn down: those still referenced by a
    // shell or a snapshot stay, in use or not.
    await this.#sweepLayers();
  }

  /**
   * Pooled sandboxes after a restart: a claimed one is its shell's (recovered with the shells,
   * through the shell's symlink); any other — ready in the pool of an earlier run, or a claim cut
   * before the shell's symlink was made — is torn down, and `warm()` starts fresh ones. Boxes this
   * backend started itself are left alone.
   */
  async #recoverBoxes(): Promise<void> {
    const named = new Set<string>();
    for (const shellId of await listShellIds(`${this.#stateDir}/shells`)) {
      const boxId = this.#boxIdOf(shellId);
      if (boxId !== null) named.add(boxId);
    }
    for (const boxId of await readdir(this.#boxesDir).catch(() => [] as string[])) {
      if (!BOX_ID.test(boxId) || named.has(boxId) || this.#ownBoxes.has(boxId)) continue;
      await this.#locked(boxId, () => this.#teardown(boxId)).catch((error: unknown) =>
        this.#log("error", { boxId, err: error }, "removing a pooled sandbox failed"),
      );
      this.#log("info", { boxId }, "unclaimed pooled sandbox of an earlier run removed");
    }
  }

  async #recoverShell(shellId: string, looped: Map<string, string[]>): Promise<void> {
    const shellDir = this.#shellDir(shellId);
    const record = await readJson<ShellRecord>(`${shellDir}/shell.json`);
    if (!record || record.phase !== "ready") {
      await this.#teardown(shellId);
      this.#log("info", { shellId, phase: record?.phase ?? null }, "cut create or destroy undone");
      return;
    }
    const intent = record.intent;
    if (intent?.kind === "hold") {
      await this.#endHold(record);
    } else if (intent?.kind === "stack") {
      await this.#finishStack(record);
      this.#log("info", { shellId, intent: intent.kind }, "cut step finished");
    } else if (intent) {
      await this.#stopHolder(shellId, "stopped");
      if (intent.kind === "wipe") await this.#finishWipe(record);
      else await this.#finishReinstall(record);
      this.#log("info", { shellId, intent: intent.kind }, "cut step finished");
    }
    await this.#removeTemporaries(shellDir);
    await this.#removeUnnamedArchives(shellId);
    const cgroup = this.#cgroup(shellId);
    if (await this.#liveHolder(shellId)) {
      for (const group of await cgroup.execGroups())
        if (this.#unclaimed(shellId, group)) await group.removeIfEmpty().catch(() => false);
    } else if (
      looped.has(`${shellDir}/disk.img`) ||
      (await cgroup.exists()) ||
      (await exists(`${shellDir}/holder.json`))
    ) {
      await this.#stopHolder(shellId, "stopped");
      this.#log("info", { shellId }, "what a stopped shell still held is released");
    }
  }

  /** Removes the temporary files a crash left in a directory (see TEMPORARY_FILE). */
  async #removeTemporaries(dir: string): Promise<void> {
    for (const entry of await readdir(dir).catch(() => [] as string[]))
      if (TEMPORARY_FILE.test(entry)) await rm(`${dir}/${entry}`, { force: true });
  }

  /** Removes snapshot archives no snapshot names (a snapshot cut before its commit) and temporaries. */
  async #removeUnnamedArchives(shellId: string): Promise<void> {
    const dir = `${this.#shellDir(shellId)}/snapshots`;
    const named = new Set((await this.#snapshots(shellId)).map(archiveOf));
    for (const entry of await readdir(dir).catch(() => [] as string[]))
      if (!entry.endsWith(".json") && !named.has(entry))
        await rm(`${dir}/${entry}`, { recursive: true, force: true });
    await this.#removeTemporaries(dir);
  }

  async list(): Promise<SandboxInfo[]> {
    const infos: SandboxInfo[] = [];
    for (const shellId of await listShellIds(`${this.#stateDir}/shells`)) {
      const record = await readJson<ShellRecord>(`${this.#shellDir(shellId)}/shell.json`);
      if (!record) continue;
      const running = record.phase === "ready" && (await this.#liveHolder(shellId)) !== null;
      const paused = running && (await this.#cgroup(shellId).isFrozen());
      infos.push(this.#info(record, paused ? "paused" : running ? "running" : "stopped"));
    }
    return infos;
  }

  /**
   * Turns on the kernel's `favordynmods` mode where it is off (see internal/cgroup-dynmods.ts), so
   * moving a process into a shell's cgroups does not wait for an RCU grace period. On cgroup v1 by
   * a cgroup mount of no controller at `mountPoint` (default `/run/shells-favordynmods`), which
   * stays: the mode is the host's. On cgroup v2 the host's own mount decides, and the answer says
   * how to turn it on.
   */
  async favorDynamicCgroups(mountPoint = "/run/shells-favordynmods"): Promise<DynmodsState> {
    if (this.#dynmods) return this.#dynmods;
    this.#dynmods = await favorDynmods(this.#host(), mountPoint);
    if (this.#dynmods.state === "mounted")
      this.#log("info", { mountPoint: this.#dynmods.mountPoint }, "cgroup favordynmods mode on");
    else if (this.#dynmods.state === "off")
      this.#log("info", { reason: this.#dynmods.reason }, "cgroup favordynmods mode off");
    return this.#dynmods;
  }

  async close(): Promise<void> {
    this.#closing = true;
    // Shells run on without us; execs in flight finish inside their shells. Pooled sandboxes
    // serve no one without us: they go (a crash leaves them to the next `recover`).
    this.#sandboxPool.close();
    await this.#sandboxPool.settled();
    for (const boxId of this.#sandboxPool.boxes()) {
      this.#sandboxPool.drop(boxId);
      await this.#locked(boxId, () => this.#teardown(boxId)).catch((error: unknown) =>
        this.#log("warn", { boxId, err: error }, "removing a pooled sandbox failed"),
      );
    }
    this.#holders.clear();
    if (this.#pidsTimer) clearInterval(this.#pidsTimer);
    this.#pidsTimer = null;
    this.#pidsWatch.clear();
    this.#idleGroups.clear();
    if (this.#readyTimer) clearTimeout(this.#readyTimer);
    this.#readyTimer = null;
    this.#readyWanted.clear();
    for (const ready of this.#readyHelpers.values()) dismissReadyHelper(ready);
    this.#readyHelpers.clear();
  }

  // ---------------------------------------------------------------------------------------------

  /** A shell's (or a box's) dir: a claimed box's for a shell claimed from the pool. */
  #shellDir(shellId: string): string {
    const boxId = this.#boxIdOf(shellId);
    return boxId === null ? `${this.#stateDir}/shells/${shellId}` : `${this.#boxesDir}/${boxId}`;
  }

  /** The link an `:internet` pooled sandbox's forwarder connects through (see `#startPooled`). */
  #boxEgressLink(boxId: string): string {
    return `${this.#boxesDir}/${boxId}/egress.sock`;
  }

  /** Where pooled sandboxes live, claimed or not. */
  get #boxesDir(): string {
    return `${this.#stateDir}/boxes`;
  }

  /**
   * The box a shell runs in when it was claimed from the pool (read from its symlink, which a
   * claim makes and a destroy removes last), the id itself for a box id, else null.
   */
  #boxIdOf(id: string): string | null {
    if (BOX_ID.test(id)) return id;
    const cached = this.#aliases.get(id);
    if (cached !== undefined) return cached;
    let target: string;
    try {
      // Synchronous: a readlink answers from the dentry cache, and every path of a shell needs it.
      target = basename(readlinkSync(`${this.#stateDir}/shells/${id}`));
    } catch {
      return null;
    }
    if (!BOX_ID.test(target)) return null;
    this.#aliases.set(id, target);
    return target;
  }

  /** Where fork captures live until released. */
  get #forksDir(): string {
    return `${this.#stateDir}/forks`;
  }

  /** A capture a new shell may start from: it exists and fits the spec. */
  async #capture(captureId: string, spec: SandboxSpec): Promise<CaptureMeta> {
    const meta = CAPTURE_ID.test(captureId)
      ? await readJson<CaptureMeta>(`${this.#forksDir}/${captureId}/capture.json`)
      : null;
    if (!meta) throw new SandboxError("failed", `no fork capture ${captureId} on this host`);
    if (meta.language !== spec.language || meta.diskMb !== spec.resources.diskMb)
      throw new SandboxError(
        "unsupported",
        `a fork keeps its parent's language (${meta.language}) and disk size (${meta.diskMb} MiB)`,
      );
    return meta;
  }

  /** Removes captures a crash left behind (a fork takes seconds; an hour-old capture is lost). */
  async #sweepCaptures(): Promise<void> {
    let entries: string[];
    try {
      entries = await readdir(this.#forksDir);
    } catch {
      return;
    }
    for (const entry of entries) {
      const info = await stat(`${this.#forksDir}/${entry}`).catch(() => null);
      if (info && Date.now() - info.mtimeMs > CAPTURE_MAX_AGE_MS)
        await rm(`${this.#forksDir}/${entry}`, { recursive: true, force: true });
    }
  }

  #info(record: ShellRecord, state: SandboxInfo["state"]): SandboxInfo {
    return { shellId: record.shellId, state, imageVersion: record.imageVersion };
  }

  async #record(shellId: string): Promise<ShellRecord> {
    const record = SHELL_ID.test(shellId)
      ? await readJson<ShellRecord>(`${this.#shellDir(shellId)}/shell.json`)
      : null;
    if (!record || record.phase === "destroying")
      throw new SandboxError("not_found", `no shell ${shellId} on this host`);
    return record;
  }

  /** This host's cgroups (detected once), or unavailable. */
  #host(): CgroupHost {
    if (!this.#cgroupHost) {
      const detected = detectCgroups();
      if (typeof detected === "string") throw new SandboxError("unavailable", detected);
      this.#cgroupHost = detected;
    }
    return this.#cgroupHost;
  }

  #cgroup(shellId: string): ShellCgroup {
    return new ShellCgroup(
      this.#host(),
      this.#cgroupParent,
      shellCgroupName(this.#stateDir, this.#boxIdOf(shellId) ?? shellId),
    );
  }

  async #liveHolder(shellId: string): Promise<HolderRecord | null> {
    const cached = this.#holders.get(shellId);
    if (cached && (await isAlive(cached.initPid, cached.initStart))) return cached;
    this.#holders.delete(shellId);
    const holder = await liveHolder(this.#shellDir(shellId));
    if (holder) this.#holders.set(shellId, holder);
    return holder;
  }

  /** How to reach a running shell with the helper, and the environment a command starts with. */
  async #execTarget(
    shellId: string,
    requestEnv: Record<string, string>,
  ): Promise<{
    target: Omit<ExecTarget, "diskFullBytes">;
    env: Record<string, string>;
    record: ShellRecord;
    /** The shell's processes are frozen (see `pause`). */
    paused: boolean;
  }> {
    if (!SHELL_ID.test(shellId)) await this.#record(shellId); // throws not_found
    const cgroup = this.#cgroup(shellId);
    // Independent reads, at once: they are most of an exec's cost outside the command itself.
    const [record, holder, paused, helper] = await Promise.all([
      this.#record(shellId),
      this.#liveHolder(shellId),
      cgroup.isFrozen(),
      ensureHelper(this.#stateDir),
    ]);
    if (record.phase !== "ready")
      throw new SandboxError("not_running", `shell ${shellId} is ${record.phase}`);
    if (!holder) throw new SandboxError("not_running", `shell ${shellId} is not running`);
    return {
      record,
      paused,
      env: {
        ...BASE_ENV,
        ...(record.network === "internet" ? SANDBOX_EGRESS_ENV : {}),
        ...record.env,
        ...requestEnv,
      },
      target: {
        helper,
        initPid: holder.initPid,
        initStart: holder.initStart,
        cgroupProcs: cgroup.procsFiles,
        oomEventsFile: cgroup.oomEventsFile,
        rootCapabilities: this.#options.rootCapabilities ?? "none",
        ...(record.boxId !== undefined && record.shellId !== record.boxId
          ? {
              naming: {
                hostname: hostnameOf(record.shellId),
                loopbackUp: record.network === "localhost",
              },
            }
          : {}),
      },
    };
  }

  /** Registers an exec or spawned process, so stop/destroy (and the pids watch) can end it. */
  #track(shellId: string, inflight: InflightExec, group: ExecCgroup): () => void {
    let set = this.#inflight.get(shellId);
    if (!set) this.#inflight.set(shellId, (set = new Set()));
    set.add(inflight);
    const watch = this.#watchFor(shellId);
    watch.live.set(group.name, inflight);
    return () => {
      set.delete(inflight);
      // Still reserved until #releaseGroup decides what becomes of the group.
      if (watch.live.has(group.name)) watch.live.set(group.name, null);
    };
  }

  /**
   * A cgroup of its own for an exec or spawned process, watched for the shell's process limit for
   * as long as anything runs in it (background processes keep it after the exec returned).
   */
  async #execGroup(shellId: string, { fresh = false } = {}): Promise<ExecCgroup> {
    const watch = this.#watchFor(shellId);
    // Reserved from before it exists until the exec is tracked: the sweep must not remove a group
    // whose helper has not joined it yet (it would find no cgroup.procs to join).
    const idle = fresh ? undefined : this.#idleGroups.get(shellId);
    if (idle) {
      this.#idleGroups.delete(shellId);
      watch.live.set(idle.name, null);
      return idle;
    }
    watch.creating += 1;
    try {
      const group = await this.#cgroup(shellId).createExecGroup();
      watch.live.set(group.name, null);
      return group;
    } finally {
      watch.creating -= 1;
    }
  }

  /**
   * Ends the watch's claim on an exec's cgroup: kept for the shell's next exec when it may be
   * reused (see ExecCgroup.reusable), else removed if nothing runs there any more (background
   * processes keep it until they end; the sweep removes it then).
   */
  async #releaseGroup(shellId: string, group: ExecCgroup): Promise<void> {
    // Still live while it is looked at, so the sweep leaves it alone meanwhile.
    const watch = this.#pidsWatch.get(shellId);
    const keep =
      watch !== undefined &&
      !watch.killed.has(group.name) &&
      !this.#idleGroups.has(shellId) &&
      (await group.reusable().catch(() => false)) &&
      // The same shell's still: no stop or restart removed its cgroups meanwhile.
      this.#pidsWatch.get(shellId) === watch &&
      !this.#idleGroups.has(shellId);
    if (keep) this.#idleGroups.set(shellId, group);
    watch?.live.delete(group.name);
    watch?.killed.delete(group.name);
    if (keep) this.#prepareReady(shellId, group);
    else await group.removeIfEmpty().catch(() => false);
  }

  /**
   * Asks for a ready helper in `group`, the shell's idle exec cgroup, for the shell's next exec
   * (see ReadyHelper). Started once no exec has begun or ended for READY_QUIET_MS: starting a
   * process forks the control plane, which holds up whatever it would serve meanwhile, so it is
   * left to a moment when nothing waits. An exec that comes first starts its own helper, as it
   * would without.
   */
  #prepareReady(shellId: string, group: ExecCgroup): void {
    if (this.#closing || this.#readyHelpers.has(group.name)) return;
    this.#readyWanted.set(shellId, group);
    this.#readyTimer ??= setTimeout(() => void this.#startWantedReady(), READY_QUIET_MS);
  }

  async #startWantedReady(): Promise<void> {
    this.#readyTimer = null;
    const quietFor = performance.now() - this.#lastExecAt;
    if (quietFor < READY_QUIET_MS) {
      this.#readyTimer = setTimeout(() => void this.#startWantedReady(), READY_QUIET_MS - quietFor);
      return;
    }
    // One at a time, so a request that comes meanwhile waits for one start at most.
    const [first] = this.#readyWanted;
    if (!first) return;
    const [shellId, group] = first;
    this.#readyWanted.delete(shellId);
    await this.#startReady(shellId, group, { expires: true });
    if (this.#readyWanted.size > 0 && !this.#closing)
      this.#readyTimer ??= setTimeout(() => void this.#startWantedReady(), 1);
  }

  /** Starts a ready helper in `group` while it is still the shell's idle group, unpaused. */
  /**
   * `expires`: dismissed after READY_IDLE_MS unused, so a fleet of idle shells holds none (each
   * holds about 0.2 MB and a process of its shell's); a pooled sandbox keeps its own until claimed.
   */
  async #startReady(
    shellId: string,
    group: ExecCgroup,
    { expires }: { expires: boolean },
  ): Promise<void> {
    try {
      const [holder, paused, helper] = await Promise.all([
        this.#liveHolder(shellId),
        this.#cgroup(shellId).isFrozen(),
        ensureHelper(this.#stateDir),
      ]);
      if (
        this.#closing ||
        !holder ||
        paused ||
        this.#idleGroups.get(shellId)?.name !== group.name ||
        this.#readyHelpers.has(group.name)
      )
        return;
      const ready = startReadyHelper({
        helper,
        initPid: holder.initPid,
        initStart: holder.initStart,
        cgroupProcs: group.procsFiles,
        oomEventsFile: group.oomEventsFile,
        rootCapabilities: this.#options.rootCapabilities ?? "none",
      });
      this.#readyHelpers.set(group.name, ready);
      if (expires) this.#expireReady(group.name, ready);
      ready.child.on("exit", () => {
        if (this.#readyHelpers.get(group.name) === ready) this.#readyHelpers.delete(group.name);
      });
    } catch (error) {
      this.#log("warn", { shellId, err: error }, "starting a ready exec helper failed");
    }
  }

  /** Dismisses `ready` (waiting in the group `groupName`) if still unused after the idle time. */
  #expireReady(groupName: string, ready: ReadyHelper): void {
    setTimeout(() => {
      if (this.#readyHelpers.get(groupName) !== ready) return;
      this.#readyHelpers.delete(groupName);
      dismissReadyHelper(ready);
    }, this.#options.readyHelperIdleMs ?? READY_IDLE_MS).unref();
  }

  /**
   * The ready helper waiting in `group`, for the exec (or spawn, which dismisses it) that took the
   * group. An exec of a paused shell takes a fresh group instead (see #exec).
   */
  #takeReady(group: ExecCgroup): ReadyHelper | undefined {
    const ready = this.#readyHelpers.get(group.name);
    if (!ready) return undefined;
    this.#readyHelpers.delete(group.name);
    return ready.gone ? undefined : ready;
  }

  /**
   * Whether no exec holds `group` and none may take it, so a sweep may remove it. Decided on the
   * state of this moment: an exec may have begun a new watch, or taken the idle group, while the
   * sweep waited.
   */
  #unclaimed(shellId: string, group: ExecCgroup): boolean {
    const watch = this.#pidsWatch.get(shellId);
    if (watch && watch.creating > 0) return false; // a new group, not yet reserved
    return !watch?.live.has(group.name) && this.#idleGroups.get(shellId)?.name !== group.name;
  }

  /** The shell's pids watch, begun if it is not running (see #checkPids). */
  #watchFor(shellId: string): PidsWatch {
    let watch = this.#pidsWatch.get(shellId);
    if (!watch) {
      // Infinity: refusals counted before the watch began are nobody's to answer for now.
      watch = {
        shell: this.#cgroup(shellId),
        refused: Infinity,
        live: new Map(),
        creating: 0,
        killed: new Set(),
      };
      this.#pidsWatch.set(shellId, watch);
    }
    this.#pidsTimer ??= setInterval(() => void this.#checkPids(), PIDS_WATCH_MS).unref();
    return watch;
  }

  /**
   * The pids watch. A shell's process limit is shared by everything in it, so when a fork is
   * refused, the exec whose cgroup holds the most processes — the one that filled the limit — is
   * killed with reason `pids`, with every process it left (detached descendants too, even after the
   * exec returned); execs that only tried to fork while the shell was full keep running. Exec
   * cgroups whose processes are all gone are removed.
   */
  async #checkPids(): Promise<void> {
    if (this.#pidsChecking) return;
    this.#pidsChecking = true;
    try {
      for (const [shellId, watch] of this.#pidsWatch) {
        const { culprits, refused } = await watch.shell.pidsCulprits(watch.refused);
        watch.refused = refused;
        for (const group of culprits) {
          // Only a ready helper of ours waits in the idle group: nothing of the shell's runs there.
          if (group.name === this.#idleGroups.get(shellId)?.name) continue;
          const inflight = watch.live.get(group.name) ?? undefined;
          if (inflight) inflight.endReason = "pids";
          // The helper of a live exec stays to report how its command ended.
          const spare = inflight?.child.pid !== undefined ? [inflight.child.pid] : [];
          watch.killed.add(group.name);
          await group.kill(spare).catch(() => undefined);
          this.#log("warn", { shellId, cgroup: group.name }, "process limit filled: exec killed");
        }
        const groups = await watch.shell.execGroups();
        for (const group of groups)
          if (this.#unclaimed(shellId, group)) await group.removeIfEmpty().catch(() => false);
        // Nothing left to watch: the idle group holds no process until an exec takes it (and
        // that exec begins the watch again).
        const idle = this.#idleGroups.get(shellId)?.name;
        if (
          this.#pidsWatch.get(shellId) === watch &&
          watch.live.size === 0 &&
          watch.creating === 0 &&
          groups.every((group) => group.name === idle)
        )
          this.#pidsWatch.delete(shellId);
      }
      if (this.#pidsWatch.size === 0 && this.#pidsTimer) {
        clearInterval(this.#pidsTimer);
        this.#pidsTimer = null;
      }
    } finally {
      this.#pidsChecking = false;
    }
  }

  /**
   * Runs `body` with the shell's processes frozen if it runs, and thaws them after: what `body`
   * reads of the shell's state is one instant's. A paused shell stays as it is; on a host without
   * a freezer `body` runs on the live shell. The freeze is recorded as the shell's intent first, so
   * a crash while frozen does not leave the shell looking paused: `recover` thaws it.
   */
  async #stillWhile<T>(record: ShellRecord, body: () => Promise<T>): Promise<T> {
    const shellId = record.shellId;
    const cgroup = this.#cgroup(shellId);
    const freeze =
      cgroup.freezerDir !== null &&
      (await this.#liveHolder(shellId)) !== null &&
      !(await cgroup.isFrozen());
    if (freeze) {
      record.intent = { kind: "hold" };
      await writeJson(`${this.#shellDir(shellId)}/shell.json`, record);
      try {
        await cgroup.freeze();
      } catch (error) {
        await this.#endHold(record);
        throw new SandboxError(
          "failed",
          `holding shell ${shellId} still failed: ${(error as Error).message}`,
          {},
          { cause: error },
        );
      }
    }
    try {
      return await body();
    } finally {
      if (freeze) await this.#endHold(record);
    }
  }

  /** Thaws a shell held still for a capture and clears the intent that said so. */
  async #endHold(record: ShellRecord): Promise<void> {
    await this.#cgroup(record.shellId).thaw();
    delete record.intent;
    await writeJson(`${this.#shellDir(record.shellId)}/shell.json`, record);
  }

  /**
   * Records `intent` in the shell's record, then runs `finish`, which clears it when done. An
   * intent is for a crash: a `finish` that fails with an answer clears it too, so the failure the
   * caller saw is final and no later start redoes the step behind their back.
   */
  async #withIntent(
    record: ShellRecord,
    intent: ShellIntent,
    finish: () => Promise<void>,
  ): Promise<void> {
    record.intent = intent;
    await writeJson(`${this.#shellDir(record.shellId)}/shell.json`, record);
    try {
      await finish();
    } catch (error) {
      delete record.intent;
      await writeJson(`${this.#shellDir(record.shellId)}/shell.json`, record).catch(
        () => undefined,
      );
      throw error;
    }
  }

  /**
   * The rest of a wipe once the shell is stopped and its intent recorded: a fresh disk is made beside
   * the shell's and renamed over it, so the shell has its old disk or the new one, never none.
   */
  async #finishWipe(record: ShellRecord): Promise<void> {
    const shellDir = this.#shellDir(record.shellId);
    await createDisk(`${shellDir}/disk.wipe.img`, record.resources.diskMb);
    await rename(`${shellDir}/disk.wipe.img`, `${shellDir}/disk.img`);
    // A fresh disk holds nothing of a fork's parent: its files are the shell's own again, and
    // it stacks on no inherited layer.
    delete record.diskUidBase;
    delete record.layers;
    delete record.untouchedSinceStack;
    delete record.intent;
    await writeJson(`${shellDir}/shell.json`, record);
    await this.#sweepLayers();
  }

  /**
   * The rest of a reinstall once the shell is stopped and its intent recorded: everything the shell
   * changed outside /workspace goes, and it runs on the intent's image. Removing again what is
   * already gone is harmless, so a cut reinstall is simply done again.
   */
  async #finishReinstall(record: ShellRecord): Promise<void> {
    const intent = record.intent;
    if (intent?.kind !== "reinstall") return;
    const shellDir = this.#shellDir(record.shellId);
    const disk = `${shellDir}/mnt/disk`;
    if (record.layers?.length && !intent.merged) {
      // The shell's /workspace is partly inherited: copy what it sees there (its disk over its
      // layers, whiteouts applied) beside the upper, then forget the layers, whose other content
      // is the old system that a reinstall drops.
      await this.#withDisk(
        record,
        [
          "sh",
          "-c",
          'rm -rf -- "$1/workspace.new" && if [ -d "$2/workspace" ]; then cp -a -- "$2/workspace" "$1/workspace.new"; fi',
          "reinstall",
          disk,
          `${shellDir}/mnt/merged`,
        ],
        undefined,
        record.layers,
      );
      intent.merged = true;
      delete record.layers;
      await writeJson(`${shellDir}/shell.json`, record);
    }
    await this.#withDisk(record, [
      "sh",
      "-c",
      'cd "$1/upper" && find . -mindepth 1 -maxdepth 1 ! -name workspace -exec rm -rf -- {} + && if [ -d "$1/workspace.new" ]; then rm -rf -- "$1/upper/workspace" && mv -- "$1/workspace.new" "$1/upper/workspace"; fi && rm -rf -- "$1/work" && mkdir -m 700 "$1/work"',
      "reinstall",
      disk,
    ]);
    record.imageVersion = intent.imageVersion;
    record.imageRootfs = intent.imageRootfs;
    delete record.intent;
    await writeJson(`${shellDir}/shell.json`, record);
    if (intent.merged) await this.#sweepLayers();
  }

  #execError(shellId: string, what: "exec" | "spawn", error: unknown): SandboxError {
    if (error instanceof ShellNotRunningError) {
      this.#holders.delete(shellId);
      return new SandboxError("not_running", `shell ${shellId} is not running`);
    }
    return new SandboxError(
      "failed",
      `${what} failed: ${(error as Error).message}`,
      {},
      { cause: error },
    );
  }

  async #hostCheck(): Promise<ContainerHostReport> {
    if (this.#hostReport && Date.now() - this.#hostReport.at < 10_000)
      return this.#hostReport.report;
    const report = await checkContainerHost();
    this.#hostReport = { at: Date.now(), report };
    return report;
  }

  #buildOptions() {
    return {
      ...(this.#options.onProgress ? { onProgress: this.#options.onProgress } : {}),
      ...(this.#options.debianSuite ? { suite: this.#options.debianSuite } : {}),
      ...(this.#options.debianMirror ? { mirror: this.#options.debianMirror } : {}),
    };
  }

  async #snapshots(shellId: string): Promise<SnapshotMeta[]> {
    const dir = `${this.#shellDir(shellId)}/snapshots`;
    let entries: string[];
    try {
      entries = await readdir(dir);
    } catch {
      return [];
    }
    const metas: SnapshotMeta[] = [];
    for (const entry of entries) {
      if (!entry.endsWith(".json")) continue;
      const meta = await readJson<SnapshotMeta>(`${dir}/${entry}`);
      if (meta) metas.push(meta);
    }
    return metas.sort((a, b) => b.seq - a.seq);
  }

  /** Serialises lifecycle operations per shell (execs do not take the lock). */
  async #locked<T>(shellId: string, body: () => Promise<T>): Promise<T> {
    const previous = this.#locks.get(shellId) ?? Promise.resolve();
    const next = previous.catch(() => undefined).then(body);
    this.#locks.set(shellId, next);
    try {
      return await next;
    } finally {
      if (this.#locks.get(shellId) === next) this.#locks.delete(shellId);
    }
  }

  async #startHolder(
    record: ShellRecord,
    helper: string,
    options: { freshDisk?: boolean } = {},
  ): Promise<void> {
    const cgroup = this.#cgroup(record.shellId);
    try {
      const holder = await this.#launch(record, helper, cgroup, options.freshDisk ?? false);
      this.#holders.set(record.shellId, holder);
    } catch (error) {
      // Its exec cgroups go with the shell's: none may be handed to a later exec.
      this.#pidsWatch.delete(record.shellId);
      this.#idleGroups.delete(record.shellId);
      await cgroup.killAll().catch(() => undefined);
      await cgroup.remove().catch(() => undefined);
      if (error instanceof SandboxError) throw error;
      throw new SandboxError(
        "failed",
        `starting shell ${record.shellId} failed: ${(error as Error).message}`,
        {},
        { cause: error },
      );
    }
  }

  async #launch(
    record: ShellRecord,
    helper: string,
    cgroup: ShellCgroup,
    freshDisk: boolean,
  ): Promise<HolderRecord> {
    const shellDir = this.#shellDir(record.shellId);
    if (record.uidSlot === null || !record.imageRootfs)
      throw new Error("shell record is incomplete");
    if (!(await exists(record.imageRootfs))) {
      // The image was removed (pruned, or the images dir moved): run on the same version if it is
      // elsewhere, else on the newest of the language.
      const image =
        (record.imageVersion ? await findImage(this.#imagesDir, record.imageVersion) : null) ??
        (await newestImage(this.#imagesDir, record.language));
      if (!image) {
        throw new SandboxError(
          "unavailable",
          `the ${record.language} image of shell ${record.shellId} is gone`,
        );
      }
      record.imageRootfs = image.rootfs;
      record.imageVersion = image.version;
      await writeJson(`${shellDir}/shell.json`, record);
    }
    const disk = `${shellDir}/disk.img`;
    if (record.untouchedSinceStack) {
      delete record.untouchedSinceStack;
      await writeJson(`${shellDir}/shell.json`, record);
    }
    if (!freshDisk) {
      await waitForLoopDetached(disk);
      await repairDiskIfNeeded(disk);
    }
    await cgroup.create(record.resources);
    await rm(`${shellDir}/holder.json`, { force: true });
    return launchHolder({
      helper,
      shellDir,
      imageRootfs: record.imageRootfs,
      disk,
      uidBase: uidBaseOf(record.uidSlot),
      ...(record.diskUidBase !== undefined ? { diskUidBase: record.diskUidBase } : {}),
      ...(record.layers?.length
        ? {
            layers: record.layers.map((layer) => ({
              disk: layerDisk(this.#stateDir, layer.id),
              uidBase: layer.uidBase,
            })),
          }
        : {}),
      network: record.network,
      ...(record.egressSocket
        ? { egress: { socketPath: record.egressSocket, port: EGRESS_PORT } }
        : {}),
      hostname: hostnameOf(record.shellId),
      shmMb: Math.max(16, Math.min(record.resources.memoryMb, 1024)),
      cgroupProcs: cgroup.procsFiles,
    });
  }

  /** Ends every process of the shell, waits until its mounts and loop device are gone. */
  async #stopHolder(shellId: string, reason: KillReason): Promise<void> {
    for (const inflight of this.#inflight.get(shellId) ?? []) inflight.endReason = reason;
    const shellDir = this.#shellDir(shellId);
    const holder =
      (await this.#liveHolder(shellId)) ??
      (await readJson<HolderRecord>(`${shellDir}/holder.json`));
    if (holder && (await isAlive(holder.initPid, holder.initStart))) {
      // SIGKILL to init ends the shell's pid namespace: the kernel kills every process in it. The
      // exec helpers (outside the namespace) see their commands die, reap them and report; killing
      // them at the same moment would orphan those zombies to the host's init, and the namespace
      // would wait for the host's init to reap them.
      try {
        process.kill(holder.initPid, "SIGKILL");
      } catch {
        // already gone
      }
      // A paused shell's init acts on the SIGKILL once thawed (cgroup v1 holds frozen tasks even
      // against SIGKILL); the kill is queued first, so nothing runs on after the thaw.
      await this.#cgroup(shellId).thaw();
      await waitUntilDead(2000, [holder.initPid, holder.initStart]).catch(() => undefined);
    }
    // Then whatever else is in the shell's cgroups (exec helpers, the keeper, anything a crash
    // left): membership is the authority on what belongs to the shell.
    const cgroup = this.#cgroup(shellId);
    await cgroup.killAll();
    if (holder && (await isAlive(holder.keeperPid, holder.keeperStart))) {
      // A keeper outside its cgroup (someone moved it): still ours by pid + start time.
      try {
        process.kill(holder.keeperPid, "SIGKILL");
      } catch {
        // already gone
      }
    }
    // A process leaves cgroup.procs as soon as it starts exiting; wait until both holder
    // processes have really ended (their exit unmounts the shell's filesystems).
    if (holder)
      await waitUntilDead(
        10_000,
        [holder.initPid, holder.initStart],
        [holder.keeperPid, holder.keeperStart],
      );
    // Forgotten first: a removal that fails may have taken some hierarchies' exec cgroups.
    this.#pidsWatch.delete(shellId);
    this.#idleGroups.delete(shellId);
    this.#readyWanted.delete(shellId);
    await cgroup.remove();
    this.#holders.delete(shellId);
    await rm(`${shellDir}/holder.json`, { force: true });
    await waitForLoopDetached(`${shellDir}/disk.img`, holder?.loopDevice);
  }

  /** Reclaims everything of a shell, whatever state a crash left it in. */
  async #teardown(shellId: string): Promise<void> {
    const shellDir = this.#shellDir(shellId);
    // A shell claimed from the pool: its symlink goes last, so a crash before it leaves a way to
    // the box for the next try.
    const link = BOX_ID.test(shellId) ? null : `${this.#stateDir}/shells/${shellId}`;
    const unlink = async () => {
      if (link !== null && shellDir !== link) await rm(link, { force: true });
      this.#aliases.delete(shellId);
    };
    const record = await readJson<ShellRecord>(`${shellDir}/shell.json`);
    const dirExists = await exists(shellDir);
    const cgroup = this.#cgroup(shellId);
    if (!record && !dirExists && !(await cgroup.exists())) return unlink();
    if (record && record.phase !== "destroying") {
      record.phase = "destroying";
      await writeJson(`${shellDir}/shell.json`, record);
    }
    await this.#stopHolder(shellId, "deleted");
    // Layers this shell or one of its snapshots stacked on may have no one else left.
    const heldLayers =
      (record?.layers?.length ?? 0) > 0 ||
      (await this.#snapshots(shellId)).some((snapshot) => (snapshot.layers?.length ?? 0) > 0);
    if (record?.uidSlot !== null && record?.uidSlot !== undefined)
      await releaseUidSlot(this.#registryDir, record.uidSlot, shellDir);
    else await releaseUidSlotsOwnedBy(this.#registryDir, shellDir);
    await rm(shellDir, { recursive: true, force: true });
    await unlink();
    this.#inflight.delete(shellId);
    if (heldLayers) await this.#sweepLayers();
    this.#log("info", { shellId }, "shell destroyed");
  }

  /**
   * Runs `command` with the shell's disk (or `disk`) mounted at `<shellDir>/mnt/disk` in a private
   * mount namespace; with `layers`, also the disk's upper over them, read-only, at
   * `<shellDir>/mnt/merged`.
   */
  async #withDisk(
    record: ShellRecord,
    command: string[],
    disk?: string,
    layers?: LayerRef[],
  ): Promise<void> {
    if (record.uidSlot === null) throw new Error("shell record has no uid slot");
    const shellDir = this.#shellDir(record.shellId);
    const helper = await ensureHelper(this.#stateDir);
    await mkdir(`${shellDir}/mnt/disk`, { recursive: true, mode: 0o700 });
    const result = await run(helper, [
      "with-disk",
      "--disk",
      disk ?? `${shellDir}/disk.img`,
      "--mountpoint",
      `${shellDir}/mnt/disk`,
      "--uid-base",
      String(record.diskUidBase ?? uidBaseOf(record.uidSlot)),
      ...(layers?.length ? ["--layers-dir", `${shellDir}/mnt`] : []),
      ...(layers ?? []).flatMap((layer) => [
        "--layer",
        layerDisk(this.#stateDir, layer.id),
        "--layer-uid-base",
        String(layer.uidBase),
      ]),
      "--",
      ...command,
    ]);
    if (result.code !== 0) {
      throw new SandboxError(
        "failed",
        `${command[0]} on the shell's disk failed: ${result.stderr.trim().slice(-1000)}`,
      );
    }
  }

  #log(level: "info" | "warn" | "error", obj: Record<string, unknown>, msg: string): void {
    this.#options.logger?.[level](obj, msg);
  }
}

async function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}

/** Waits until none of the processes (pid, start time) is alive; zombies count as ended. */
async function waitUntilDead(timeoutMs: number, ...processes: [number, string][]): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (let round = 0; ; round++) {
    let alive = false;
    for (const [pid, start] of processes) if (await isAlive(pid, start)) alive = true;
    if (!alive) return;
    if (Date.now() > deadline)
      throw new Error(
        `shell processes ${processes.map(([pid]) => pid).join(", ")} survive SIGKILL`,
      );
    await sleep(Math.min(1 + round * 2, 50));
  }
}

/**
 * Makes `path` a symlink to `target` in one step (a rename over whatever was there). A crash may
 * leave the hidden `.<name>.<random>.link` it renames; `recover` removes those in `shells/`.
 */
async function replaceSymlink(target: string, path: string): Promise<void> {
  const temporary = `${dirname(path)}/.${basename(path)}.${randomBytes(4).toString("hex")}.link`;
  await symlink(target, temporary);
  await rename(temporary, path);
}

/** A valid hostname (RFC 1123 label) derived from the shell id. */
function hostnameOf(shellId: string): string {
  const label = shellId
    .toLowerCase()
    .replace(/[^a-z0-9-]/g, "-")
    .slice(0, 63)
    .replace(/^-+|-+$/g, "");
  return label || "shell";
}
