import { ROUTES, type ExposedPort, type PortExpose, type PortUrl } from "@shells/contract";
import type { Duplex } from "node:stream";
import type { Kysely } from "kysely";
import { AppError } from "../errors.js";
import { actorOf, type Caller } from "../iam/principal.js";
import { lostStanding, type Holder } from "../iam/standing.js";
import { mintPortToken, parsePortToken, tokenMatches } from "../iam/tokens.js";
import type { ActivityService } from "../services/activity-service.js";
import type { Database, PortUrlTable } from "../store/schema.js";
import type { ShellService } from "./shell-service.js";

/** Where exposed ports are served: `<base>/ports/<token>/…`. */
export const PORTS_PATH = "/ports";

/** How long a port URL works when the caller names no TTL. */
const DEFAULT_PORT_URL_TTL_SECONDS = 3600;

/** What a valid port URL allows: one port of one shell, as long as its maker stands. */
export interface PortGrant extends Holder {
  portUrlId: string;
  shellId: string;
  port: number;
  expiresAt: number;
}

/**
 * Exposed ports: a URL through the control plane that reaches a server listening on a port inside
 * a shell. The URL's path carries a token (`shp_…`) minted here; only its SHA-256 is stored, and
 * minting is an activity event without it. Every request through the URL re-checks the token, its
 * expiry, its maker's standing (the key unrevoked, the holder still allowed to expose ports) and
 * the shell (running, with a network), then connects through the backend, which dials only the
 * shell's own loopback from inside its network namespace.
 */
export class PortService {
  /** Connections open through each port URL, so a revocation ends them too. */
  readonly #open = new Map<string, Set<Duplex>>();

  constructor(
    private readonly db: Kysely<Database>,
    private readonly shells: ShellService,
    private readonly activity: ActivityService,
  ) {}

  /** Mints a URL for `port` of a running `localhost` or `internet` shell. */
  async expose(
    caller: Caller,
    idOrName: string,
    body: PortExpose,
    baseUrl: string,
  ): Promise<PortUrl> {
    const shell = await this.shells.runningSandbox(caller, idOrName);
    await this.#checkReachable(shell, body.port);
    const { portUrlId: id, token, tokenHash } = mintPortToken();
    const now = Date.now();
    const ttlSeconds = body.ttlSeconds ?? DEFAULT_PORT_URL_TTL_SECONDS;
    const expiresAt = new Date(now + ttlSeconds * 1000).toISOString();
    await this.db
      .insertInto("port_urls")
      .values({
        id,
        org_id: caller.orgId,
        shell_id: shell.shellId,
        port: body.port,
        token_hash: tokenHash,
        created_by_type: caller.actor.type,
        created_by_id: caller.actor.id,
        created_by_key_id: caller.keyId,
        created_at: new Date(now).toISOString(),
        expires_at: expiresAt,
      })
      .execute();
    await this.activity.record({
      orgId: caller.orgId,
      actor: actorOf(caller),
      action: "shell.port.expose",
      target: { type: "shell", id: shell.shellId },
      outcome: "success",
      details: { portUrlId: id, port: body.port, expiresAt, ttlSeconds },
    });
    return {
      id,
      shellId: shell.shellId,
      port: body.port,
      url: `${baseUrl}${PORTS_PATH}/${token}/`,
      expiresAt,
    };
  }

  /** The shell's port URLs that still work (not expired, not revoked), newest first. */
  async list(caller: Caller, idOrName: string): Promise<ExposedPort[]> {
    const shell = await this.shells.get(caller, idOrName);
    const rows = await this.db
      .selectFrom("port_urls")
      .selectAll()
      .where("org_id", "=", caller.orgId)
      .where("shell_id", "=", shell.id)
      .where("revoked_at", "is", null)
      .where("expires_at", ">", new Date().toISOString())
      .orderBy("created_at", "desc")
      .orderBy("id", "desc")
      .execute();
    return rows.map(exposedPortOf);
  }

