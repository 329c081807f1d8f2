import type { OrgPolicy, ShellEgress } from "@shells/contract";
import type { SandboxEgress } from "@shells/sandbox";
import type { FastifyBaseLogger } from "fastify";
import { mkdir } from "node:fs/promises";
import { join } from "node:path";
import type { EgressMetrics } from "../metrics/server-metrics.js";
import type { ActivityService } from "../services/activity-service.js";
import { BindingProxy, type BindingGrant, type BindingTarget } from "./binding-proxy.js";
import { DecisionLog, egressEntry, type LoggedDecision } from "./decision-log.js";
import {
  EgressProxy,
  makeResolver,
  vetDestination,
  type EgressResolver,
  type VettedDestination,
} from "./egress-proxy.js";
import { EgressPolicy } from "./policy.js";

/** What the egress service needs. */
export interface EgressServiceOptions {
  /** Directory of the proxies' unix sockets (`<dataDir>/egress`), root-only. */
  socketDir: string;
  activity: ActivityService;
  /** The org's policy, read at each connection: an org that narrows its egress does so at once. */
  policy(orgId: string): Promise<OrgPolicy>;
  logger: FastifyBaseLogger;
  /** Resolver of destination names (the system's by default). */
  resolve?: EgressResolver;
  /** Aggregation window of egress decisions in the history, ms (a minute by default). */
  decisionWindowMs?: number;
  /** Where every decision is counted. */
  metrics?: EgressMetrics;
  /** The org's service bindings, as the proxy reads them per call (rules and opened secret). */
  bindings?: {
    target(orgId: string, bindingId: string): Promise<BindingTarget | null | "unusable">;
  };
  /** Extra CA certificates (PEM) the proxy trusts for binding upstreams. */
  bindingsExtraCa?: readonly string[];
}

/** What a shell's proxy serves: general egress (`internet` only) and the shell's bindings. */
export interface ShellEgressSettings {
  /** Whether the shell is `internet`: without it, the proxy refuses every destination. */
  internet: boolean;
  /** The shell's own allowlist (`internet` only; null: the org's policy alone). */
  egress: ShellEgress | null;
  /** Service bindings granted at launch. */
  bindings: readonly BindingGrant[];
}

/** The policy limits nobody configured (the org policy always carries its own). */
const FALLBACK_LIMITS = { maxConnections: 64, maxBytes: 1024 * 1024 * 1024 };
const FALLBACK_POLICY = {
  allowHosts: [],
  denyHosts: [],
  allowCidrs: [],
  denyCidrs: [],
  allowPorts: [],
  ...FALLBACK_LIMITS,
};
/** The allowlist of a shell that is not `internet` but has bindings: nothing. */
const NOTHING: ShellEgress = { mode: "deny_all", allow: [] };

/**
 * Runs one egress proxy per `internet` shell and per shell granted service bindings, from the
 * shell's creation to its deletion (a stopped shell keeps its proxy, idle: nothing connects). The
 * proxy's socket is what the backend gives the sandbox (`SandboxSpec.egress`): an `internet`
 * shell's one way out, and any shell's way to its bindings. After a control-plane restart the
 * reconciler calls `ensure` for every live shell that has one, so running sandboxes find their
 * proxy again at the same path.
 */
export class EgressService {
  readonly #proxies = new Map<string, EgressProxy>();
  /** Each running proxy's shell allowlist, read at every connection and DNS question. */
  readonly #allowlists = new Map<string, ShellEgress | null>();
  /** Each running proxy's binding grants, read at every binding call. */
  readonly #grants = new Map<string, readonly BindingGrant[]>();
  readonly #decisions: DecisionLog;
  readonly #resolve: EgressResolver;

