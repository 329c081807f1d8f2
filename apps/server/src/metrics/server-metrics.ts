import { RuntimeClass, ShellStatus } from "@shells/contract";
import type { Kysely } from "kysely";
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client";
import type { Database } from "../store/schema.js";

/** The route label of a request that matched no route (a 404): raw URLs would be unbounded. */
export const UNMATCHED_ROUTE = "(unmatched)";

/** How a webhook delivery attempt ended, as counted in `shells_webhook_deliveries_total`. */
export type DeliveryResult = "delivered" | "retrying" | "failed";

/** What the orchestrator reports: how long creates and execs took, and what the sandbox killed. */
export interface OrchestratorMetrics {
  observeShellCreate(runtime: string, outcome: "success" | "failure", seconds: number): void;
  observeExec(runtime: string, seconds: number, killReason: string | undefined): void;
}

/** What the egress proxies report: each decision once. */
export interface EgressMetrics {
  countEgressDecision(allowed: boolean, reason: string | undefined): void;
}

/** What the webhook dispatcher reports: each delivery attempt once. */
export interface WebhookMetrics {
  countWebhookDelivery(result: DeliveryResult): void;
}

/** Options of {@link ServerMetrics}. */
export interface ServerMetricsOptions {
  /** The regions of the server's pools: their shell gauges exist (at 0) before they hold any shell. */
  regions: readonly string[];
  /** Also export the process's own metrics (CPU, memory, event-loop lag, GC). Default true. */
  processMetrics?: boolean;
}

const SECONDS_FAST = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];
const SECONDS_SLOW = [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300];

/**
 * The control plane's metrics in one Prometheus registry of its own (no global state: two apps in
 * one process keep apart). Counters and histograms are fed where things happen (the orchestrator,
 * the egress proxies, the webhook dispatcher, every HTTP response); gauges of state (shells by
 * status, pending approvals, queued webhook deliveries) are read from the store when scraped, so
 * they are right after a restart too. Labels hold only bounded values: route patterns, never URLs;
 * classes, statuses and reasons, never ids.
 */
export class ServerMetrics implements OrchestratorMetrics, EgressMetrics, WebhookMetrics {
  /** The registry `/metrics` renders. */
  readonly registry = new Registry();
  readonly #createSeconds: Histogram<"runtime" | "outcome">;
  readonly #execSeconds: Histogram<"runtime">;
  readonly #kills: Counter<"runtime" | "reason">;
  readonly #egress: Counter<"decision" | "reason">;
  readonly #requestSeconds: Histogram<"method" | "route" | "status">;
  readonly #deliveries: Counter<"result">;
  /** Whether this server holds each lease, read when scraped. */
  readonly #leases = new Map<string, () => boolean>();

  constructor(db: Kysely<Database>, options: ServerMetricsOptions) {
    const registers = [this.registry];
    if (options.processMetrics ?? true) collectDefaultMetrics({ register: this.registry });
    this.#createSeconds = new Histogram({
      name: "shells_shell_create_duration_seconds",
      help: "Time to create a shell, from admission to running (or failed), by runtime class.",
      labelNames: ["runtime", "outcome"],
      buckets: SECONDS_SLOW,
      registers,
    });
    this.#execSeconds = new Histogram({
      name: "shells_exec_duration_seconds",
      help: "Time an exec took in its sandbox, by runtime class.",
      labelNames: ["runtime"],
      buckets: SECONDS_FAST,
      registers,
    });
    this.#kills = new Counter({
      name: "shells_exec_kills_total",
      help: "Commands the sandbox ended, by kill reason (oom, pids, wall_clock, ...).",
      labelNames: ["runtime", "reason"],
      registers,
    });
    this.#egress = new Counter({
      name: "shells_egress_decisions_total",
      help: "Connections and DNS questions of internet shells, allowed or denied (with the reason).",
      labelNames: ["decision", "reason"],
      registers,
    });
    this.#requestSeconds = new Histogram({
      name: "shells_http_request_duration_seconds",
      help: "API request durations by method, route pattern and status code.",
      labelNames: ["method", "route", "status"],
      buckets: SECONDS_FAST,
      registers,
    });
    this.#deliveries = new Counter({
      name: "shells_webhook_deliveries_total",
      help: "Webhook delivery attempts: delivered, failed and retrying, or failed for good.",
      labelNames: ["result"],
      registers,
    });
    for (const result of ["delivered", "retrying", "failed"] as const)
      this.#deliveries.inc({ result }, 0);

    new Gauge({
      name: "shells_shells",
      help: "Shells by status, runtime class and region (deleted ones included).",
      labelNames: ["status", "runtime", "region"],
      registers,
      async collect() {
        const rows = await db
          .selectFrom("shells")
          .select(["status", "runtime", "region", (eb) => eb.fn.countAll<number>().as("count")])
          .groupBy(["status", "runtime", "region"])
          .execute();
        this.reset();
        for (const status of ShellStatus.options)
          for (const runtime of RuntimeClass.options)
            for (const region of options.regions) this.set({ status, runtime, region }, 0);
        for (const row of rows)
          this.set(
            { status: row.status, runtime: row.runtime, region: row.region },
            Number(row.count),
          );
      },
    });
    const leases = this.#leases;
    new Gauge({
      name: "shells_lease_held",
      help: "Whether this server holds the lease (1) or waits for it (0): of replicas over one store, one runs the background work.",
      labelNames: ["lease"],
      registers,
      collect() {
        for (const [lease, held] of leases) this.set({ lease }, held() ? 1 : 0);
      },
    });
    new Gauge({
      name: "shells_approvals_pending",
      help: "Approvals waiting for a decision (not yet expired).",
      registers,
      async collect() {
        const row = await db
          .selectFrom("approvals")
          .select((eb) => eb.fn.countAll<number>().as("count"))
          .where("state", "=", "pending")
          .where("expires_at", ">", new Date().toISOString())
          .executeTakeFirst();
        this.set(Number(row?.count ?? 0));
      },
    });
    new Gauge({
      name: "shells_webhook_deliveries_pending",
      help: "Webhook deliveries waiting in the outbox (not yet delivered, not given up).",
      registers,
      async collect() {
        const row = await db
          .selectFrom("webhook_deliveries")
          .select((eb) => eb.fn.countAll<number>().as("count"))
          .where("state", "=", "pending")
          .executeTakeFirst();
        this.set(Number(row?.count ?? 0));
      },
    });
  }

  observeShellCreate(runtime: string, outcome: "success" | "failure", seconds: number): void {
    this.#createSeconds.observe({ runtime, outcome }, seconds);
  }

  observeExec(runtime: string, seconds: number, killReason: string | undefined): void {
    this.#execSeconds.observe({ runtime }, seconds);
    if (killReason) this.#kills.inc({ runtime, reason: killReason });
  }

  countEgressDecision(allowed: boolean, reason: string | undefined): void {
    this.#egress.inc({ decision: allowed ? "allowed" : "denied", reason: reason ?? "" });
  }

  /** One answered request; `route` is the matched pattern (`/api/v1/shells/:id`). */
  observeRequest(method: string, route: string, status: number, seconds: number): void {
    this.#requestSeconds.observe({ method, route, status: String(status) }, seconds);
  }

  countWebhookDelivery(result: DeliveryResult): void {
    this.#deliveries.inc({ result });
  }

  /** Reports whether this server holds the lease `name` (`shells_lease_held`), asking `held`. */
  reportLease(name: string, held: () => boolean): void {
    this.#leases.set(name, held);
  }

  /** The registry in the Prometheus text exposition format. */
  render(): Promise<string> {
    return this.registry.metrics();
  }
}