  /**
   * Revokes a port URL that still works: its token opens nothing from now on, and the connections
   * open through it on this server are closed. Recorded; an unknown, expired or already revoked
   * URL is `not_found`.
   */
  async revoke(caller: Caller, idOrName: string, portUrlId: string): Promise<ExposedPort> {
    const shell = await this.shells.get(caller, idOrName);
    const now = new Date().toISOString();
    const revoked = await this.db
      .updateTable("port_urls")
      .set({ revoked_at: now, revoked_by_type: caller.actor.type, revoked_by_id: caller.actor.id })
      .where("id", "=", portUrlId)
      .where("org_id", "=", caller.orgId)
      .where("shell_id", "=", shell.id)
      .where("revoked_at", "is", null)
      .where("expires_at", ">", now)
      .returningAll()
      .executeTakeFirst();
    if (!revoked)
      throw new AppError(
        "not_found",
        `Shell ${shell.name} has no port URL ${portUrlId} that still works.`,
        { portUrlId },
      );
    for (const connection of this.#open.get(portUrlId) ?? []) connection.destroy();
    this.#open.delete(portUrlId);
    await this.activity.record({
      orgId: caller.orgId,
      actor: actorOf(caller),
      action: "shell.port.revoke",
      target: { type: "shell", id: shell.id },
      outcome: "success",
      details: { portUrlId, port: revoked.port, expiresAt: revoked.expires_at },
    });
    return exposedPortOf(revoked);
  }

  /**
   * The grant a presented token stands for: `unauthenticated` when unknown, expired, or its maker
   * lost standing (the same test a new mint would pass, so a URL never outlives an offboarding);
   * `not_found` when revoked.
   */
  async grantOf(token: string): Promise<PortGrant> {
    const presented = parsePortToken(token);
    const row = presented
      ? await this.db
          .selectFrom("port_urls")
          .selectAll()
          .where("id", "=", presented.portUrlId)
          .executeTakeFirst()
      : undefined;
    const refuse = (reason: string): never => {
      throw new AppError("unauthenticated", `Port URL refused: ${reason}. Ask for a new one.`);
    };
    if (!row || !tokenMatches(token, row.token_hash)) return refuse("unknown URL");
    if (row.revoked_at !== null)
      throw new AppError("not_found", "Port URL revoked. Ask for a new one.");
    if (Date.parse(row.expires_at) <= Date.now()) return refuse("the URL expired");
    const grant: PortGrant = {
      portUrlId: row.id,
      orgId: row.org_id,
      shellId: row.shell_id,
      port: row.port,
      expiresAt: Date.parse(row.expires_at),
      actor: { type: row.created_by_type, id: row.created_by_id },
      keyId: row.created_by_key_id,
    };
    const lost = await lostStanding(this.db, grant, ROUTES.exposePort.scope);
    if (lost) return refuse(lost);
    return grant;
  }

  /**
   * A connection to the grant's port inside its shell, if the shell is running (paused: 409
   * `shell_paused`; stopped or deleted: 409 `invalid_state`); nothing listening: 502
   * `port_not_listening`.
   */
  async connect(grant: PortGrant): Promise<Duplex> {
    const shell = await this.shells.sandboxFor(grant.orgId, grant.shellId);
    const connection = await shell.call((backend) =>
      backend.connectPort!(grant.shellId, grant.port),
    );
    const open = this.#open.get(grant.portUrlId) ?? new Set<Duplex>();
    this.#open.set(grant.portUrlId, open);
    open.add(connection);
    connection.once("close", () => {
      open.delete(connection);
      if (open.size === 0 && this.#open.get(grant.portUrlId) === open)
        this.#open.delete(grant.portUrlId);
    });
    return connection;
  }

  /** Refuses a port no connection could reach: no network, a backend without ports, a reserved port. */
  async #checkReachable(
    shell: Awaited<ReturnType<ShellService["runningSandbox"]>>,
    port: number,
  ): Promise<void> {
    const { network } = shell;
    const backend = await shell.call(async (b) => b);
    if (!backend.connectPort)
      throw new AppError(
        "runtime_unavailable",
        `The ${backend.name} backend cannot reach ports inside its shells.`,
        { missing: "port connections in the backend" },
      );
    if (network === "sealed")
      throw new AppError(
        "network_mode_unavailable",
        `Shell ${shell.name} is sealed: it has no network to serve a port on. Create it with network localhost (or internet).`,
        { network },
      );
    if (backend.reservedPorts?.[network]?.includes(port))
      throw new AppError(
        "validation_failed",
        `Port ${port} is the sandbox's own in ${network} shells (the egress forwarder); serve on another port.`,
        { field: "port", port },
      );
  }
}

/** A port URL row as the API lists it: no token, no hash. */
function exposedPortOf(row: PortUrlTable): ExposedPort {
  return {
    id: row.id,
    shellId: row.shell_id,
    port: row.port,
    createdBy: { type: row.created_by_type, id: row.created_by_id },
    createdAt: row.created_at,
    expiresAt: row.expires_at,
    revokedAt: row.revoked_at,
  };
}
