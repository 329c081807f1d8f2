import {
  CAPABILITY_LEGAL_IN,
  GatedAction,
  type ActionRequest,
  type ActionResult,
  type Approval,
  type ApprovalContext,
  type Capability,
  type ExecRequest,
  type ExecResult,
  type KillReason,
  type Language,
  type RuntimeClass,
  type LogEntry,
  type Page,
  type PendingApproval,
  type RouteBody,
  type ShellEgress,
  type ShellEgressChange,
  type ShellBindingAttach,
  type ShellFork,
  type GitSource,
  type ShellGitSource,
  type ShellForkResult,
  type TemplateDefinition,
  type RouteQuery,
  type Shell,
  type ShellStatus,
  type Snapshot,
} from "@shells/contract";
import type {
  SandboxBackend,
  SandboxEgress,
  SandboxExecOptions,
  SandboxImage,
  SandboxProgress,
} from "@shells/sandbox";
import type { FastifyBaseLogger as Logger } from "fastify";
import type { Kysely } from "kysely";
import { randomBytes } from "node:crypto";
import { z } from "zod";
import type { BindingGrant } from "../egress/binding-proxy.js";
import type { EgressScope, EgressService } from "../egress/egress-service.js";
import { cloneGitSource, type ClonedSource, type GitCloneDeps } from "../sources/git-clone.js";
import { isNarrowing } from "../egress/policy.js";
import { AppError } from "../errors.js";
import { actorOf, type Caller } from "../iam/principal.js";
import { SealedBox } from "../iam/sealed-box.js";
import { newId, nowIso } from "../ids.js";
import type { ActivityService } from "../services/activity-service.js";
import type { BindingService } from "../services/binding-service.js";
import type { CapService, QuotaStop } from "../services/cap-service.js";
import { decodeCursor, encodeCursor } from "../services/cursor.js";
import type { IdempotencyService } from "../services/idempotency-service.js";
import type { MeteringService } from "../services/metering-service.js";
import type { PolicyService } from "../services/policy-service.js";
import type { ResolvedTemplate, TemplateService } from "../services/template-service.js";
import {
  refuseWithoutCustomImages,
  sandboxImageOf,
  type TemplateImageService,
} from "../templates/template-images.js";
import { applyTemplate, placedFiles } from "../templates/template-policy.js";
import type { OrchestratorMetrics } from "../metrics/server-metrics.js";
import type { LifecycleLock } from "../store/lifecycle-lock.js";
import type { Database } from "../store/schema.js";
import { appendShellLog } from "../store/shell-logs-store.js";
import {
  findProject,
  findShell,
  insertShell,
  listShells,
  setShellEgress,
  setProvisioningReason,
  setShellState,
  type ShellRow,
  type ShellStateFields,
} from "../store/shells-store.js";
import { forgetShellSnapshots } from "../store/snapshots-store.js";
import { isUniqueViolation, UNIQUE_CONSTRAINTS } from "../store/unique-violation.js";
import {
  DEFAULT_RESOURCES,
  admitShell,
  hostCapacity,
  type Admitted,
  type HostCapacity,
} from "./admission.js";
import type { CapacityGate, CapacityTicket } from "./capacity.js";
import { inSpan } from "../tracing/tracing.js";
import { RegionPools } from "./region-pools.js";
import { shellEgressDiff } from "./approval-diff.js";
import { isPendingApproval, type ApprovalGate, type GateClearance } from "./approval-gate.js";
import {
  attachBinding,
  bindingReviewContext,
  detachBinding,
  type ShellBindingsContext,
} from "./shell-bindings.js";
import { KeyedMutex } from "./keyed-mutex.js";
import { Reconciler, SYSTEM_ACTOR, type ReconcileCounts } from "./reconciler.js";
import type { RuntimeRegistry } from "./runtimes.js";
import { callBackend, describeError, toApiError } from "./sandbox-errors.js";
import { redactingOutput } from "./secret-output.js";
import { performCapability, provisionShell, type ActionContext } from "./shell-actions.js";
import {
  EXEC_LOG_EXCERPT_CHARS,
  ShellRecords,
  bindingEnv,
  describeExec,
  egressSettingsOf,
  recordShellAction,
} from "./shell-records.js";

/** Defaults applied to every shell and exec; each can be overridden per request within the contract's bounds. */
export const SHELL_DEFAULTS = {
  resources: DEFAULT_RESOURCES,
  execTimeoutMs: 60_000,
  maxOutputBytes: 10 * 1024 * 1024,
  cwd: "/workspace",
  /** Newest log entries kept per shell; older ones are dropped. */
  logRetention: 2000,
  /** Characters of each exec's stdout and stderr kept in its log entry. */
  logExcerptChars: EXEC_LOG_EXCERPT_CHARS,
} as const;

const shellCursor = z.strictObject({ c: z.string(), i: z.string() });

/** What the service needs from the rest of the control plane. */
export interface ShellServiceDeps {
  db: Kysely<Database>;
  activity: ActivityService;
  runtimes: RuntimeRegistry;
  logger: Logger;
  /** Where shells run when no `pools` are given: one unlimited pool of this region. */
  region: string;
  policies: PolicyService;
  gate: ApprovalGate;
  /** Serialises lifecycle work per shell; an in-process keyed mutex when omitted. */
  lock?: LifecycleLock;
  /** The data dir: its file system's free space caps `diskMb`, and it holds the sealing key. */
  dataDir?: string;
  /** Seals secret environment; by default the key file in `dataDir` (the app passes configuration's). */
  sealedBox?: SealedBox;
  /** Host capacity; measured on this host when omitted. */
  capacity?: () => HostCapacity;
  /** Egress proxies of `internet` shells; without it, `internet` is refused. */
  egress?: EgressService;
  /** The org's service bindings; without it (or without `egress`), granting one is refused. */
  bindings?: BindingService;
  /** Where create and exec times and kill reasons are counted. */
  metrics?: OrchestratorMetrics;
  /** Metering: a shell's counters are read before its processes end. */
  metering?: MeteringService;
  /** Project caps: creates and starts over a cap are refused. */
  caps?: CapService;
  /**
   * The server's backend pools by region, with their class slots and reservations: a create is
   * placed in a region with a free slot, and creates and starts without one are refused.
   */
  pools?: RegionPools;
  /** The org's templates; without it, a create that names one is refused. */
  templates?: TemplateService;
  /** Builds of templates' custom images; without it, a template with an image recipe is refused. */
  templateImages?: TemplateImageService;
  /** Idempotency keys: a keyed create notes the shell it makes before it makes it. */
  idempotency?: IdempotencyService;
  /** Clones git sources; without it, a create that names one is refused. */
  git?: GitCloneDeps;
  /** The host's capacity for creates (a bounded queue, a memory budget); unbounded when omitted. */
  hostGate?: CapacityGate;
}

