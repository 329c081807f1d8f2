import type {
  ActionRequest,
  ActionResult,
  Capability,
  LogEntry,
  OrgPolicy,
  ResolvedResources,
  Shell,
  ShellStatus,
  Snapshot,
} from "@shells/contract";
import {
  SandboxError,
  type SandboxBackend,
  type SandboxEgress,
  type SandboxImage,
  type SandboxSpec,
  type SandboxInfo,
} from "@shells/sandbox";
import type { FastifyBaseLogger as Logger } from "fastify";
import type { Kysely } from "kysely";
import { AppError } from "../errors.js";
import { actorOf, type Caller } from "../iam/principal.js";
import type { ActivityService } from "../services/activity-service.js";
import { describeError, toApiError } from "./sandbox-errors.js";
import type { Database } from "../store/schema.js";
import type { ShellRow, ShellStateFields } from "../store/shells-store.js";
import { tailShellLogs } from "../store/shell-logs-store.js";
import {
  orgSnapshotBytes,
  recordSnapshot,
  forgetShellSnapshots,
} from "../store/snapshots-store.js";

/** What running a capability needs from the shell service. */
export interface ActionContext {
  db: Kysely<Database>;
  activity: ActivityService;
  logger: Logger;
  policy(orgId: string): Promise<OrgPolicy>;
  call<T>(row: ShellRow, fn: (backend: SandboxBackend) => Promise<T>): Promise<T>;
  setState(row: ShellRow, fields: ShellStateFields): Promise<void>;
  /** The shell's egress proxy (`internet`, or granted bindings), started if it is not running. */
  egressOf(row: ShellRow): Promise<SandboxEgress | null>;
  /** The custom image of the template version the shell was made from, or null when none. */
  imageOf(row: ShellRow): Promise<SandboxImage | null>;
  /** Appends a line to the shell's log, in `trx` (a transaction of the store) when given. */
  log(
    row: ShellRow,
    kind: LogEntry["kind"],
    message: string,
    trx?: Kysely<Database>,
  ): Promise<void>;
}

/** What a capability did: words for the caller, details for the history, extra result fields. */
export interface Performed {
  message: string;
  details: Record<string, unknown>;
  extra: Partial<ActionResult>;
}

const MiB = 1024 * 1024;

/**
 * Brings a new shell's sandbox up on its backend and records the outcome: `running`, or `error`
 * with the reason. The secret environment is not part of `spec`: the backend keeps a shell's env
 * on disk, so secrets join each exec's environment instead. `prepared`: the preparation of the
 * shell's language that ran first (an image build); its failure is the create's.
 */
export async function provisionShell(
  ctx: ActionContext,
  caller: Caller,
  row: ShellRow,
  backend: SandboxBackend,
  spec: SandboxSpec,
  forkOf?: string,
  prepared?: Promise<void>,
): Promise<void> {
  const record = (
    outcome: "success" | "failure",
    details: Record<string, unknown>,
    alongside?: (trx: Kysely<Database>) => Promise<void>,
  ) =>
    ctx.activity.record(
      {
        orgId: caller.orgId,
        actor: actorOf(caller),
        action: "shell.create",
        target: { type: "shell", id: row.id },
        outcome,
        details,
      },
      alongside,
    );
  try {
    await prepared;
    const info = await backend.create(spec);
    await ctx.setState(row, {
      status: "running",
      status_reason: null,
      image_version: info.imageVersion,
      isolation: info.isolation ?? null,
    });
    // The log line and the event commit together.
    await record(
      "success",
      {
        name: row.name,
        language: spec.language,
        runtime: spec.runtime,
        network: spec.network,
        region: row.region,
        backend: backend.name,
        ...(info.isolation ? { isolation: info.isolation } : {}),
        ...(forkOf ? { forkOf } : {}),
      },
      (trx) =>
        ctx.log(
          row,
          "system",
          `created (${info.isolation ?? spec.runtime} on ${backend.name}, image ${info.imageVersion ?? "n/a"})`,
          trx,
        ),
    );
  } catch (error) {
    await ctx.setState(row, {
      status: "error",
      status_reason: `provisioning failed: ${describeError(error)}`,
    });
    await record("failure", {
      name: row.name,
      runtime: spec.runtime,
      error: describeError(error),
      ...(forkOf ? { forkOf } : {}),
    });
    throw toApiError(error, row.id, ctx.logger);
  }
}

