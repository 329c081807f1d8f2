import type { FastifyBaseLogger } from "fastify";
import type { EgressMetrics } from "../metrics/server-metrics.js";
import type { ActivityService } from "../services/activity-service.js";
import { WindowedLog, type WindowSpan } from "../services/windowed-log.js";
import type { EgressDenial } from "./policy.js";

/** One decision of a shell's egress proxy, once its connection ended (or was refused). */
export interface EgressDecision {
  orgId: string;
  shellId: string;
  allowed: boolean;
  /** The name the shell asked for (or the IP literal it dialled). */
  host: string;
  /** The vetted address the proxy dialled; null when refused before resolution or unresolvable. */
  address: string | null;
  port: number;
  /**
   * `http` for a forwarded request (through the proxy variables or redirected from port 80),
   * `connect` for a tunnel (HTTPS and other TCP), `tls` for a redirected port-443 connection
   * (decided on its SNI), `dns` for a question to the shell's resolver (port 53, no bytes).
   */
  protocol: "http" | "connect" | "tls" | "dns";
  /** Bytes moved both ways (0 for a refusal). */
  bytes: number;
  reason?: EgressDenial | undefined;
}

/** One decision as the history records it: an egress decision or a binding call. */
export interface LoggedDecision {
  orgId: string;
  shellId: string;
  /** `egress.allowed`, `egress.denied`, `binding.invoked` or `binding.denied`. */
  action: string;
  outcome: "success" | "failure" | "denied";
  /** What the decision was about; decisions with equal details share an aggregation window. */
  details: Record<string, string | number | null>;
  /** Bytes moved both ways (0 for a refusal); summed over a window. */
  bytes: number;
}

/** An egress decision as the history records it. */
export function egressEntry(decision: EgressDecision): LoggedDecision {
  return {
    orgId: decision.orgId,
    shellId: decision.shellId,
    action: decision.allowed ? "egress.allowed" : "egress.denied",
    outcome: decision.allowed ? "success" : "denied",
    details: {
      host: decision.host,
      address: decision.address,
      port: decision.port,
      protocol: decision.protocol,
      ...(decision.reason ? { reason: decision.reason } : {}),
    },
    bytes: decision.bytes,
  };
}

/** How decisions are aggregated. */
export interface DecisionLogOptions {
  /** Length of an aggregation window, ms (a minute in production). */
  windowMs: number;
  /** Most destinations with an open window at once; further ones share one window. */
  maxOpenWindows?: number;
  logger: FastifyBaseLogger;
  /** Counts every decision as it is made (the history aggregates; the counter does not). */
  metrics?: EgressMetrics | undefined;
}

const PROXY_ACTOR = { type: "system", id: "egress-proxy" } as const;

/**
 * Writes the egress proxy's decisions (connections, DNS answers, binding calls) to the shell's
 * activity history in bounded form: code in a shell can open connections in a loop, and one row
 * per connection would let it grow its org's hash chain without limit. The first decision per
 * (shell, action, details) in a window is written at once with `count: 1`; the repeats in that
 * window are summed (count and bytes) and written as one more event when the window closes (or on
 * `close()`). The counts of all events add up to the number of decisions.
 */
export class DecisionLog {
  readonly #log: WindowedLog<LoggedDecision>;

  constructor(
    private readonly activity: ActivityService,
    private readonly options: DecisionLogOptions,
  ) {
    this.#log = new WindowedLog({
      ...options,
      what: "proxy decisions",
      keyOf: (decision) => JSON.stringify([decision.shellId, decision.action, decision.details]),
      // Too many destinations at once: a shell's further ones share one window.
      overflowKey: (decision) => `*${decision.shellId}`,
      weight: (decision) => decision.bytes,
      write: (first, _last, count, bytes, span) => this.#write(first, count, bytes, span),
    });
  }

  /** Records one decision: written now when it opens a window, else counted into the window. */
  async record(decision: LoggedDecision): Promise<void> {
    if (decision.action.startsWith("egress.")) {
      const reason = decision.details["reason"];
      this.options.metrics?.countEgressDecision(
        decision.action === "egress.allowed",
        typeof reason === "string" ? reason : undefined,
      );
    }
    await this.#log.record(decision);
  }

  /** Writes the open windows of one shell now (its proxy stops). */
  flushShell(shellId: string): Promise<void> {
    return this.#log.flush((first) => first.shellId === shellId);
  }

  /** Writes every open window's count now (at shutdown). */
  close(): Promise<void> {
    return this.#log.close();
  }

  async #write(
    decision: LoggedDecision,
    count: number,
    bytes: number,
    span: WindowSpan | undefined,
  ): Promise<void> {
    await this.activity.record({
      orgId: decision.orgId,
      actor: PROXY_ACTOR,
      action: decision.action,
      target: { type: "shell", id: decision.shellId },
      outcome: decision.outcome,
      details: { ...decision.details, bytes, count, ...span },
    });
  }
}
