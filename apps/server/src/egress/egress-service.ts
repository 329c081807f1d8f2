import type { OrgPolicy, ShellEgress } from "@shells/contract";
import type { SandboxEgress } from "@shells/sandbox";
import type { FastifyBaseLogger } from "fastify";
import { mkdir } from "node:fs/promises";
import { join } from "node:path";
import type { ActivityService } from "../services/activity-service.js";
import { EgressDecisionLog } from "./decision-log.js";
import { EgressProxy, makeResolver, type EgressResolver } from "./egress-proxy.js";
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
}

/** The policy limits nobody configured (the org policy always carries its own). */
const FALLBACK_LIMITS = { maxConnections: 64, maxBytes: 1024 * 1024 * 1024 };

/**
 * Runs one egress proxy per `internet` shell, from the shell's creation to its deletion (a
 * stopped shell keeps its proxy, idle: nothing connects). The proxy's socket is what the backend
 * gives the sandbox as its one way out (`SandboxSpec.egress`). After a control-plane restart the
 * reconciler calls `ensure` for every live `internet` shell, so running sandboxes find their proxy
 * again at the same path.
 */
export class EgressService {
  readonly #proxies = new Map<string, EgressProxy>();
  /** Each running proxy's shell allowlist, read at every connection and DNS question. */
  readonly #allowlists = new Map<string, ShellEgress | null>();
  readonly #decisions: EgressDecisionLog;
  readonly #resolve: EgressResolver;

  constructor(private readonly options: EgressServiceOptions) {
    this.#decisions = new EgressDecisionLog(options.activity, {
      windowMs: options.decisionWindowMs ?? 60_000,
      logger: options.logger,
    });
    this.#resolve = options.resolve ?? makeResolver();
  }

  /** The socket path of a shell's proxy. */
  socketPath(shellId: string): string {
    return join(this.options.socketDir, `${shellId}.sock`);
  }

  /** Starts the shell's proxy unless it runs; returns what the backend needs to route to it. */
  async ensure(orgId: string, shellId: string, egress: ShellEgress | null): Promise<SandboxEgress> {
    const socketPath = this.socketPath(shellId);
    this.#allowlists.set(shellId, egress);
    if (this.#proxies.has(shellId)) return { socketPath };
    await mkdir(this.options.socketDir, { recursive: true, mode: 0o700 });
    const limits = (await this.options.policy(orgId)).egress ?? FALLBACK_LIMITS;
    const proxy = new EgressProxy({
      orgId,
      shellId,
      socketPath,
      policy: async () =>
        new EgressPolicy(
          (await this.options.policy(orgId)).egress ?? {
            allowHosts: [],
            denyHosts: [],
            allowCidrs: [],
            denyCidrs: [],
            allowPorts: [],
            ...FALLBACK_LIMITS,
          },
          this.#allowlists.get(shellId) ?? null,
        ),
      resolve: this.#resolve,
      maxConnections: limits.maxConnections,
      maxBytes: limits.maxBytes,
      record: (decision) => {
        this.#decisions
          .record(decision)
          .catch((error: unknown) =>
            this.options.logger.error(
              { err: error, shellId },
              "could not record an egress decision",
            ),
          );
      },
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

  /** Replaces a shell's allowlist: its proxy applies it from the next connection or question on. */
  update(shellId: string, egress: ShellEgress | null): void {
    if (this.#proxies.has(shellId)) this.#allowlists.set(shellId, egress);
  }

  /** Stops a shell's proxy and removes its socket (the shell was deleted or never came up). */
  async stop(shellId: string): Promise<void> {
    const proxy = this.#proxies.get(shellId);
    this.#proxies.delete(shellId);
    this.#allowlists.delete(shellId);
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
      await proxy?.close();
    }
    await this.#decisions.close();
  }
}
