import type { FastifyBaseLogger as Logger } from "fastify";
import type { SandboxBackend, SandboxInfo } from "@shells/sandbox";
import type { Kysely, Selectable } from "kysely";
import type { EgressService } from "../egress/egress-service.js";
import type { ActivityService } from "../services/activity-service.js";
import type { MeteringService } from "../services/metering-service.js";
import type { LifecycleLock } from "../store/lifecycle-lock.js";
import type { Database, ShellTable } from "../store/schema.js";
import { appendShellLog } from "../store/shell-logs-store.js";
import { forgetShellSnapshots } from "../store/snapshots-store.js";
import {
  expiredShellsAcrossOrgs,
  findShell,
  liveShellsOnBackendAcrossOrgs,
  setShellState,
} from "../store/shells-store.js";
import { closePendingApprovals } from "./approval-gate.js";
import type { RuntimeRegistry } from "./runtimes.js";
import { egressSettingsOf } from "./shell-records.js";

/** What `reconcile` did, by kind. */
export interface ReconcileCounts {
  /** Sandboxes adopted as the store has them (or with the state the backend found). */
  adopted: number;
  /** Sandboxes destroyed: unknown to the store, deleted there, or of a cut create. */
  destroyed: number;
  /** Shells that became `error`: their sandbox is gone, or their create was cut. */
  lost: number;
  /** Deletes cut by a crash, finished. */
  deleted: number;
  /** Sandboxes stopped because the store says their shell runs nothing. */
  stopped: number;
}

/** The actor of work the control plane does on its own (TTL expiry, reconciliation, caps). */
export const SYSTEM_ACTOR = { type: "system", id: "control-plane" } as const;

/** What the reconciler needs. */
export interface ReconcilerDeps {
  db: Kysely<Database>;
  activity: ActivityService;
  runtimes: RuntimeRegistry;
  lock: LifecycleLock;
  logger: Logger;
  /** Newest log entries kept per shell. */
  logRetention: number;
  /** Egress proxies: `reconcile` restarts those of live shells that have one. */
  egress?: EgressService;
  /** Metering: an expiring shell's counters are read before it stops. */
  metering?: MeteringService;
}

/**
 * Keeps the store and the backends in agreement: after a start (`reconcile`) and on a timer
 * (`expire`, which stops shells whose TTL passed). Works across every org, as the control plane.
 */
export class Reconciler {
  #timer: NodeJS.Timeout | null = null;

  constructor(private readonly deps: ReconcilerDeps) {}

