import type { FastifyBaseLogger as Logger } from "fastify";
import type { SandboxInfo } from "@shells/sandbox";
import type { Kysely, Selectable } from "kysely";
import type { EgressService } from "../egress/egress-service.js";
import type { ActivityService } from "../services/activity-service.js";
import type { MeteringService } from "../services/metering-service.js";
import type { LifecycleLock } from "../store/lifecycle-lock.js";
import type { Database, ShellTable } from "../store/schema.js";
import { appendShellLog } from "../store/shell-logs-store.js";
import {
  expiredShellsAcrossOrgs,
  findShell,
  liveShellsOnBackendAcrossOrgs,
  setShellState,
} from "../store/shells-store.js";
import type { RuntimeRegistry } from "./runtimes.js";
import { egressSettingsOf } from "./shell-records.js";

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
   * Sandboxes the store does not know (or knows as deleted) are destroyed; shells whose sandbox is
   * gone become `error`, and shells whose sandbox stopped become `stopped`. Each shell is settled
   * under its lifecycle lock, and only when no lifecycle step changed it since the backend was
   * listed: replicas sharing the store may be working on it (a server that takes over the
   * background work reconciles while others serve).
   */
  async reconcile(): Promise<{ adopted: number; destroyed: number; lost: number }> {
    const { db } = this.deps;
    const counts = { adopted: 0, destroyed: 0, lost: 0 };
    for (const backend of this.deps.runtimes.backends) {
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
          const result = await this.#settle(listed, held.get(listed.id));
          if (result) counts[result] += 1;
        });
      }
    }
    return counts;
  }

  /** Settles one shell with what its backend holds (`info`, undefined: no sandbox). */
  async #settle(
    row: Selectable<ShellTable>,
    info: SandboxInfo | undefined,
  ): Promise<"adopted" | "lost" | null> {
    const { db } = this.deps;
    if (!info) {
      if (!["running", "paused", "provisioning"].includes(row.status)) return null;
      await setShellState(db, row.org_id, row.id, {
        status: "error",
        status_reason:
          row.status === "provisioning"
            ? "provisioning was cut off by a restart of the control plane (host_restart); restart the shell to provision it again"
            : "sandbox lost: the host or backend restarted (host_restart)",
      });
      await this.#event(row.org_id, row.id, "shell.reconcile", {
        result: "lost",
        previousStatus: row.status,
      });
      return "lost";
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
    return "adopted";
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
