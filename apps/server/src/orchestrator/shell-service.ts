import {
  CAPABILITY_LEGAL_IN,
  type ActionRequest,
  type ActionResult,
  type Capability,
  type ExecRequest,
  type ExecResult,
  type Approval,
  type LogEntry,
  type Page,
  type PendingApproval,
  RuntimeClass,
  type Scope,
  type ResolvedResources,
  type RouteBody,
  type RouteQuery,
  type Shell,
  type ShellStatus,
  type Snapshot,
} from "@shells/contract";
import {
  SandboxError,
  type SandboxBackend,
  type SandboxExecOptions,
  type SandboxInfo,
} from "@shells/sandbox";
import { sql, type Kysely, type Selectable } from "kysely";
import type { FastifyBaseLogger as Logger } from "fastify";
import { z } from "zod";
import { AppError } from "../errors.js";
import { actorOf, resolveCaller, type Caller } from "../iam/principal.js";
import { newId, nowIso } from "../ids.js";
import type { ActivityService } from "../services/activity-service.js";
import type { PolicyService } from "../services/policy-service.js";
import type { ApprovalGate, GateClearance } from "./approval-gate.js";
import { decodeCursor, encodeCursor } from "../services/cursor.js";
import type { Database, ShellTable } from "../store/schema.js";
import { redact, secretValues } from "../redact.js";
import { KeyedMutex } from "./keyed-mutex.js";
import type { RuntimeRegistry } from "./runtimes.js";

/** Defaults applied to every shell and exec; each can be overridden per request within the contract's bounds. */
export const SHELL_DEFAULTS = {
  resources: { cpu: 1, memoryMb: 512, pids: 256, diskMb: 1024 } satisfies ResolvedResources,
  execTimeoutMs: 60_000,
  maxOutputBytes: 10 * 1024 * 1024,
  cwd: "/workspace",
  /** Newest log entries kept per shell; older ones are dropped. */
  logRetention: 2000,
  /** Characters of each exec's stdout and stderr kept in its log entry. */
  logExcerptChars: 2000,
} as const;

type ShellRow = Selectable<ShellTable> & { project_name: string };

const shellCursor = z.strictObject({ c: z.string(), i: z.string() });

/** What the service needs from the rest of the control plane. */
export interface ShellServiceDeps {
  db: Kysely<Database>;
  activity: ActivityService;
  runtimes: RuntimeRegistry;
  logger: Logger;
  region: string;
  policies: PolicyService;
  gate: ApprovalGate;
}

const GATED: ReadonlySet<Capability> = new Set(["stop", "wipe_state", "reinstall_os"]);

function toShell(row: ShellRow): Shell {
  return {
    id: row.id,
    name: row.name,
    project: row.project_name,
    status: row.status as ShellStatus,
    statusReason: row.status_reason,
    language: row.language as Shell["language"],
    runtime: row.runtime as Shell["runtime"],
    network: row.network as Shell["network"],
    region: row.region,
    resources: JSON.parse(row.resources) as ResolvedResources,
    envKeys: Object.keys(JSON.parse(row.env) as Record<string, string>).sort(),
    backend: row.backend,
    imageVersion: row.image_version,
    ttlSeconds: row.ttl_seconds,
    expiresAt: row.expires_at,
    createdAt: row.created_at,
    updatedAt: row.updated_at,
  };
}

/** A SYSTEM caller for work the control plane does on its own (TTL expiry, reconciliation). */
const SYSTEM_ACTOR = { type: "system", id: "control-plane" } as const;

/**
 * The orchestrator's shell lifecycle: validates against the state machine, drives the backend,
 * records state in the store and every step in the activity history. Lifecycle operations on one
 * shell are serialised; execs run concurrently.
 */
export class ShellService {
  readonly #lifecycle = new KeyedMutex();

  constructor(private readonly deps: ShellServiceDeps) {}