  /**
   * Brings the store and the backends into agreement after a start (or when this server takes
   * over the background work from a replica that died), whatever step a crash cut: each backend
   * first settles its own half-done steps (`recover`); then sandboxes the store does not know (or
   * knows as deleted) are destroyed; a delete that began is finished; a shell still `provisioning`
   * (its create never answered) becomes `error` and its sandbox, if any, is destroyed; a sandbox
   * still running for a shell the store says is `stopped` or in `error` is stopped; shells whose
   * sandbox is gone become `error` (`restart` provisions them again), and shells whose sandbox
   * stopped become `stopped`. Each shell is settled under its lifecycle lock, and only when no
   * lifecycle step changed it since the backend was listed: replicas sharing the store may be
   * working on it.
   */
  async reconcile(): Promise<ReconcileCounts> {
    const { db } = this.deps;
    const counts: ReconcileCounts = { adopted: 0, destroyed: 0, lost: 0, deleted: 0, stopped: 0 };
    for (const backend of this.deps.runtimes.backends) {
      await backend.recover?.();
      const held = new Map((await backend.list()).map((s) => [s.shellId, s]));
      // Listed after the sandboxes: a row is inserted before its sandbox is made, so every
      // sandbox listed above that belongs to a live shell has its row here.
      const rows = await liveShellsOnBackendAcrossOrgs(db, backend.name);
      const live = new Set(rows.map((r) => r.id));
      for (const [shellId] of held) {
        if (!live.has(shellId)) {
          await this.deps.lock.run(shellId, () => backend.destroy(shellId));
          counts.destroyed += 1;
        }
      }
      for (const listed of rows) {
        await this.deps.lock.run(listed.id, async () => {
          const now = await findShell(db, listed.org_id, listed.id);
          // Changed since the backend was listed: whoever changed it saw the sandbox as it is.
          if (now?.updated_at !== listed.updated_at) return;
          for (const result of await this.#settle(backend, listed, held.get(listed.id)))
            counts[result] += 1;
        });
      }
    }
    return counts;
  }

  /** Settles one shell with what its backend holds (`info`, undefined: no sandbox). */
  async #settle(
    backend: SandboxBackend,
    row: Selectable<ShellTable>,
    info: SandboxInfo | undefined,
  ): Promise<(keyof ReconcileCounts)[]> {
    const { db } = this.deps;
    if (row.delete_requested_by !== null) {
      if (info) await backend.destroy(row.id);
      await this.#finishDelete(row, row.delete_requested_by);
      return ["deleted"];
    }
    if (row.status === "provisioning") {
      if (info) await backend.destroy(row.id);
      await this.#lose(
        row,
        "provisioning was cut off by a restart of the control plane (host_restart); restart the shell to provision it again",
      );
      return info ? ["destroyed", "lost"] : ["lost"];
    }
    if (!info) {
      // A stopped shell whose sandbox is gone cannot start either: `restart` provisions it.
      if (row.status === "running" || row.status === "paused" || row.status === "stopped") {
        await this.#lose(row, "sandbox lost: the host or backend restarted (host_restart)");
        return ["lost"];
      }
      return [];
    }
    if (info.state !== "stopped" && (row.status === "stopped" || row.status === "error")) {
      // A start cut before it was recorded, or a stop cut before the sandbox ended: the store
      // says the shell runs nothing, so nothing runs.
      await backend.stop(row.id);
      await this.#event(row.org_id, row.id, "shell.reconcile", {
        result: "sandbox_stopped",
        previousStatus: row.status,
      });
      return ["stopped"];
    }
    const egress = egressSettingsOf(row);
    if (egress && this.deps.egress) {
      // The sandbox outlived the previous control plane; its forwarder reconnects to the
      // proxy's socket path once the proxy listens there again.
      await this.deps.egress.ensure(row.org_id, row.id, egress);
    }
    const status = info.state;
    if (status !== row.status) {
      await setShellState(db, row.org_id, row.id, {
        status,
        status_reason: status === "stopped" ? "sandbox found stopped after a restart" : null,
        image_version: info.imageVersion,
      });
      await this.#event(row.org_id, row.id, "shell.reconcile", {
        result: status,
        previousStatus: row.status,
      });
    }
    return ["adopted"];
  }

  /** Marks a shell whose sandbox is gone (or was never whole) `error`, with the reason. */
  async #lose(row: Selectable<ShellTable>, reason: string): Promise<void> {
    await setShellState(this.deps.db, row.org_id, row.id, {
      status: "error",
      status_reason: reason,
    });
    await this.#event(row.org_id, row.id, "shell.reconcile", {
      result: "lost",
      previousStatus: row.status,
    });
  }

  /**
   * Finishes a delete a crash cut after it began (its sandbox is destroyed by now): the shell is
   * `deleted`, as its caller asked, and the history says who asked and that the control plane
   * finished it.
   */
  async #finishDelete(row: Selectable<ShellTable>, requestedBy: string): Promise<void> {
    const { db } = this.deps;
    await this.deps.egress?.stop(row.id);
    await setShellState(db, row.org_id, row.id, {
      status: "deleted",
      status_reason: `deleted by ${requestedBy}`,
      deleted_at: new Date().toISOString(),
    });
    await forgetShellSnapshots(db, row.org_id, row.id);
    await appendShellLog(db, row.org_id, row.id, {
      kind: "system",
      message: "deleted: every per-shell object reclaimed (finished after a restart)",
      retention: this.deps.logRetention,
    });
    await this.deps.activity.record({
      orgId: row.org_id,
      actor: SYSTEM_ACTOR,
      action: "shell.delete",
      target: { type: "shell", id: row.id },
      outcome: "success",
      details: { name: row.name, requestedBy, finishedAfterRestart: true },
    });
    await closePendingApprovals(db, this.deps.activity, {
      orgId: row.org_id,
      targetId: row.id,
      actor: SYSTEM_ACTOR,
      reason: `the shell ${row.name} was deleted`,
    });
  }

  /** Stops running shells whose TTL has passed; returns how many were due. */
  async expire(): Promise<number> {
    const { db } = this.deps;
    const due = await expiredShellsAcrossOrgs(db, new Date().toISOString());
    for (const shell of due) {
      await this.deps.lock.run(shell.id, async () => {
        const row = await findShell(db, shell.org_id, shell.id);
        // Someone else stopped or deleted it while it waited for the lock.
        if (!row || (row.status !== "running" && row.status !== "paused")) return;
        await this.deps.metering?.settle(shell.id);
        await this.deps.runtimes
          .byName(row.backend)
          ?.stop(shell.id)
          .catch(() => undefined);
        await setShellState(db, shell.org_id, shell.id, {
          status: "stopped",
          status_reason: "ttl expired",
        });
        await appendShellLog(db, shell.org_id, shell.id, {
          kind: "system",
          message: "stopped: ttl expired",
          retention: this.deps.logRetention,
        });
        await this.#event(shell.org_id, shell.id, "shell.action.stop", { reason: "ttl expired" });
      });
    }
    return due.length;
  }

  /** Runs `expire` every `intervalMs` until `stop`; a failed sweep is logged and the next one runs. */
  start(intervalMs: number): void {
    this.stop();
    if (intervalMs <= 0) return;
    this.#timer = setInterval(() => {
      this.expire().catch((error: unknown) =>
        this.deps.logger.error({ err: error }, "ttl sweep failed"),
      );
    }, intervalMs);
    this.#timer.unref();
  }

  /** Stops the timer started by `start`. */
  stop(): void {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = null;
  }

  async #event(orgId: string, shellId: string, action: string, details: Record<string, unknown>) {
    await this.deps.activity.record({
      orgId,
      actor: SYSTEM_ACTOR,
      action,
      target: { type: "shell", id: shellId },
      outcome: "success",
      details,
    });
  }
}