/** What `create` settled before the shell exists, for the rest of it. */
interface AdmittedCreate {
  /** The id its approval named, when the create waited for review. */
  shellId: string | undefined;
  template: ResolvedTemplate | null;
  admitted: Admitted;
  grants: BindingGrant[];
  /** Set for a fork: the parent and the capture its disk starts from. */
  origin: ForkOrigin | undefined;
  /** The host capacity it holds while it provisions. */
  ticket: CapacityTicket | undefined;
  /** The git source cloned for its `/workspace`. */
  source: ClonedSource | null;
  /** Its template's custom image. */
  image: SandboxImage | undefined;
}

/** Capabilities that end a shell's processes: its counters are read before they run. */
const ENDS_PROCESSES: ReadonlySet<Capability> = new Set<Capability>([
  "stop",
  "restart",
  "restore",
  "reinstall_os",
  "wipe_state",
]);

/** Where a forked shell's filesystem comes from. */
export interface ForkOrigin {
  parentId: string;
  /** The backend's capture of the parent's filesystem. */
  captureId: string;
}

/** States a shell can be forked in: its filesystem state exists and holds still for a capture. */
const FORKABLE: readonly ShellStatus[] = ["running", "paused", "stopped"];

/** How a fork's message tells of the way its filesystem reached the new shells. */
const FORK_FILESYSTEM_WORDS: Record<
  ShellForkResult["state"]["filesystem"]["method"],
  (megabytes: string) => string
> = {
  layered: (mb) => `shared as a read-only layer (${mb} MB, nothing copied; copy-on-write)`,
  layered_reflink: (mb) =>
    `reflinked into a shared read-only layer (${mb} MB, nothing copied; copy-on-write)`,
  layered_copy_once: (mb) =>
    `copied once into a shared read-only layer (${mb} MB for all shells; copy-on-write)`,
  reflink: (mb) => `shared by reflink (${mb} MB, copied only where written)`,
  copy: (mb) => `copied (${mb} MB per shell; this host's filesystem has no reflinks)`,
};

/** How a service means to use a shell's sandbox. */
export interface SandboxUse {
  /**
   * Only reads its files: a paused shell serves them too, where its backend can read beside the
   * frozen processes (elsewhere the backend answers `shell_paused`).
   */
  readWhilePaused?: boolean;
}

/** The gated actions that act on one shell (the others: a project's egress). */
type ShellGatedAction = Exclude<GatedAction, "project_egress_change">;
const SHELL_GATED_ACTIONS: readonly ShellGatedAction[] = GatedAction.options.filter(
  (action): action is ShellGatedAction => action !== "project_egress_change",
);

/** The shell's lifecycle capabilities that pass the approval gate, from the contract's list. */
const GATED_CAPABILITIES: ReadonlySet<string> = new Set(SHELL_GATED_ACTIONS);

/**
 * The orchestrator's shell lifecycle: admits new shells, validates every step against the state
 * machine, drives the backend, records state in the store and every step in the activity
 * history. Lifecycle operations on one shell are serialised; execs run concurrently.
 */
export class ShellService {
  /** Execs in flight, so a shutdown can end them (`endExecs`). */
  readonly #execs = new Set<AbortController>();
  readonly #lock: LifecycleLock;
  readonly #pools: RegionPools;
  readonly #box: SealedBox;
  readonly #capacity: () => HostCapacity;
  readonly #records: ShellRecords;
  /** What `performCapability` uses of this service. */
  readonly #actions: ActionContext;
  /** What attaching and detaching bindings on live shells uses of this service. */
  readonly #bindings: ShellBindingsContext;
  /** Reconciliation after a start and the TTL sweep; `start(intervalMs)` runs the sweep. */
  readonly reconciler: Reconciler;