  constructor(private readonly options: EgressServiceOptions) {
    this.#decisions = new DecisionLog(options.activity, {
      windowMs: options.decisionWindowMs ?? 60_000,
      logger: options.logger,
      metrics: options.metrics,
    });
    this.#resolve = options.resolve ?? makeResolver();
  }

  /** The socket path of a shell's proxy. */
  socketPath(shellId: string): string {
    return join(this.options.socketDir, `${shellId}.sock`);
  }

  /** Starts the shell's proxy unless it runs; returns what the backend needs to route to it. */
  async ensure(
    orgId: string,
    shellId: string,
    settings: ShellEgressSettings,
  ): Promise<SandboxEgress> {
    const socketPath = this.socketPath(shellId);
    this.#allowlists.set(shellId, settings.internet ? settings.egress : NOTHING);
    this.#grants.set(shellId, settings.bindings);
    if (this.#proxies.has(shellId)) return { socketPath };
    await mkdir(this.options.socketDir, { recursive: true, mode: 0o700 });
    const limits = (await this.options.policy(orgId)).egress ?? FALLBACK_LIMITS;
    const orgRules = async () => (await this.options.policy(orgId)).egress ?? FALLBACK_POLICY;
    const record = (entry: LoggedDecision) => {
      this.#decisions
        .record(entry)
        .catch((error: unknown) =>
          this.options.logger.error({ err: error, shellId }, "could not record a proxy decision"),
        );
    };
    const bindings = this.options.bindings;
    const proxy = new EgressProxy({
      orgId,
      shellId,
      socketPath,
      policy: async () => new EgressPolicy(await orgRules(), this.#allowlists.get(shellId) ?? null),
      resolve: this.#resolve,
      maxConnections: limits.maxConnections,
      maxBytes: limits.maxBytes,
      record: (decision) => record(egressEntry(decision)),
      bindings: bindings
        ? new BindingProxy({
            orgId,
            shellId,
            grants: () => this.#grants.get(shellId) ?? [],
            lookup: (bindingId) => bindings.target(orgId, bindingId),
            // The grant is what allows the upstream; the org's own rules still bound it.
            policy: async () => new EgressPolicy(await orgRules(), null),
            resolve: this.#resolve,
            extraCa: this.options.bindingsExtraCa,
            record,
          })
        : undefined,
    });
    this.#proxies.set(shellId, proxy);
    try {
      await proxy.listen();
    } catch (error) {
      this.#proxies.delete(shellId);
      throw error;
    }
    return { socketPath };
  }

  /**
   * Bytes the shell's proxy has moved since it started in this process (it starts again from zero
   * after a control-plane restart); null when the shell has no proxy here.
   */
  bytes(shellId: string): number | null {
    return this.#proxies.get(shellId)?.bytes ?? null;
  }

  /**
   * Vets a destination the control plane itself connects to for an org (a git source's clone):
   * the org's egress rules, with the same resolution as a shell's proxy, so the caller dials
   * exactly the vetted address.
   */
  async vet(orgId: string, host: string, port: number): Promise<VettedDestination> {
    const rules = (await this.options.policy(orgId)).egress ?? FALLBACK_POLICY;
    return vetDestination(new EgressPolicy(rules, null), this.#resolve, host, port);
  }

  /** Replaces a shell's allowlist: its proxy applies it from the next connection or question on. */
  update(shellId: string, egress: ShellEgress | null): void {
    if (this.#proxies.has(shellId)) this.#allowlists.set(shellId, egress);
  }

  /** Stops a shell's proxy and removes its socket (the shell was deleted or never came up). */
  async stop(shellId: string): Promise<void> {
    const proxy = this.#proxies.get(shellId);
    this.#proxies.delete(shellId);
    this.#allowlists.delete(shellId);
    this.#grants.delete(shellId);
    await proxy?.close();
    await this.#decisions.flushShell(shellId);
  }

  /** Writes every pending decision count now (tests, shutdown). */
  async flush(): Promise<void> {
    await this.#decisions.close();
  }

  /** Stops every proxy; running sandboxes keep their forwarder and find a restarted proxy. */
  async close(): Promise<void> {
    for (const shellId of [...this.#proxies.keys()]) {
      const proxy = this.#proxies.get(shellId);
      this.#proxies.delete(shellId);
      this.#allowlists.delete(shellId);
      this.#grants.delete(shellId);
      await proxy?.close();
    }
    await this.#decisions.close();
  }
}