  /** Creates and starts a shell. Refuses classes this host cannot run, naming what is missing. */
  async create(caller: Caller, input: RouteBody<"createShell">): Promise<Shell> {
    const { db, activity } = this.deps;
    const policy = await this.deps.policies.get(caller.orgId);
    const strength = (r: RuntimeClass) => RuntimeClass.options.indexOf(r);
    const runtime =
      input.runtime ??
      (strength(policy.isolationFloor) > strength("container")
        ? policy.isolationFloor
        : "container");
    if (strength(runtime) < strength(policy.isolationFloor)) {
      throw new AppError(
        "below_isolation_floor",
        `This org runs shells in ${policy.isolationFloor} or stronger; ${runtime} is below that floor.`,
        {
          runtime,
          isolationFloor: policy.isolationFloor,
        },
      );
    }
    const region = input.region ?? this.deps.region;
    if (policy.allowedRegions.length > 0 && !policy.allowedRegions.includes(region)) {
      throw new AppError(
        "region_not_allowed",
        `Region ${region} is not allowed in this org; allowed: ${policy.allowedRegions.join(", ")}.`,
        {
          region,
          allowedRegions: policy.allowedRegions,
        },
      );
    }
    const network = input.network ?? policy.defaultNetwork;
    const placement = await this.deps.runtimes.backendFor(runtime);
    if ("refusal" in placement) {
      await activity.record({
        orgId: caller.orgId,
        actor: actorOf(caller),
        action: "shell.create",
        target: null,
        outcome: "failure",
        details: { runtime, reason: placement.refusal.reason },
      });
      throw new AppError(
        "runtime_unavailable",
        `This server cannot run ${runtime} shells: ${placement.refusal.reason}.`,
        {
          runtime,
          missing: placement.refusal.reason,
        },
      );
    }
    if (network === "internet") {
      throw new AppError(
        "network_mode_unavailable",
        "Network mode internet needs the egress proxy, which this server does not offer yet. Use sealed or localhost.",
        { network },
      );
    }
    const projectName = input.project ?? "default";
    const project = await db
      .selectFrom("projects")
      .select(["id", "name"])
      .where("org_id", "=", caller.orgId)
      .where("name", "=", projectName)
      .executeTakeFirst();
    if (!project)
      throw new AppError("project_not_found", `No project named ${projectName} in this org.`);

    const id = newId("sh", 10);
    const name = input.name ?? id;
    const resources: ResolvedResources = { ...SHELL_DEFAULTS.resources, ...input.resources };
    const env = input.env ?? {};
    const now = nowIso();
    const row: ShellTable = {
      id,
      org_id: caller.orgId,
      project_id: project.id,
      name,
      status: "provisioning",
      status_reason: null,
      language: input.language,
      runtime,
      network,
      region,
      resources: JSON.stringify(resources),
      env: JSON.stringify(env),
      backend: placement.backend.name,
      image_version: null,
      ttl_seconds: input.ttlSeconds ?? null,
      expires_at: input.ttlSeconds
        ? new Date(Date.now() + input.ttlSeconds * 1000).toISOString()
        : null,
      created_at: now,
      updated_at: now,
      deleted_at: null,
    };
    try {
      await db.insertInto("shells").values(row).execute();
    } catch (error) {
      if (
        error instanceof Error &&
        /UNIQUE constraint failed: shells\.org_id, shells\.name/.test(error.message)
      ) {
        throw new AppError("name_taken", `A shell named ${name} already exists in this org.`, {
          name,
        });
      }
      throw error;
    }
    return this.#lifecycle.run(id, async () => {
      try {
        const info = await placement.backend.create({
          shellId: id,
          language: input.language,
          runtime,
          network,
          resources,
          env,
        });
        await this.#setState(id, {
          status: "running",
          status_reason: null,
          image_version: info.imageVersion,
        });
        await this.#log(
          caller.orgId,
          id,
          "system",
          `created (${runtime} on ${placement.backend.name}, image ${info.imageVersion ?? "n/a"})`,
        );
        await activity.record({
          orgId: caller.orgId,
          actor: actorOf(caller),
          action: "shell.create",
          target: { type: "shell", id },
          outcome: "success",
          details: {
            name,
            language: input.language,
            runtime,
            network,
            region,
            backend: placement.backend.name,
          },
        });
      } catch (error) {
        await this.#setState(id, {
          status: "error",
          status_reason: `provisioning failed: ${describe(error)}`,
        });
        await activity.record({
          orgId: caller.orgId,
          actor: actorOf(caller),
          action: "shell.create",
          target: { type: "shell", id },
          outcome: "failure",
          details: { name, runtime, error: describe(error) },
        });
        throw this.#mapBackendError(error, id);
      }
      return this.get(caller, id);
    });
  }

  /** A page of the org's shells, newest first. Deleted shells only when asked for by status. */
  async list(caller: Caller, query: RouteQuery<"listShells">): Promise<Page<Shell>> {
    let q = this.#select().where("shells.org_id", "=", caller.orgId);
    q = query.status
      ? q.where("shells.status", "=", query.status)
      : q.where("shells.status", "!=", "deleted");
    if (query.language) q = q.where("shells.language", "=", query.language);
    if (query.runtime) q = q.where("shells.runtime", "=", query.runtime);
    if (query.cursor) {
      const { c, i } = decodeCursor(query.cursor, shellCursor);
      q = q.where((eb) =>
        eb.or([
          eb("shells.created_at", "<", c),
          eb.and([eb("shells.created_at", "=", c), eb("shells.id", "<", i)]),
        ]),
      );
    }
    const rows = await q
      .orderBy("shells.created_at", "desc")
      .orderBy("shells.id", "desc")
      .limit(query.limit + 1)
      .execute();
    const items = rows.slice(0, query.limit).map(toShell);
    const last = items.at(-1);
    return {
      items,
      nextCursor:
        rows.length > query.limit && last ? encodeCursor({ c: last.createdAt, i: last.id }) : null,
    };
  }

  /** One shell by id (deleted ones too) or by the name of a live one. Other orgs' shells are not found. */
  async get(caller: Caller, idOrName: string): Promise<Shell> {
    return toShell(await this.#find(caller.orgId, idOrName));
  }

  /** Restore points of a shell, newest first. */
  async snapshots(caller: Caller, idOrName: string): Promise<Snapshot[]> {
    const row = await this.#find(caller.orgId, idOrName);
    if (row.status === "deleted") return [];
    return this.#backendCall(row, (backend) => backend.listSnapshots(row.id));
  }

  /** Runs a command in a running shell. A non-zero exit is a result; the sandbox's kill reason is reported. */
  /**
   * A running shell of the caller's org and a way to call its backend with errors mapped to API
   * errors. For the file, terminal and interpreter services, which share the shell's checks.
   */
  runningSandbox(caller: Caller, idOrName: string) {
    return this.sandboxFor(caller.orgId, idOrName);
  }

  /** Like `runningSandbox`, for work authorised earlier (a terminal credential names org and shell). */
  async sandboxFor(orgId: string, idOrName: string) {
    const row = await this.#find(orgId, idOrName);
    this.#assertRunning(row);
    return {
      shellId: row.id,
      name: row.name,
      language: row.language as Shell["language"],
      env: JSON.parse(row.env) as Record<string, string>,
      call: <T>(fn: (backend: SandboxBackend) => Promise<T>) => this.#backendCall(row, fn),
    };
  }

  /** Throws what `exec` would throw before running anything: unknown shell, or not running. */
  async requireRunning(caller: Caller, idOrName: string): Promise<void> {
    this.#assertRunning(await this.#find(caller.orgId, idOrName));
  }

  #assertRunning(row: ShellRow): void {
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

  async exec(
    caller: Caller,
    idOrName: string,
    request: ExecRequest,
    hooks: SandboxExecOptions = {},
  ): Promise<ExecResult> {
    const row = await this.#find(caller.orgId, idOrName);
    this.#assertRunning(row);
    const result = await this.#backendCall(row, (backend) =>
      backend.exec(
        row.id,
        {
          command: request.command,
          env: { ...(JSON.parse(row.env) as Record<string, string>), ...request.env },
          cwd: request.cwd ?? SHELL_DEFAULTS.cwd,
          stdin: request.stdin,
          timeoutMs: request.timeoutMs ?? SHELL_DEFAULTS.execTimeoutMs,
          maxOutputBytes: SHELL_DEFAULTS.maxOutputBytes,
        },
        hooks,
      ),
    );
    const env = { ...(JSON.parse(row.env) as Record<string, string>), ...request.env };
    const secrets = secretValues(env);
    const summary = redact(request.command.join(" ").slice(0, 300), secrets);
    const excerpt = (label: string, text: string) =>
      text
        ? `\n${label}: ${redact(text.slice(0, SHELL_DEFAULTS.logExcerptChars), secrets)}${text.length > SHELL_DEFAULTS.logExcerptChars ? " […]" : ""}`
        : "";
    await this.#log(
      caller.orgId,
      row.id,
      "exec",
      `$ ${summary} → exit ${result.exitCode}${result.killReason ? ` (killed: ${result.killReason})` : ""} in ${Math.round(result.durationMs)} ms, ${result.stdout.length} B stdout, ${result.stderr.length} B stderr` +
        excerpt("stdout", result.stdout) +
        excerpt("stderr", result.stderr),
    );
    await this.deps.activity.record({
      orgId: caller.orgId,
      actor: actorOf(caller),
      action: "shell.exec",
      target: { type: "shell", id: row.id },
      outcome: "success",
      details: {
        command: summary,
        exitCode: result.exitCode,
        durationMs: Math.round(result.durationMs),
        ...(result.killReason ? { killReason: result.killReason } : {}),
        ...(request.env ? { envKeys: Object.keys(request.env) } : {}),
      },
    });
    return result;
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
    return this.#lifecycle.run(found.id, async () => {
      const row = await this.#find(caller.orgId, found.id);
      const legal = CAPABILITY_LEGAL_IN[capability];
      if (!legal.includes(row.status as ShellStatus)) {
        await this.#recordAction(caller, row.id, capability, "failure", {
          reason: `not legal while ${row.status}`,
        });
        throw new AppError(
          "invalid_state",
          `Cannot ${capability} shell ${row.name} while it is ${row.status}.`,
          {
            status: row.status,
            capability,
            legalIn: legal,
          },
        );
      }
      let cleared = clearance;
      if (!cleared && GATED.has(capability)) {
        const { confirm: _confirm, ...request } = options;
        const decision = await this.#gate(
          caller,
          row,
          capability as "stop" | "wipe_state" | "reinstall_os",
          options.confirm,
          request,
        );
        if ("pending" in decision) return decision.pending;
        cleared = decision.clearance;
      }
      try {
        const result = await this.#perform(caller, row, capability, options);
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
        await this.#recordAction(caller, row.id, capability, "failure", {
          error: describe(error),
          ...cleared,
        });
        throw error;
      }
    });
  }

  /**
   * A listed approver grants a pending approval: the action runs as its original requester (with
   * the requester's permissions as they are now), and the outcome is stored on the approval.
   */
  async grantApproval(caller: Caller, approvalId: string, reason: string): Promise<Approval> {
    const row = await this.deps.gate.decide(caller, approvalId, "granted", reason);
    const key = row.requested_key_id
      ? await this.deps.db
          .selectFrom("api_keys")
          .select(["scopes", "revoked_at"])
          .where("id", "=", row.requested_key_id)
          .executeTakeFirst()
      : undefined;
    const requester =
      key && !key.revoked_at
        ? await resolveCaller(
            this.deps.db,
            { orgId: row.org_id, type: row.requested_by_type, id: row.requested_by_id },
            { keyId: row.requested_key_id, scopes: JSON.parse(key.scopes) as Scope[] },
          )
        : row.requested_key_id === null
          ? await resolveCaller(
              this.deps.db,
              { orgId: row.org_id, type: row.requested_by_type, id: row.requested_by_id },
              { keyId: null, scopes: ["shells:instances:control"] },
            )
          : null;
    const clearance: GateClearance = { approvalId: row.id, approvedBy: caller.actor.id };
    let outcome = "success";
    if (!requester || !requester.scopes.includes("shells:instances:control")) {
      outcome = "forbidden: the requester no longer holds shells:instances:control";
    } else {
      try {
        const request = JSON.parse(row.request) as ActionRequest;
        if (row.action === "delete")
          await this.delete(requester, row.shell_id, undefined, clearance);
        else await this.act(requester, row.shell_id, row.action, request, clearance);
      } catch (error) {
        outcome =
          error instanceof AppError
            ? `${error.code}: ${error.message}`
            : `failed: ${describe(error)}`;
      }
    }
    await this.deps.gate.recordOutcome(row.id, outcome);
    return this.deps.gate.get(caller, row.id);
  }

  /** Deletes a shell: the backend reclaims every per-shell object; the record stays as `deleted`. */
  async delete(
    caller: Caller,
    idOrName: string,
    confirm?: string,
    clearance?: GateClearance,
  ): Promise<Shell | PendingApproval> {
    const found = await this.#find(caller.orgId, idOrName);
    return this.#lifecycle.run(found.id, async () => {
      const row = await this.#find(caller.orgId, found.id);
      if (row.status === "deleted") return toShell(row);
      let cleared = clearance;
      if (!cleared) {
        const decision = await this.#gate(caller, row, "delete", confirm, {});
        if ("pending" in decision) return decision.pending;
        cleared = decision.clearance;
      }
      const backend = this.deps.runtimes.byName(row.backend);
      if (backend) {
        try {
          await backend.destroy(row.id);
        } catch (error) {
          await this.#recordAction(caller, row.id, "delete", "failure", { error: describe(error) });
          throw this.#mapBackendError(error, row.id);
        }
      }
      const now = nowIso();
      await this.#setState(row.id, {
        status: "deleted",
        status_reason: `deleted by ${caller.actor.id}`,
        deleted_at: now,
      });
      await this.#log(caller.orgId, row.id, "system", "deleted: every per-shell object reclaimed");
      await this.deps.activity.record({
        orgId: caller.orgId,
        actor: actorOf(caller),
        action: "shell.delete",
        target: { type: "shell", id: row.id },
        outcome: "success",
        details: { name: row.name, ...cleared },
      });
      return this.get(caller, row.id);
    });
  }

  /**
   * Brings the store and the backends into agreement after a start: sandboxes the store does not
   * know (or knows as deleted) are destroyed; shells whose sandbox is gone become `error`, and
   * shells whose sandbox stopped become `stopped`.
   */
  async reconcile(): Promise<{ adopted: number; destroyed: number; lost: number }> {
    const { db } = this.deps;
    const counts = { adopted: 0, destroyed: 0, lost: 0 };
    for (const backend of this.deps.runtimes.backends) {
      const held = new Map((await backend.list()).map((s) => [s.shellId, s]));
      const rows = await db
        .selectFrom("shells")
        .selectAll()
        .where("backend", "=", backend.name)
        .where("status", "!=", "deleted")
        .execute();
      const live = new Set(rows.map((r) => r.id));
      for (const [shellId] of held) {
        if (!live.has(shellId)) {
          await backend.destroy(shellId);
          counts.destroyed += 1;
        }
      }
      for (const row of rows) {
        const info = held.get(row.id);
        if (!info) {
          if (row.status === "running" || row.status === "provisioning") {
            await this.#setState(row.id, {
              status: "error",
              status_reason: "sandbox lost: the host or backend restarted (host_restart)",
            });
            await this.#systemEvent(row.org_id, row.id, "shell.reconcile", {
              result: "lost",
              previousStatus: row.status,
            });
            counts.lost += 1;
          }
          continue;
        }
        const status = info.state === "running" ? "running" : "stopped";
        if (status !== row.status) {
          await this.#setState(row.id, {
            status,
            status_reason: status === "stopped" ? "sandbox found stopped after a restart" : null,
            image_version: info.imageVersion,
          });
          await this.#systemEvent(row.org_id, row.id, "shell.reconcile", {
            result: status,
            previousStatus: row.status,
          });
        }
        counts.adopted += 1;
      }
    }
    return counts;
  }

  /** Stops running shells whose TTL has passed. */
  async expire(): Promise<number> {
    const due = await this.deps.db
      .selectFrom("shells")
      .select(["id", "org_id"])
      .where("status", "=", "running")
      .where("expires_at", "is not", null)
      .where("expires_at", "<=", nowIso())
      .execute();
    for (const shell of due) {
      await this.#lifecycle.run(shell.id, async () => {
        const backend = this.deps.runtimes.byName(
          (await this.#find(shell.org_id, shell.id)).backend,
        );
        await backend?.stop(shell.id).catch(() => undefined);
        await this.#setState(shell.id, { status: "stopped", status_reason: "ttl expired" });
        await this.#log(shell.org_id, shell.id, "system", "stopped: ttl expired");
        await this.#systemEvent(shell.org_id, shell.id, "shell.action.stop", {
          reason: "ttl expired",
        });
      });
    }
    return due.length;
  }

  async #perform(
    caller: Caller,
    row: ShellRow,
    capability: Capability,
    options: ActionRequest,
  ): Promise<{ message: string; details: Record<string, unknown>; extra: Partial<ActionResult> }> {
    const call = <T>(fn: (backend: SandboxBackend) => Promise<T>) => this.#backendCall(row, fn);
    const after = async (
      info: SandboxInfo,
      message: string,
      status: ShellStatus = info.state === "running" ? "running" : "stopped",
      reason: string | null = null,
    ) => {
      await this.#setState(row.id, {
        status,
        status_reason: reason,
        image_version: info.imageVersion,
      });
      await this.#log(row.org_id, row.id, "system", message);
    };
    switch (capability) {
      case "logs": {
        const logs = await this.#logs(row.id, options.tail ?? 200);
        return {
          message: `${logs.length} log entries`,
          details: { entries: logs.length },
          extra: { logs },
        };
      }
      case "restart": {
        const info = await call(async (backend) => {
          try {
            return await backend.restart(row.id);
          } catch (error) {
            // A sandbox the backend lost (status `error` after a host restart) is provisioned afresh.
            if (!(error instanceof SandboxError && error.code === "not_found")) throw error;
            return backend.create({
              shellId: row.id,
              language: row.language as Shell["language"],
              runtime: row.runtime as Shell["runtime"],
              network: row.network as Shell["network"],
              resources: JSON.parse(row.resources) as ResolvedResources,
              env: JSON.parse(row.env) as Record<string, string>,
            });
          }
        });
        await after(info, "restarted: every process ended, filesystem state kept");
        return {
          message: "restarted: every process ended, filesystem state kept",
          details: {},
          extra: {},
        };
      }
      case "snapshot": {
        const name =
          options.name ?? `snap-${new Date().toISOString().replace(/[-:.]/g, "").toLowerCase()}`;
        const snapshot = await call((backend) => backend.snapshot(row.id, name));
        await this.#log(
          row.org_id,
          row.id,
          "system",
          `snapshot ${name} taken (${snapshot.sizeBytes} bytes)`,
        );
        return {
          message: `snapshot ${name} taken`,
          details: { snapshot: name, sizeBytes: snapshot.sizeBytes },
          extra: { snapshot },
        };
      }
      case "restore": {
        const target =
          options.snapshot ?? (await call((backend) => backend.listSnapshots(row.id)))[0]?.name;
        if (!target)
          throw new AppError(
            "snapshot_not_found",
            `Shell ${row.name} has no snapshots to restore.`,
          );
        const snapshot = await call((backend) => backend.restore(row.id, target));
        await this.#log(row.org_id, row.id, "system", `restored to snapshot ${target}`);
        return {
          message: `restored to snapshot ${target}`,
          details: { snapshot: target },
          extra: { snapshot },
        };
      }
      case "reinstall_os": {
        const info = await call((backend) => backend.reinstallOs(row.id));
        await after(
          info,
          `reinstalled on image ${info.imageVersion ?? "n/a"}; /workspace kept`,
          row.status as ShellStatus,
        );
        return {
          message: `reinstalled on a fresh base image; /workspace kept`,
          details: { imageVersion: info.imageVersion },
          extra: {},
        };
      }
      case "stop": {
        const info = await call((backend) => backend.stop(row.id));
        await after(
          info,
          "stopped: every process ended; state kept",
          "stopped",
          `stopped by ${caller.actor.id}`,
        );
        return {
          message: "stopped: every process ended; filesystem state kept until delete",
          details: {},
          extra: {},
        };
      }
      case "start": {
        const info = await call((backend) => backend.start(row.id));
        await after(info, "started");
        return { message: "started", details: {}, extra: {} };
      }
      case "wipe_state": {
        const info = await call((backend) => backend.wipeState(row.id));
        await after(info, "filesystem state destroyed; sandbox intact", row.status as ShellStatus);
        return { message: "filesystem state destroyed, sandbox intact", details: {}, extra: {} };
      }
    }
  }

  async #gate(
    caller: Caller,
    row: ShellRow,
    action: "stop" | "wipe_state" | "reinstall_os" | "delete",
    confirm: string | undefined,
    request: Record<string, unknown>,
  ) {
    try {
      return await this.deps.gate.check(caller, row, action, confirm, request);
    } catch (error) {
      await this.#recordAction(caller, row.id, action, "denied", { reason: describe(error) });
      throw error;
    }
  }

  async #recordAction(
    caller: Caller,
    shellId: string,
    capability: Capability | "delete",
    outcome: "success" | "failure" | "denied",
    details: Record<string, unknown>,
  ) {
    await this.deps.activity.record({
      orgId: caller.orgId,
      actor: actorOf(caller),
      action: capability === "delete" ? "shell.delete" : `shell.action.${capability}`,
      target: { type: "shell", id: shellId },
      outcome,
      details,
    });
  }

  async #systemEvent(
    orgId: string,
    shellId: string,
    action: string,
    details: Record<string, unknown>,
  ) {
    await this.deps.activity.record({
      orgId,
      actor: SYSTEM_ACTOR,
      action,
      target: { type: "shell", id: shellId },
      outcome: "success",
      details,
    });
  }

  #select() {
    return this.deps.db
      .selectFrom("shells")
      .innerJoin("projects", "projects.id", "shells.project_id")
      .selectAll("shells")
      .select("projects.name as project_name");
  }

  async #find(orgId: string, idOrName: string): Promise<ShellRow> {
    const row = await this.#select()
      .where("shells.org_id", "=", orgId)
      .where((eb) =>
        eb.or([
          eb("shells.id", "=", idOrName),
          eb.and([eb("shells.name", "=", idOrName), eb("shells.deleted_at", "is", null)]),
        ]),
      )
      // An exact id always wins over a name (names cannot take an id's shape either).
      .orderBy(sql`shells.id = ${idOrName}`, "desc")
      .executeTakeFirst();
    if (!row) throw new AppError("shell_not_found", `No shell ${idOrName}.`, { id: idOrName });
    return row;
  }

  async #setState(
    id: string,
    fields: Partial<Pick<ShellTable, "status" | "status_reason" | "image_version" | "deleted_at">>,
  ) {
    await this.deps.db
      .updateTable("shells")
      .set({ ...fields, updated_at: nowIso() })
      .where("id", "=", id)
      .execute();
  }

  async #log(orgId: string, shellId: string, kind: LogEntry["kind"], message: string) {
    const { db } = this.deps;
    const inserted = await db
      .insertInto("shell_logs")
      .values({ org_id: orgId, shell_id: shellId, time: nowIso(), kind, message })
      .returning("id")
      .executeTakeFirstOrThrow();
    if (inserted.id % 100 === 0) {
      await db
        .deleteFrom("shell_logs")
        .where("shell_id", "=", shellId)
        .where("id", "<=", inserted.id - SHELL_DEFAULTS.logRetention)
        .execute();
    }
  }

  async #logs(shellId: string, tail: number): Promise<LogEntry[]> {
    const rows = await this.deps.db
      .selectFrom("shell_logs")
      .selectAll()
      .where("shell_id", "=", shellId)
      .orderBy("id", "desc")
      .limit(tail)
      .execute();
    return rows.reverse().map((r) => ({ time: r.time, kind: r.kind, message: r.message }));
  }

  async #backendCall<T>(row: ShellRow, fn: (backend: SandboxBackend) => Promise<T>): Promise<T> {
    const backend = this.deps.runtimes.byName(row.backend);
    if (!backend)
      throw new AppError(
        "backend_failed",
        `The ${row.backend} backend that holds shell ${row.name} is not configured on this server.`,
      );
    try {
      return await fn(backend);
    } catch (error) {
      throw this.#mapBackendError(error, row.id);
    }
  }

  #mapBackendError(error: unknown, shellId: string): AppError {
    if (error instanceof AppError) return error;
    if (!(error instanceof SandboxError)) {
      this.deps.logger.error({ err: error, shellId }, "backend call failed");
      return new AppError(
        "backend_failed",
        `The sandbox backend failed: ${describe(error)}`,
        { shellId },
        { cause: error },
      );
    }
    switch (error.code) {
      case "not_running":
        return new AppError("invalid_state", `Shell ${shellId}'s sandbox is not running.`, {
          shellId,
        });
      case "snapshot_not_found":
        return new AppError("snapshot_not_found", error.message, { shellId });
      case "unavailable":
        return new AppError("runtime_unavailable", error.message, {
          ...error.details,
          missing: error.message,
        });
      case "unsupported":
        return new AppError("validation_failed", error.message, error.details);
      case "path_not_found":
        return new AppError("file_not_found", error.message, error.details);
      case "wrong_file_type":
        return new AppError("wrong_file_type", error.message, error.details);
      case "not_found":
        return new AppError(
          "backend_failed",
          `The backend no longer holds shell ${shellId}'s sandbox; restart it to provision a fresh one.`,
          { shellId },
        );
      case "failed":
        if (error.details.tooLarge)
          return new AppError("file_too_large", error.message, error.details);
        this.deps.logger.error({ err: error, shellId }, "backend call failed");
        return new AppError(
          "backend_failed",
          `The sandbox backend failed: ${error.message}`,
          { shellId },
          { cause: error },
        );
    }
  }
}

function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