/** Runs one lifecycle capability on a shell already checked legal and cleared by the gate. */
export async function performCapability(
  ctx: ActionContext,
  caller: Caller,
  row: ShellRow,
  capability: Capability,
  options: ActionRequest,
): Promise<Performed> {
  const call = <T>(fn: (backend: SandboxBackend) => Promise<T>) => ctx.call(row, fn);
  const after = async (
    info: SandboxInfo,
    message: string,
    status: ShellStatus = info.state,
    reason: string | null = null,
  ) => {
    await ctx.setState(row, { status, status_reason: reason, image_version: info.imageVersion });
    await ctx.log(row, "system", message);
  };
  switch (capability) {
    case "logs": {
      const logs = await tailShellLogs(ctx.db, row.org_id, row.id, options.tail ?? 200);
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
          const egress = await ctx.egressOf(row);
          const image = await ctx.imageOf(row);
          return backend.create({
            shellId: row.id,
            language: row.language as Shell["language"],
            runtime: row.runtime as Shell["runtime"],
            network: row.network as Shell["network"],
            resources: JSON.parse(row.resources) as ResolvedResources,
            env: JSON.parse(row.env) as Record<string, string>,
            ...(egress ? { egress } : {}),
            ...(image ? { image } : {}),
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
      const existing = await call((backend) => backend.listSnapshots(row.id));
      await checkSnapshotQuota(ctx, row, name, existing);
      const snapshot = await call((backend) => backend.snapshot(row.id, name));
      await syncSnapshots(ctx, row, await call((backend) => backend.listSnapshots(row.id)));
      await ctx.log(row, "system", `snapshot ${name} taken (${snapshot.sizeBytes} bytes)`);
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
        throw new AppError("snapshot_not_found", `Shell ${row.name} has no snapshots to restore.`);
      const snapshot = await call((backend) => backend.restore(row.id, target));
      await ctx.log(row, "system", `restored to snapshot ${target}`);
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
    case "pause": {
      const paused = await call(async (backend) => {
        if (!backend.pause)
          throw new AppError(
            "invalid_state",
            `The ${backend.name} backend cannot pause shells; stop the shell instead.`,
            { backend: backend.name },
          );
        return backend.pause(row.id);
      });
      const how =
        paused.pause.method === "checkpoint"
          ? "processes checkpointed to the shell's state, memory released"
          : "processes frozen in place, memory kept resident";
      await after(paused.info, `paused: ${how}`, "paused", `paused: ${paused.pause.reason}`);
      return {
        message: `paused: ${how} (${paused.pause.reason}); execs are refused until resume`,
        details: { method: paused.pause.method, memoryReleased: paused.pause.memoryReleased },
        extra: { pause: paused.pause },
      };
    }
    case "resume": {
      const info = await call(async (backend) => {
        if (!backend.resume)
          throw new AppError("invalid_state", `The ${backend.name} backend cannot resume shells.`);
        return backend.resume(row.id);
      });
      await after(info, "resumed: processes run on from where they were");
      return { message: "resumed: processes run on from where they were", details: {}, extra: {} };
    }
    case "wipe_state": {
      const info = await call((backend) => backend.wipeState(row.id));
      await after(info, "filesystem state destroyed; sandbox intact", row.status as ShellStatus);
      await syncSnapshots(ctx, row, await call((backend) => backend.listSnapshots(row.id)));
      return { message: "filesystem state destroyed, sandbox intact", details: {}, extra: {} };
    }
  }
}

/**
 * Refuses a snapshot that would take the shell or the org past its snapshot quota: every archive
 * is a copy of the shell's state on the host's disk, so without a bound a few snapshots multiply
 * a shell's disk use. Sizes are the archives' real sizes; the next archive is estimated at the
 * size of the newest one (a snapshot taken again under the same name replaces the old one).
 */
async function checkSnapshotQuota(
  ctx: ActionContext,
  row: ShellRow,
  name: string,
  existing: readonly Snapshot[],
): Promise<void> {
  const quota = (await ctx.policy(row.org_id)).snapshotQuota;
  const kept = existing.filter((s) => s.name !== name);
  const shellBytes = kept.reduce((sum, s) => sum + s.sizeBytes, 0);
  const estimate = existing[0]?.sizeBytes ?? 0;
  const refuse = (quotaName: string, used: number, limit: number, unit: string) => {
    throw new AppError(
      "quota_exceeded",
      `Snapshot quota ${quotaName} is used up: ${used} of ${limit} ${unit}. Delete the shell's older snapshots or raise the org's snapshotQuota.`,
      { quota: quotaName, used, limit, unit },
    );
  };
  if (kept.length >= quota.countPerShell)
    refuse("countPerShell", kept.length, quota.countPerShell, "snapshots");
  if (shellBytes + estimate > quota.mbPerShell * MiB)
    refuse("mbPerShell", shellBytes, quota.mbPerShell * MiB, "bytes");
  const orgBytes = (await orgSnapshotBytes(ctx.db, row.org_id, row.id)) + shellBytes;
  if (orgBytes + estimate > quota.mbPerOrg * MiB)
    refuse("mbPerOrg", orgBytes, quota.mbPerOrg * MiB, "bytes");
}

/** Makes the quota table hold exactly the snapshots the backend holds for the shell. */
async function syncSnapshots(
  ctx: ActionContext,
  row: ShellRow,
  held: readonly Snapshot[],
): Promise<void> {
  await forgetShellSnapshots(ctx.db, row.org_id, row.id);
  for (const snapshot of held) await recordSnapshot(ctx.db, row.org_id, row.id, snapshot);
}
