import type { EgressRules, OrgEgressPolicy, OrgPolicy, ShellEgress } from "@shells/contract";
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
  /** A project's egress rules (null: none), read at each connection like the org's policy. */
  projectRules?(orgId: string, projectId: string): Promise<EgressRules | null>;
  /** See `EgressProxyOptions.headerTimeoutMs` (10 s by default). */
  headerTimeoutMs?: number;
  /** See `EgressProxyOptions.tunnelIdleMs` (10 minutes by default). */
  tunnelIdleMs?: number;
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

/** How much a shell moved through its proxy when it passed its org's byte budget. */
/** The levels below the org's that bound a destination: a project's rules and a template's. */
export interface EgressScope {
  projectId?: string;
  templateRules?: EgressRules | null;
}

export interface EgressOveruse {
  bytes: number;
  maxBytes: number;
}

/** Stops a shell that passed its byte budget (kill reason `egress_limit`). */
export type EgressLimitStopper = (
  orgId: string,
  shellId: string,
  usage: EgressOveruse,
) => Promise<unknown>;

/** What a shell's proxy serves: general egress (`internet` only) and the shell's bindings. */
export interface ShellEgressSettings {
  /** Whether the shell is `internet`: without it, the proxy refuses every destination. */
  internet: boolean;
  /** The shell's project, whose egress rules apply below the org's. */
  projectId: string;
  /** The egress rules of the template version the shell was made from (null: none). */
  templateRules: EgressRules | null;
  /** The shell's own allowlist (`internet` only; null: the levels above alone). */
  egress: ShellEgress | null;
  /** Service bindings granted at launch. */
  bindings: readonly BindingGrant[];
}

/** The egress policy nobody configured (the org policy service always gives one). */
const FALLBACK_POLICY: OrgEgressPolicy = {
  allowHosts: [],
  denyHosts: [],
  allowCidrs: [],
  denyCidrs: [],
  allowPorts: [],
  denyPorts: [],
  maxConnections: 64,
  maxBytes: 1024 * 1024 * 1024,
  maxRequestsPerSecond: 500,
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
  /** Each running proxy's project and template rules. */
  readonly #levels = new Map<string, { projectId: string; templateRules: EgressRules | null }>();
  /** Each running proxy's binding grants, read at every binding call. */
  readonly #grants = new Map<string, readonly BindingGrant[]>();
  readonly #decisions: DecisionLog;
  readonly #resolve: EgressResolver;
  #stopper: EgressLimitStopper | null = null;

  constructor(private readonly options: EgressServiceOptions) {
    this.#decisions = new DecisionLog(options.activity, {
      windowMs: options.decisionWindowMs ?? 60_000,
      logger: options.logger,
      metrics: options.metrics,
    });
    this.#resolve = options.resolve ?? makeResolver();
  }

  /**
   * How a shell that passes its byte budget is stopped (the shell service's `egress_limit` stop).
   * Its proxy ends its connections and refuses new ones either way.
   */
  stopWith(stopper: EgressLimitStopper): void {
    this.#stopper = stopper;
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
    this.#levels.set(shellId, {
      projectId: settings.projectId,
      templateRules: settings.templateRules,
    });
    this.#grants.set(shellId, settings.bindings);
    if (this.#proxies.has(shellId)) return { socketPath };
    await mkdir(this.options.socketDir, { recursive: true, mode: 0o700 });
    const limits = (await this.options.policy(orgId)).egress ?? FALLBACK_POLICY;
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
      policy: () => this.#policyOf(orgId, shellId),
      resolve: this.#resolve,
      maxConnections: limits.maxConnections,
      maxBytes: limits.maxBytes,
      maxRequestsPerSecond: limits.maxRequestsPerSecond,
      onByteLimit: (bytes) => {
        this.#stopper?.(orgId, shellId, { bytes, maxBytes: limits.maxBytes }).catch(
          (error: unknown) =>
            this.options.logger.error(
              { err: error, shellId },
              "could not stop a shell over its egress bytes",
            ),
        );
      },
      headerTimeoutMs: this.options.headerTimeoutMs,
      tunnelIdleMs: this.options.tunnelIdleMs,
      record: (decision) => record(egressEntry(decision)),
      bindings: bindings
        ? new BindingProxy({
            orgId,
            shellId,
            grants: () => this.#grants.get(shellId) ?? [],
            lookup: (bindingId) => bindings.target(orgId, bindingId),
            // The grant is what allows the upstream; the org's own rules still bound it.
            policy: async () => new EgressPolicy({ org: await orgRules() }),
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
   * The shell's rules as they stand now: the org's policy and the project's rules (both read now:
   * a change applies from the next connection on), the template version's and the shell's own.
   */
  async #policyOf(orgId: string, shellId: string): Promise<EgressPolicy> {
    const levels = this.#levels.get(shellId);
    return this.#leveled(orgId, levels ?? {}, this.#allowlists.get(shellId) ?? null);
  }

  /** The org's policy, read now, with the project's rules (read now) and the levels below. */
  async #leveled(
    orgId: string,
    levels: EgressScope,
    shell: ShellEgress | null = null,
  ): Promise<EgressPolicy> {
    const [org, project] = await Promise.all([
      this.options.policy(orgId),
      levels.projectId && this.options.projectRules
        ? this.options.projectRules(orgId, levels.projectId)
        : null,
    ]);
    return new EgressPolicy({
      org: org.egress ?? FALLBACK_POLICY,
      project,
      template: levels.templateRules,
      shell,
    });
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
   * the org's egress rules and, within `scope`, the project's and the template's, with the same
   * resolution as a shell's proxy, so the caller dials exactly the vetted address.
   */
  async vet(
    orgId: string,
    host: string,
    port: number,
    scope: EgressScope = {},
  ): Promise<VettedDestination> {
    return vetDestination(await this.#leveled(orgId, scope), this.#resolve, host, port);
  }

  /** Replaces a shell's allowlist: its proxy applies it from the next connection or question on. */
  update(shellId: string, egress: ShellEgress | null): void {
    if (this.#proxies.has(shellId)) this.#allowlists.set(shellId, egress);
  }

  /** Replaces a shell's binding grants: its proxy applies them from the next binding call on. */
  updateGrants(shellId: string, grants: readonly BindingGrant[]): void {
    if (this.#proxies.has(shellId)) this.#grants.set(shellId, grants);
  }

  /** Whether the shell's proxy runs on this server (its sandbox can reach it). */
  running(shellId: string): boolean {
    return this.#proxies.has(shellId);
  }

  /** Stops a shell's proxy and removes its socket (the shell was deleted or never came up). */
  async stop(shellId: string): Promise<void> {
    const proxy = this.#proxies.get(shellId);
    this.#proxies.delete(shellId);
    this.#allowlists.delete(shellId);
    this.#levels.delete(shellId);
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
      this.#levels.delete(shellId);
      this.#grants.delete(shellId);
      await proxy?.close();
    }
    await this.#decisions.close();
  }
}