  constructor(private readonly deps: ShellServiceDeps) {
    this.#lock = deps.lock ?? new KeyedMutex();
    this.#pools =
      deps.pools ??
      new RegionPools({
        db: deps.db,
        pools: [{ region: deps.region, slots: {} }],
        defaultRegion: deps.region,
        reservations: [],
        lock: this.#lock,
      });
    this.#box =
      deps.sealedBox ??
      (deps.dataDir ? SealedBox.open(deps.dataDir) : new SealedBox([randomBytes(32)]));
    this.#capacity = deps.capacity ?? (() => hostCapacity(deps.dataDir));
    this.#records = new ShellRecords(this.#box);
    this.#actions = {
      db: deps.db,
      activity: deps.activity,
      logger: deps.logger,
      policy: (orgId) => deps.policies.get(orgId),
      call: (row, fn) => this.#backendCall(row, fn),
      setState: (row, fields) => this.#setState(row, fields),
      egressOf: (row) => this.#egressOf(row),
      imageOf: (row) => this.#imageOfRow(row),
      log: (row, kind, message, trx) => this.#log(row, kind, message, trx),
    };
    this.reconciler = new Reconciler({
      db: deps.db,
      activity: deps.activity,
      runtimes: deps.runtimes,
      lock: this.#lock,
      logger: deps.logger,
      logRetention: SHELL_DEFAULTS.logRetention,
      ...(deps.egress ? { egress: deps.egress } : {}),
      ...(deps.metering ? { metering: deps.metering } : {}),
    });
    deps.gate.performWith(SHELL_GATED_ACTIONS, async (requester, approval, clearance) => {
      if (
        approval.action === "run" ||
        approval.action === "project_egress_change" ||
        approval.action === "shell_create"
      )
        throw new AppError(
          "internal",
          `A ${approval.action} approval is not a gated shell action.`,
        );
      if (approval.action === "delete")
        await this.delete(requester, approval.shell_id, undefined, clearance);
      else if (approval.action === "binding_attach") {
        const { binding } = JSON.parse(approval.request) as ShellBindingAttach;
        await this.attachBinding(requester, approval.shell_id, { binding }, clearance);
      } else if (approval.action === "egress_change")
        await this.changeEgress(
          requester,
          approval.shell_id,
          JSON.parse(approval.request) as ShellEgressChange,
          clearance,
        );
      else
        await this.act(
          requester,
          approval.shell_id,
          approval.action,
          JSON.parse(approval.request) as ActionRequest,
          clearance,
        );
    });
    deps.gate.performWith(["shell_create"], async (requester, approval) => {
      const { shellId, request } = JSON.parse(approval.request) as {
        shellId: string;
        request: RouteBody<"createShell">;
      };
      await this.create(requester, request, undefined, { reviewed: true, shellId });
    });
    this.#bindings = {
      db: deps.db,
      activity: deps.activity,
      gate: deps.gate,
      egress: deps.egress,
      bindings: deps.bindings,
      templateOf: async (orgId, ref) => (await deps.templates?.definitionAt(orgId, ref)) ?? null,
    };
  }

  /**
   * Grants a service binding to a live shell (see `attachBinding` in `shell-bindings.ts`): the
   * shell as it stands after, or the pending approval when its template asks review.
   */
  async attachBinding(
    caller: Caller,
    idOrName: string,
    body: ShellBindingAttach,
    clearance?: GateClearance,
  ): Promise<Shell | PendingApproval> {
    const found = await this.#find(caller.orgId, idOrName);
    const outcome = await this.#lock.run(found.id, async () =>
      attachBinding(
        this.#bindings,
        caller,
        await this.#find(caller.orgId, found.id),
        body,
        clearance,
      ),
    );
    return isPendingApproval(outcome) ? outcome : this.get(caller, found.id);
  }

  /** Takes a service binding from a live shell; answers the shell as it stands after. */
  async detachBinding(caller: Caller, idOrName: string, name: string): Promise<Shell> {
    const found = await this.#find(caller.orgId, idOrName);
    await this.#lock.run(found.id, async () =>
      detachBinding(this.#bindings, caller, await this.#find(caller.orgId, found.id), name),
    );
    return this.get(caller, found.id);
  }

  /**
   * The create of `POST /shells`: a shell granted bindings by a template that asks review of
   * binding grants waits for a listed approver (the answer is the pending `shell_create`
   * approval, and the shell is made as its requester once granted); any other is created now.
   */
  async requestCreate(
    caller: Caller,
    request: RouteBody<"createShell">,
  ): Promise<Shell | PendingApproval> {
    const resolved = await this.withTemplate(caller, request);
    const { input, template } = resolved;
    const bindings = input.bindings ?? [];
    // Created from the template version resolved here, whose review rule was just read.
    if (!template?.definition.reviewBindings || bindings.length === 0)
      return this.create(caller, request, undefined, { resolved });
    // The request is kept until it is granted: a secret environment would be kept in the clear.
    if (input.secretEnv && Object.keys(input.secretEnv).length > 0)
      throw new AppError(
        "validation_failed",
        "A shell that waits for review cannot carry secretEnv (its request is kept until it is granted); use bindings.",
        { field: "secretEnv" },
      );
    // Unknown bindings are this request's error, not the approver's.
    await this.deps.bindings?.grantsFor(caller.orgId, bindings);
    if (input.name && (await findShell(this.deps.db, caller.orgId, input.name)))
      throw new AppError("name_taken", `A shell named ${input.name} already exists in this org.`, {
        name: input.name,
      });
    const shellId = newId("sh", 10);
    return this.deps.gate.park(
      caller,
      { id: shellId, name: input.name ?? shellId },
      "shell_create",
      { shellId, request },
      {
        ...bindingReviewContext(
          `create shell ${input.name ?? shellId} from template ${template.ref}, granted service bindings ${bindings.join(", ")}`,
          template,
          [],
          bindings,
        ),
        language: input.language,
      },
    );
  }

  /**
   * Creates and starts a shell. Refuses classes this host cannot run, naming what is missing.
   * `origin`: the shell is a fork, starting from a capture of its parent's filesystem.
   * `reviewed`: an approver granted its binding grants (a run's shell, or a create that waited
   * for review); `shellId`: the id the shell takes (the one its approval named); `resolved`: the
   * request with its template applied, when the caller resolved it already (`withTemplate`).
   */
  async create(
    caller: Caller,
    request: RouteBody<"createShell">,
    origin?: ForkOrigin,
    {
      reviewed = false,
      shellId,
      resolved,
    }: {
      reviewed?: boolean;
      shellId?: string;
      resolved?: {
        input: RouteBody<"createShell"> & { language: Language };
        template: ResolvedTemplate | null;
      };
    } = {},
  ): Promise<Shell> {
    const { input, template } = resolved ?? (await this.withTemplate(caller, request));
    // Binding grants its template asks review of wait for an approver first (`requestCreate`,
    // a run); a fork inherits its parent's.
    const bindingGrants = (input.bindings?.length ?? 0) > 0;
    if (template?.definition.reviewBindings && bindingGrants && !origin && !reviewed)
      throw new AppError(
        "review_required",
        `Template ${template.ref} requires review of binding grants: the create must wait for an approver.`,
        { template: template.ref, bindings: input.bindings },
      );
    const policy = await this.deps.policies.get(caller.orgId);
    const admitted = await inSpan("shells.admission", {}, () =>
      admitShell(
        { ...this.deps, pools: this.#pools, capacity: this.#capacity },
        caller,
        policy,
        input,
      ),
    );
    // A template's custom image; a fork runs on its parent's image, whatever it is.
    const image =
      template?.definition.image && !origin
        ? this.#imageOf(template, input.language, admitted.backend, admitted.runtime)
        : undefined;
    if (admitted.network === "internet" && !this.deps.egress) {
      throw new AppError(
        "network_mode_unavailable",
        "Network mode internet needs the egress proxy, which this server does not run.",
        { network: admitted.network },
      );
    }
    const grants = await this.#grantsOf(caller, input.bindings ?? [], admitted.backend);
    // Cloned before the shell exists: a bad ref or an unreachable repo is this request's error,
    // and the credential stays on the host.
    const source = input.git
      ? await this.#cloneSource(caller, input.git, {
          projectId: admitted.project.id,
          templateRules: template?.definition.egressRules ?? null,
        })
      : null;
    // The host's capacity is the last check before the shell exists: a refusal leaves nothing.
    const ticket = await this.deps.hostGate?.admit(admitted.resources.memoryMb);
    try {
      return await this.#createAdmitted(caller, input, {
        shellId,
        template,
        admitted,
        grants,
        origin,
        ticket,
        source,
        image,
      });
    } finally {
      ticket?.release();
    }
  }

  /** The rest of `create`, once the shell is admitted: its row, then its sandbox. */
  async #createAdmitted(
    caller: Caller,
    input: RouteBody<"createShell"> & { language: Language },
    admission: AdmittedCreate,
  ): Promise<Shell> {
    const { template, admitted, grants, origin, ticket, source, image } = admission;
    const { db } = this.deps;
    const { runtime, network, resources, backend } = admitted;
    const id = admission.shellId ?? newId("sh", 10);
    const name = input.name ?? id;
    const env = {
      ...input.env,
      ...bindingEnv(grants),
      ...(source ? { SHELLS_GIT_COMMIT: source.commit } : {}),
    };
    // Placed in the first of the admitted regions whose pool has a free slot of the class.
    const insert = (region: string) =>
      insertShell(
        db,
        caller.orgId,
        this.#records.newRow(
          id,
          name,
          { ...input, env },
          { ...admitted, region },
          grants,
          caller.actor,
          template?.definition.egressRules ?? null,
        ),
        // Noted in the row's own transaction: whenever the shell exists, its key knows it.
        async (trx) => this.deps.idempotency?.noteShell(id, trx),
      );
    try {
      const { caps } = this.deps;
      const inSlot = () =>
        this.#pools.admit(caller.orgId, admitted.project, runtime, admitted.regions, insert);
      await inSpan("store.insert_shell", { "shells.shell_id": id }, async () => {
        if (caps) await caps.admit(caller.orgId, admitted.project, runtime, inSlot);
        else await inSlot();
      });
    } catch (error) {
      if (
        error instanceof AppError &&
        (error.code === "quota_exceeded" || error.code === "capacity_exhausted")
      ) {
        await this.deps.activity.recordFor(
          caller,
          "shell.create",
          { type: "project", id: admitted.project.id },
          { name, runtime, reason: error.message, ...error.details },
          "denied",
        );
        throw error;
      }
      if (isUniqueViolation(error, UNIQUE_CONSTRAINTS.shellName)) {
        throw new AppError("name_taken", `A shell named ${name} already exists in this org.`, {
          name,
        });
      }
      throw error;
    }
    ticket?.recorded();
    const started = performance.now();
    const took = () => (performance.now() - started) / 1000;
    const provision = (prepared?: Promise<void>) =>
      this.#lock.run(id, async () => {
        const row = await this.#find(caller.orgId, id);
        // Deleted (or otherwise settled) while its language was being prepared: nothing to start.
        if (row.status !== "provisioning") return;
        try {
          await provisionShell(
            this.#actions,
            caller,
            row,
            backend,
            {
              shellId: id,
              language: input.language,
              runtime,
              network,
              resources,
              env,
              ...(await this.#egressSpecOf(row)),
              ...(origin ? { from: { captureId: origin.captureId } } : {}),
              ...(image ? { image } : {}),
            },
            origin?.parentId,
            prepared,
          );
          // A fork's disk already holds its parent's copy of the template's files.
          if (template && !origin) await this.#placeTemplateFiles(row, template.definition);
          if (source && input.git) await this.#placeSource(caller, row, input.git, source);
        } catch (error) {
          this.deps.metrics?.observeShellCreate(runtime, "failure", took());
          await this.deps.egress?.stop(id);
          throw error;
        }
        this.deps.metrics?.observeShellCreate(runtime, "success", took());
      });
    // A language (or template) whose image is not built yet takes a minute: the shell is answered
    // at once as `provisioning`, its status reason follows the build, and it starts when the
    // build is done. A fork runs on its parent's image, so it never waits for one.
    if (
      !origin &&
      backend.prepareLanguage &&
      !(await backend.languageReady?.(input.language, image))
    ) {
      await setProvisioningReason(
        db,
        caller.orgId,
        id,
        image
          ? `waiting for the build of custom image ${image.id}`
          : `waiting for the ${input.language} image build`,
      );
      this.#provisionLater(caller.orgId, id, input.language, backend, provision, image);
      return this.get(caller, id);
    }
    await provision();
    return this.get(caller, id);
  }

  /**
   * Prepares a shell's language in the background (one build shared by every shell waiting for
   * it), writing each step into the shell's status reason, then provisions the shell. A failure
   * leaves the shell `error` with the reason (recorded by `provisionShell`).
   */
  #provisionLater(
    orgId: string,
    shellId: string,
    language: Language,
    backend: SandboxBackend,
    provision: (prepared: Promise<void>) => Promise<void>,
    image?: SandboxImage,
  ): void {
    let reported = Promise.resolve();
    const onProgress = (progress: SandboxProgress) => {
      const reason =
        progress.percent === undefined
          ? progress.message
          : `${progress.message} (${progress.percent}%)`;
      // One write at a time, in order; a shell that left `provisioning` keeps its own reason.
      reported = reported
        .then(() => setProvisioningReason(this.deps.db, orgId, shellId, reason))
        .catch((error: unknown) =>
          this.deps.logger.warn({ shellId, error }, "could not record build progress"),
        );
    };
    const prepared =
      image && this.deps.templateImages
        ? this.deps.templateImages.prepare(backend, language, image, onProgress)
        : backend.prepareLanguage!(language, onProgress);
    void prepared
      .catch(() => undefined)
      .then(() => reported)
      .then(() => provision(prepared))
      .catch((error: unknown) =>
        // provisionShell recorded the failure on the shell and in the history already.
        this.deps.logger.warn(
          { shellId, reason: describeError(error) },
          "shell provisioning failed",
        ),
      );
  }

  /**
   * The custom image of a template with an image recipe on the shell's language (a request may
   * name another language than the template's: its image is another one), refused where it
   * cannot run.
   */
  #imageOf(
    template: ResolvedTemplate,
    language: Language,
    backend: SandboxBackend,
    runtime: RuntimeClass,
  ): SandboxImage {
    if (!this.deps.templateImages)
      throw new AppError(
        "runtime_unavailable",
        `Template ${template.ref} asks for a custom image, which this server does not build.`,
        { runtime, missing: "custom images" },
      );
    refuseWithoutCustomImages(backend, runtime);
    return sandboxImageOf(language, template.definition.image!);
  }

  /** The custom image of the template version a shell was made from (to provision it again). */
  async #imageOfRow(row: ShellRow): Promise<SandboxImage | null> {
    if (!row.template || !this.deps.templates) return null;
    const definition = await this.deps.templates.definitionAt(row.org_id, row.template);
    return definition?.image ? sandboxImageOf(row.language as Language, definition.image) : null;
  }

  /**
   * A create request with its template's values as defaults (and the template pinned as
   * `name@version`), after refusing any loosening of what the template locks. Without a template
   * the request must name its language.
   */
  async withTemplate<T extends RouteBody<"createShell">>(
    caller: Caller,
    request: T,
  ): Promise<{ input: T & { language: Language }; template: ResolvedTemplate | null }> {
    if (request.template === undefined) {
      if (request.language === undefined)
        throw new AppError(
          "validation_failed",
          "language is required unless a template gives it.",
          {
            field: "language",
          },
        );
      return { input: { ...request, language: request.language }, template: null };
    }
    if (!this.deps.templates)
      throw new AppError("template_not_found", `No template ${request.template} on this server.`);
    const template = await this.deps.templates.resolve(
      caller,
      request.template,
      request.project ?? "default",
    );
    return {
      input: { ...applyTemplate(template.definition, request), template: template.ref },
      template,
    };
  }

  /**
   * Writes a template's managed and metadata files into a new shell. Read-only ones get mode
   * 0444: the shell's processes hold no capability that overrides file permissions, so opening
   * one for writing fails; they own it, though, so a deliberate chmod undoes it.
   */
  async #cloneSource(caller: Caller, git: GitSource, scope: EgressScope) {
    if (!this.deps.git)
      throw new AppError("git_repo_unreachable", "This server does not clone git sources.");
    return cloneGitSource(this.deps.git, caller.orgId, git, scope);
  }

  /**
   * Clones a git source for a shell still to be made in `request`'s project from its template (a
   * run's, before its shell exists): the repo's host is vetted by the org's egress rules and those
   * of that project and template, as the shell's own traffic would be.
   */
  async cloneFor(
    caller: Caller,
    git: GitSource,
    request: { project?: string | undefined; template?: string | undefined },
  ): Promise<ClonedSource> {
    const projectName = request.project ?? "default";
    const project = await findProject(this.deps.db, caller.orgId, projectName);
    if (!project)
      throw new AppError("project_not_found", `No project named ${projectName} in this org.`);
    const template =
      request.template && this.deps.templates
        ? await this.deps.templates.resolve(caller, request.template, projectName)
        : null;
    return this.#cloneSource(caller, git, {
      projectId: project.id,
      templateRules: template?.definition.egressRules ?? null,
    });
  }

  /** Copies a cloned commit's files into a new shell's `/workspace`, and records which commit. */
  async #placeSource(
    caller: Caller,
    row: ShellRow,
    git: ShellGitSource,
    source: ClonedSource,
  ): Promise<void> {
    await this.#backendCall(row, (b) => b.files.importTar(row.id, "/workspace", source.archive));
    await this.deps.activity.recordFor(
      caller,
      "shell.git_source",
      { type: "shell", id: row.id },
      {
        repo: git.repo,
        ref: git.ref,
        ...(git.subpath ? { subpath: git.subpath } : {}),
        commit: source.commit,
        files: source.files,
      },
    );
  }

  async #placeTemplateFiles(row: ShellRow, definition: TemplateDefinition): Promise<void> {
    for (const file of placedFiles(definition)) {
      const data = new TextEncoder().encode(file.content);
      await this.#backendCall(row, (b) => b.files.write(row.id, file.path, data, file.mode));
    }
  }

  /**
   * Makes `count` shells from the parent's filesystem at one instant: the parent's backend
   * captures it (freezing a running parent briefly), then each new shell is a `create` of its own
   * — admission, limits, history — with the parent's settings and that capture as its disk. Shells
   * made before a refusal are kept and returned with it; a fork that makes none answers the
   * refusal. The capture is dropped at the end either way.
   */
  async fork(caller: Caller, idOrName: string, body: ShellFork): Promise<ShellForkResult> {
    const found = await this.#find(caller.orgId, idOrName);
    const backend = this.deps.runtimes.byName(found.backend);
    if (!backend?.captureFork || !backend.releaseFork)
      throw new AppError(
        "runtime_unavailable",
        `Shells of the ${found.runtime} runtime cannot be forked on this server: the ${found.backend} backend does not capture filesystem state.`,
        { runtime: found.runtime, missing: "filesystem capture in the backend" },
      );
    const { parent, capture } = await this.#lock.run(found.id, async () => {
      const row = await this.#find(caller.orgId, found.id);
      if (!FORKABLE.includes(row.status as ShellStatus))
        throw new AppError(
          "invalid_state",
          `Cannot fork shell ${row.name} while it is ${row.status}.`,
          { status: row.status, legalIn: FORKABLE },
        );
      return {
        parent: row,
        capture: await this.#backendCall(row, (b) => b.captureFork!(row.id)),
      };
    });
    const shells: Shell[] = [];
    const failed: ShellForkResult["failed"] = [];
    let firstError: unknown;
    try {
      await this.deps.activity.record({
        orgId: caller.orgId,
        actor: actorOf(caller),
        action: "shell.fork",
        target: { type: "shell", id: parent.id },
        outcome: "success",
        details: {
          count: body.count,
          method: capture.method,
          bytesPerShell: capture.sizeBytes,
          parentFrozenMs: capture.frozenMs,
        },
      });
      const input = this.#records.forkInput(parent);
      const origin = { parentId: parent.id, captureId: capture.captureId };
      for (let index = 0; index < body.count; index++) {
        const name = body.names?.[index];
        try {
          shells.push(await this.create(caller, { ...input, ...(name ? { name } : {}) }, origin));
        } catch (error) {
          firstError = error;
          failed.push({
            index,
            name: name ?? null,
            code: error instanceof AppError ? error.code : "internal",
            message: error instanceof AppError ? error.message : "the shell could not be made",
          });
          break;
        }
      }
    } finally {
      await backend
        .releaseFork(capture.captureId)
        .catch((error: unknown) =>
          this.deps.logger.error(
            { err: error, captureId: capture.captureId },
            "dropping a fork capture failed",
          ),
        );
    }
    if (shells.length === 0) throw firstError;
    const megabytes = (capture.sizeBytes / (1024 * 1024)).toFixed(1);
    return {
      parent: parent.id,
      shells,
      failed,
      state: {
        filesystem: {
          method: capture.method,
          bytesPerShell: capture.sizeBytes,
          parentFrozenMs: capture.frozenMs,
        },
        memory: "not_copied",
      },
      message:
        `${shells.length} of ${body.count} shells forked from ${parent.name}: filesystem ` +
        FORK_FILESYSTEM_WORDS[capture.method](megabytes) +
        `, parent frozen ${Math.round(capture.frozenMs)} ms; processes and memory not copied` +
        (failed[0] ? `; stopped at shell ${failed[0].index + 1}: ${failed[0].message}` : ""),
    };
  }

  /**
   * Replaces a running `internet` shell's allowlist. Narrowing applies at once; widening goes
   * through the org's `egress_change` gate (a pending approval runs this again, as its requester,
   * once granted). The org's policy still bounds whatever the shell's list says.
   */
  async changeEgress(
    caller: Caller,
    idOrName: string,
    body: ShellEgressChange,
    clearance?: GateClearance,
  ): Promise<Shell | PendingApproval> {
    const found = await this.#find(caller.orgId, idOrName);
    return this.#lock.run(found.id, async () => {
      const row = await this.#find(caller.orgId, found.id);
      // A sealed or localhost shell already reaches nothing outside: "deny all" is what it has.
      if (row.network !== "internet" && body.egress.mode === "deny_all")
        return this.get(caller, row.id);
      if (row.network !== "internet" || !this.deps.egress)
        throw new AppError(
          "invalid_state",
          `Shell ${row.name} has network ${row.network}: only internet shells have an egress allowlist.`,
          { network: row.network },
        );
      const old = row.egress ? (JSON.parse(row.egress) as ShellEgress) : null;
      const next = body.egress;
      const widening = !isNarrowing(old, next);
      let cleared = clearance;
      if (!cleared && widening) {
        const decision = await this.#gate(
          caller,
          row,
          "egress_change",
          body.confirm,
          { egress: next },
          {
            summary: `widen the egress allowlist of shell ${row.name}`,
            diff: shellEgressDiff(old, next),
          },
        );
        if ("pending" in decision) return decision.pending;
        cleared = decision.clearance;
      }
      await setShellEgress(this.deps.db, row.org_id, row.id, JSON.stringify(next));
      this.deps.egress.update(row.id, next);
      await this.#recordAction(caller, row.id, "egress_change", "success", {
        from: old,
        to: next,
        widening,
        ...cleared,
      });
      return this.get(caller, row.id);
    });
  }

  /**
   * The bindings a new shell is granted: each named binding of the caller's org (an unknown one,
   * or another org's, is `binding_not_found`), on a backend that can route to the egress proxy.
   */
  async #grantsOf(
    caller: Caller,
    names: readonly string[],
    backend: SandboxBackend,
  ): Promise<BindingGrant[]> {
    if (names.length === 0) return [];
    if (!this.deps.bindings || !this.deps.egress)
      throw new AppError(
        "bindings_unavailable",
        "Service bindings need the egress proxy, which this server does not run.",
      );
    const grants = await this.deps.bindings.grantsFor(caller.orgId, names);
    if (!backend.networkModes?.includes("internet"))
      throw new AppError(
        "bindings_unavailable",
        `Service bindings need a backend that routes to the egress proxy; ${backend.name} does not. Use the container runtime.`,
        { backend: backend.name },
      );
    return grants;
  }

  /** Starts (or finds) the egress proxy of a shell that has one: `internet`, or granted bindings. */
  async #egressOf(row: ShellRow): Promise<SandboxEgress | null> {
    const settings = egressSettingsOf(row);
    if (!settings) return null;
    if (!this.deps.egress) throw new AppError("network_mode_unavailable", "No egress proxy here.");
    return this.deps.egress.ensure(row.org_id, row.id, settings);
  }

  /** The `egress` field of a sandbox spec for the shell (none when it has no proxy). */
  async #egressSpecOf(row: ShellRow): Promise<{ egress?: SandboxEgress }> {
    const egress = await this.#egressOf(row);
    return egress ? { egress } : {};
  }

  /** A page of the org's shells, newest first. Deleted shells only when asked for by status. */
  async list(caller: Caller, query: RouteQuery<"listShells">): Promise<Page<Shell>> {
    const cursor = query.cursor ? decodeCursor(query.cursor, shellCursor) : undefined;
    const rows = await listShells(this.deps.db, caller.orgId, {
      ...(query.status ? { status: query.status } : {}),
      ...(query.language ? { language: query.language } : {}),
      ...(query.runtime ? { runtime: query.runtime } : {}),
      ...(cursor ? { after: { createdAt: cursor.c, id: cursor.i } } : {}),
      limit: query.limit + 1,
    });
    const items = rows.slice(0, query.limit).map((row) => this.#records.toShell(row));
    const last = items.at(-1);
    return {
      items,
      nextCursor:
        rows.length > query.limit && last ? encodeCursor({ c: last.createdAt, i: last.id }) : null,
    };
  }

  /** One of the org's shells by id, as the API shows it; null when there is none. */
  async describe(orgId: string, shellId: string): Promise<Shell | null> {
    const row = await findShell(this.deps.db, orgId, shellId);
    return row && row.id === shellId ? this.#records.toShell(row) : null;
  }

  /** One shell by id (deleted ones too) or by the name of a live one. Other orgs' shells are not found. */
  async get(caller: Caller, idOrName: string): Promise<Shell> {
    return this.#records.toShell(await this.#find(caller.orgId, idOrName));
  }

  /** Restore points of a shell, newest first. */
  async snapshots(caller: Caller, idOrName: string): Promise<Snapshot[]> {
    const row = await this.#find(caller.orgId, idOrName);
    if (row.status === "deleted") return [];
    return this.#backendCall(row, (backend) => backend.listSnapshots(row.id));
  }

  /**
   * A running shell of the caller's org and a way to call its backend with errors mapped to API
   * errors. For the file, terminal and interpreter services, which share the shell's checks.
   */
  runningSandbox(caller: Caller, idOrName: string, options: SandboxUse = {}) {
    return this.sandboxFor(caller.orgId, idOrName, options);
  }

  /**
   * Like `runningSandbox`, for work authorised earlier (a terminal credential names org and shell).
   * `env` includes the secret environment (it is the environment processes start with); `secrets`
   * are the values to mask in anything stored or echoed.
   */
  async sandboxFor(orgId: string, idOrName: string, options: SandboxUse = {}) {
    const row = await this.#find(orgId, idOrName);
    if (!(options.readWhilePaused && row.status === "paused")) this.#assertRunning(row);
    const env = JSON.parse(row.env) as Record<string, string>;
    const secretEnv = this.#records.secretEnv(row);
    return {
      shellId: row.id,
      name: row.name,
      language: row.language as Shell["language"],
      network: row.network as Shell["network"],
      env: { ...env, ...secretEnv },
      secrets: this.#records.secretsOf({ ...env }, secretEnv),
      call: <T>(fn: (backend: SandboxBackend) => Promise<T>) => this.#backendCall(row, fn),
    };
  }

  /** Throws what `exec` would throw before running anything: unknown shell, or not running. */
  async requireRunning(caller: Caller, idOrName: string): Promise<void> {
    this.#assertRunning(await this.#find(caller.orgId, idOrName));
  }

  /**
   * Runs a command in a running shell. A non-zero exit is a result; the sandbox's kill reason is
   * reported. The result carries the command's own output as it is; streamed output (`hooks`),
   * the log entry and the history have secret values replaced by `[redacted]`, because they are
   * stored or relayed.
   */
  async exec(
    caller: Caller,
    idOrName: string,
    request: ExecRequest,
    hooks: SandboxExecOptions = {},
  ): Promise<ExecResult> {
    const row = await this.#find(caller.orgId, idOrName);
    this.#assertRunning(row);
    const plainEnv = { ...(JSON.parse(row.env) as Record<string, string>), ...request.env };
    const secretEnv = { ...this.#records.secretEnv(row), ...request.secretEnv };
    const secrets = this.#records.secretsOf(plainEnv, secretEnv);
    const streamed = redactingOutput(hooks, secrets);
    const started = performance.now();
    const ending = new AbortController();
    this.#execs.add(ending);
    let result: ExecResult;
    try {
      result = await this.#backendCall(row, (backend) =>
        backend.exec(
          row.id,
          {
            command: request.command,
            env: { ...plainEnv, ...secretEnv },
            cwd: request.cwd ?? SHELL_DEFAULTS.cwd,
            stdin: request.stdin,
            timeoutMs: request.timeoutMs ?? SHELL_DEFAULTS.execTimeoutMs,
            maxOutputBytes: SHELL_DEFAULTS.maxOutputBytes,
          },
          {
            ...streamed.hooks,
            signal: hooks.signal ? AbortSignal.any([hooks.signal, ending.signal]) : ending.signal,
          },
        ),
      );
    } finally {
      this.#execs.delete(ending);
    }
    this.deps.metrics?.observeExec(
      row.runtime,
      (performance.now() - started) / 1000,
      result.killReason,
    );
    await streamed.flush();
    const entry = describeExec(request, result, secrets);
    // The log line and the event commit together.
    await this.deps.activity.record(
      {
        orgId: caller.orgId,
        actor: actorOf(caller),
        action: "shell.exec",
        target: { type: "shell", id: row.id },
        outcome: "success",
        details: entry.details,
      },
      (trx) => this.#log(row, "exec", entry.logLine, trx),
    );
    return result;
  }

  /**
   * Ends every exec in flight: each ends as if its caller aborted it, with `reason` as its kill
   * reason (a shutdown whose grace is over ends them with `host_restart`). Returns how many.
   */
  endExecs(reason: KillReason): number {
    for (const exec of this.#execs) exec.abort(reason);
    return this.#execs.size;
  }

  /**
   * Runs a lifecycle capability, if legal in the shell's state. Destructive ones pass the org's
   * approval gate first; under `approvers` the answer is a pending approval instead of a result.
   * `clearance` is set only when a granted approval runs the action.
   */
  async act(
    caller: Caller,
    idOrName: string,
    capability: Capability,
    options: ActionRequest,
    clearance?: GateClearance,
  ): Promise<ActionResult | PendingApproval> {
    const found = await this.#find(caller.orgId, idOrName);
    return this.#lock.run(found.id, async () => {
      const row = await this.#find(caller.orgId, found.id);
      const legal = CAPABILITY_LEGAL_IN[capability];
      if (!legal.includes(row.status as ShellStatus)) {
        await this.#recordAction(caller, row.id, capability, "failure", {
          reason: `not legal while ${row.status}`,
        });
        throw new AppError(
          "invalid_state",
          `Cannot ${capability} shell ${row.name} while it is ${row.status}.`,
          { status: row.status, capability, legalIn: legal },
        );
      }
      // Starting a shell (or bringing one in `error` back) makes it count against the caps and the
      // host's memory again.
      const starts = capability === "start" || (capability === "restart" && row.status === "error");
      if (starts) {
        try {
          await this.deps.caps?.check(row.org_id, row.project_id, row.runtime);
          await this.#pools.check(row.org_id, row.project_id, row.runtime, row.region);
        } catch (error) {
          await this.#recordAction(caller, row.id, capability, "denied", {
            reason: describeError(error),
          });
          throw error;
        }
      }
      let cleared = clearance;
      if (!cleared && GATED_CAPABILITIES.has(capability)) {
        const { confirm: _confirm, ...request } = options;
        const decision = await this.#gate(
          caller,
          row,
          capability as ShellGatedAction,
          options.confirm,
          request,
        );
        if ("pending" in decision) return decision.pending;
        cleared = decision.clearance;
      }
      let ticket: CapacityTicket | undefined;
      try {
        if (starts) ticket = await this.#admitStart(caller, row, capability);
        if (ENDS_PROCESSES.has(capability)) await this.deps.metering?.settle(row.id);
        const result = await performCapability(this.#actions, caller, row, capability, options);
        await this.#recordAction(caller, row.id, capability, "success", {
          ...result.details,
          ...cleared,
        });
        return {
          capability,
          message: result.message,
          shell: await this.get(caller, row.id),
          ...result.extra,
        };
      } catch (error) {
        if (error instanceof AppError && error.code === "capacity_unavailable") throw error;
        await this.#recordAction(caller, row.id, capability, "failure", {
          error: describeError(error),
          ...cleared,
        });
        throw error;
      } finally {
        ticket?.release();
      }
    });
  }

  /**
   * The host's capacity for a stopped (or failed) shell about to start: its memory counts again.
   * A refusal is recorded as denied and changes nothing.
   */
  async #admitStart(
    caller: Caller,
    row: ShellRow,
    capability: Capability,
  ): Promise<CapacityTicket | undefined> {
    const { memoryMb } = JSON.parse(row.resources) as { memoryMb: number };
    try {
      return await this.deps.hostGate?.admit(memoryMb);
    } catch (error) {
      await this.#recordAction(caller, row.id, capability, "denied", {
        reason: describeError(error),
      });
      throw error;
    }
  }

  /** A listed approver grants a pending approval; the gate runs it as its requester. */
  async grantApproval(caller: Caller, approvalId: string, reason: string): Promise<Approval> {
    return this.deps.gate.grant(caller, approvalId, reason);
  }

  /** Deletes a shell: the backend reclaims every per-shell object; the record stays as `deleted`. */
  async delete(
    caller: Caller,
    idOrName: string,
    confirm?: string,
    clearance?: GateClearance,
  ): Promise<Shell | PendingApproval> {
    const found = await this.#find(caller.orgId, idOrName);
    return this.#lock.run(found.id, async () => {
      const row = await this.#find(caller.orgId, found.id);
      if (row.status === "deleted") return this.#records.toShell(row);
      let cleared = clearance;
      if (!cleared) {
        const decision = await this.#gate(caller, row, "delete", confirm, {});
        if ("pending" in decision) return decision.pending;
        cleared = decision.clearance;
      }
      const backend = this.deps.runtimes.byName(row.backend);
      if (backend) {
        // Recorded before the sandbox goes: a crash from here on leaves a delete the next start
        // finishes, never a shell whose sandbox is half gone.
        await this.#setState(row, { delete_requested_by: caller.actor.id });
        try {
          await this.deps.metering?.settle(row.id);
          await backend.destroy(row.id);
          await this.deps.egress?.stop(row.id);
        } catch (error) {
          await this.#setState(row, { delete_requested_by: null });
          await this.#recordAction(caller, row.id, "delete", "failure", {
            error: describeError(error),
          });
          throw toApiError(error, row.id, this.deps.logger);
        }
      }
      await this.#setState(row, {
        status: "deleted",
        status_reason: `deleted by ${caller.actor.id}`,
        deleted_at: nowIso(),
      });
      await forgetShellSnapshots(this.deps.db, row.org_id, row.id);
      await this.#log(row, "system", "deleted: every per-shell object reclaimed");
      await this.deps.activity.record({
        orgId: caller.orgId,
        actor: actorOf(caller),
        action: "shell.delete",
        target: { type: "shell", id: row.id },
        outcome: "success",
        details: { name: row.name, ...cleared },
      });
      // What waited for an approver on this shell can never run now.
      await this.deps.gate.closePending(
        row.org_id,
        row.id,
        actorOf(caller),
        `the shell ${row.name} was deleted`,
      );
      return this.get(caller, row.id);
    });
  }

  /**
   * Stops a running shell because its project reached a period cap: running execs end with kill
   * reason `quota`, the shell's status reason names the cap, and the stop is in the history as
   * the control plane's. False when the shell was not running (any more).
   */
  async stopForQuota(orgId: string, shellId: string, why: QuotaStop): Promise<boolean> {
    return this.#stopFor(orgId, shellId, "quota", why.reason, why.details);
  }

  /**
   * Stops one running shell that moved more bytes through its egress proxy than its org's
   * `egress.maxBytes` (kill reason `egress_limit`), as the egress service reports it; its proxy
   * has already ended its connections. False when it was not running any more.
   */
  async stopForEgressLimit(
    orgId: string,
    shellId: string,
    usage: { bytes: number; maxBytes: number },
  ): Promise<boolean> {
    return this.#stopFor(
      orgId,
      shellId,
      "egress_limit",
      `moved ${usage.bytes} bytes through its egress proxy; the org allows ${usage.maxBytes}`,
      usage,
    );
  }

  /** Stops a running shell for a limit, with its kill reason, as the system. */
  async #stopFor(
    orgId: string,
    shellId: string,
    reason: "quota" | "egress_limit",
    words: string,
    details: Record<string, unknown>,
  ): Promise<boolean> {
    return this.#lock.run(shellId, async () => {
      const row = await findShell(this.deps.db, orgId, shellId);
      if (!row || row.status !== "running") return false;
      await this.deps.metering?.settle(row.id);
      await this.#backendCall(row, (backend) => backend.stop(row.id, reason));
      await this.#setState(row, { status: "stopped", status_reason: `${reason}: ${words}` });
      await this.#log(row, "system", `stopped (kill reason ${reason}): ${words}`);
      await this.deps.activity.record({
        orgId,
        actor: SYSTEM_ACTOR,
        action: "shell.action.stop",
        target: { type: "shell", id: row.id },
        outcome: "success",
        details: { reason, ...details },
      });
      return true;
    });
  }

  /** See `Reconciler.reconcile`. */
  reconcile(): Promise<ReconcileCounts> {
    return this.reconciler.reconcile();
  }

  /** See `Reconciler.expire`. */
  expire(): Promise<number> {
    return this.reconciler.expire();
  }

  #assertRunning(row: ShellRow): void {
    if (row.status === "paused")
      throw new AppError(
        "shell_paused",
        `Shell ${row.name} is paused: its processes are frozen and it runs nothing until resumed.`,
        { status: row.status, hint: "resume it with the `resume` action" },
      );
    if (row.status !== "running") {
      throw new AppError(
        "invalid_state",
        `Shell ${row.name} is ${row.status}; exec needs a running shell.`,
        {
          status: row.status,
          hint: row.status === "stopped" ? "start it with the `start` action" : undefined,
        },
      );
    }
  }

  async #gate(
    caller: Caller,
    row: ShellRow,
    action: ShellGatedAction,
    confirm: string | undefined,
    request: Record<string, unknown>,
    context: ApprovalContext | null = null,
  ) {
    try {
      return await this.deps.gate.check(caller, row, action, confirm, request, context);
    } catch (error) {
      await this.#recordAction(caller, row.id, action, "denied", { reason: describeError(error) });
      throw error;
    }
  }

  #recordAction(
    caller: Caller,
    shellId: string,
    capability: Capability | "delete" | "egress_change" | "binding_attach",
    outcome: "success" | "failure" | "denied",
    details: Record<string, unknown>,
  ) {
    return recordShellAction(this.deps.activity, caller, shellId, capability, outcome, details);
  }

  async #find(orgId: string, idOrName: string): Promise<ShellRow> {
    const row = await findShell(this.deps.db, orgId, idOrName);
    if (!row) throw new AppError("shell_not_found", `No shell ${idOrName}.`, { id: idOrName });
    return row;
  }

  async #setState(row: ShellRow, fields: ShellStateFields): Promise<void> {
    await setShellState(this.deps.db, row.org_id, row.id, fields);
  }

  async #log(
    row: ShellRow,
    kind: LogEntry["kind"],
    message: string,
    trx?: Kysely<Database>,
  ): Promise<void> {
    await appendShellLog(
      this.deps.db,
      row.org_id,
      row.id,
      { kind, message, retention: SHELL_DEFAULTS.logRetention },
      trx,
    );
  }

  #backendCall<T>(row: ShellRow, fn: (backend: SandboxBackend) => Promise<T>): Promise<T> {
    return callBackend(this.deps.runtimes.byName(row.backend), row, fn, this.deps.logger);
  }
}
