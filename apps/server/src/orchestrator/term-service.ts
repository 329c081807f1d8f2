import {
  ROUTES,
  TERM_PROTOCOL,
  TERM_TOKEN_PROTOCOL_PREFIX,
  type TermCredential,
} from "@shells/contract";
import type { SandboxProcess } from "@shells/sandbox";
import type { FastifyBaseLogger, FastifyInstance } from "fastify";
import type { Kysely } from "kysely";
import type { RawData, WebSocket } from "ws";
import { AppError } from "../errors.js";
import { actorOf, type Caller } from "../iam/principal.js";
import { lostStanding } from "../iam/standing.js";
import { mintTermToken, parseTermToken, tokenMatches } from "../iam/tokens.js";
import { nowIso } from "../ids.js";
import type { ActivityService } from "../services/activity-service.js";
import type { PolicyService } from "../services/policy-service.js";
import type { Database } from "../store/schema.js";
import type { ShellService } from "./shell-service.js";

/** Path of the WebSocket that attaches a terminal. */
export const TERM_ATTACH_PATH = "/api/v1/term/attach";

/** A terminal width the server accepts (10–500 columns). */
const terminalCols = (cols: number) => Math.min(500, Math.max(10, cols));
/** A terminal height the server accepts (5–200 rows). */
const terminalRows = (rows: number) => Math.min(200, Math.max(5, rows));

/** Output queued for a slow terminal client before the pty is paused. */
const MAX_BUFFERED_BYTES = 1024 * 1024;

/**
 * Input taken from the client but not yet accepted by the process. Above it the socket is not read
 * until the process catches up, so a process that never reads its terminal cannot make the control
 * plane hold the client's input in memory.
 */
const MAX_PENDING_INPUT_BYTES = 1024 * 1024;

/** How often a live terminal checks that the key that minted it and its holder still stand. */
const STANDING_CHECK_INTERVAL_MS = 1000;

/** Close codes of the terminal WebSocket (the SDK documents them to callers). */
const CLOSE = {
  ended: 1000,
  shutdown: 1001,
  failed: 1011,
  expired: 4001,
  revoked: 4003,
  refused: 4401,
} as const;

/**
 * Selects the terminal subprotocol among those a client offers (the `handleProtocols` of the
 * WebSocket server). Only `shells.term.v1` is ever selected, so the `shells.token.…` protocol that
 * carries the secret is never echoed back in the handshake response.
 */
export function selectTermProtocol(offered: ReadonlySet<string>): string | false {
  return offered.has(TERM_PROTOCOL) ? TERM_PROTOCOL : false;
}

/** The token a client offers as the subprotocol `shells.token.<token>`, or "" when it offers none. */
function offeredToken(header: string | string[] | undefined): string {
  const offered = (Array.isArray(header) ? header.join(",") : (header ?? ""))
    .split(",")
    .map((protocol) => protocol.trim());
  const carrier = offered.find((protocol) => protocol.startsWith(TERM_TOKEN_PROTOCOL_PREFIX));
  return carrier ? carrier.slice(TERM_TOKEN_PROTOCOL_PREFIX.length) : "";
}

/** Who minted a credential: the holder and, when an API key was used, that key. */
interface Minter {
  orgId: string;
  actor: { type: "user" | "agent"; id: string };
  keyId: string | null;
}

/** What a valid credential allows: one terminal on one shell until it expires. */
interface Attachment extends Minter {
  credentialId: string;
  shellId: string;
  expiresAt: number;
}

/** A terminal being served. */
interface LiveTerminal {
  /** Whose credential attached it; null until the credential is consumed. */
  minter: Minter | null;
  /** Ends it: tells the client why, closes the socket and kills the shell's process. */
  end(code: number, type: string, message: string): void;
}

/**
 * Term credentials: short-lived, single-use secrets that attach a WebSocket to a real PTY running a
 * login shell inside the sandbox. Only the SHA-256 of a token is stored; minting is an activity
 * event, the material never is. The token travels as a WebSocket subprotocol, never in a URL.
 *
 * A credential is as good as whoever minted it: it attaches, and its terminal lives, only while
 * the API key that minted it is unrevoked and its holder is an active member or agent of the org.
 * The connection ends when the credential expires or when that stops being true.
 */
export class TermService {
  /** Terminals being served, so shutdown and offboarding can end them. */
  readonly #live = new Map<Promise<void>, LiveTerminal>();

  constructor(
    private readonly db: Kysely<Database>,
    private readonly shells: ShellService,
    private readonly policies: PolicyService,
    private readonly activity: ActivityService,
    private readonly logger: FastifyBaseLogger,
  ) {}

  /** Mints a credential for a running shell. */
  async mint(caller: Caller, idOrName: string, baseUrl: string): Promise<TermCredential> {
    const shell = await this.shells.runningSandbox(caller, idOrName);
    const policy = await this.policies.get(caller.orgId);
    const { credentialId: id, token, tokenHash: hash } = mintTermToken();
    const now = Date.now();
    const expiresAt = new Date(now + policy.termCredentialTtlSeconds * 1000).toISOString();
    await this.db
      .insertInto("term_credentials")
      .values({
        id,
        org_id: caller.orgId,
        shell_id: shell.shellId,
        token_hash: hash,
        created_by_type: caller.actor.type,
        created_by_id: caller.actor.id,
        created_by_key_id: caller.keyId,
        created_at: new Date(now).toISOString(),
        expires_at: expiresAt,
        used_at: null,
      })
      .execute();
    await this.activity.record({
      orgId: caller.orgId,
      actor: actorOf(caller),
      action: "shell.term.mint",
      target: { type: "shell", id: shell.shellId },
      outcome: "success",
      details: { credentialId: id, expiresAt, ttlSeconds: policy.termCredentialTtlSeconds },
    });
    return {
      id,
      token,
      url: `${baseUrl.replace(/^http/, "ws")}${TERM_ATTACH_PATH}`,
      expiresAt,
    };
  }

  /**
   * Ends every live terminal attached with a credential `holder` minted, at once. Terminals also
   * end by themselves within a second of their holder or minting key losing standing; this saves
   * that second where offboarding knows whom it offboards.
   */
  endFor(orgId: string, holder: { type: "user" | "agent"; id: string }): number {
    let ended = 0;
    for (const live of this.#live.values()) {
      const minter = live.minter;
      if (minter?.orgId !== orgId || minter.actor.type !== holder.type) continue;
      if (minter.actor.id !== holder.id) continue;
      live.end(CLOSE.revoked, "revoked", `terminal ended: its ${holder.type} was offboarded`);
      ended += 1;
    }
    return ended;
  }

  /**
   * Why a credential no longer stands, or null when it does: the API key that minted it must be
   * unrevoked and its holder an active member or agent of the org (not removed, disabled, deleted
   * or offboarded by directory sync), and still allowed to mint it now: a holder demoted below
   * the scope, or an agent whose `shells.agent.invoke` entitlement was revoked, holds a shell's
   * terminal no longer than it could open one.
   */
  #lostStanding(minter: Minter): Promise<string | null> {
    return lostStanding(this.db, minter, ROUTES.mintTermCredential.scope);
  }

  /**
   * Consumes a token: valid, unexpired, never used before and still standing — or refused. With
   * `refusal`, a valid token is consumed and refused anyway (a token that was exposed).
   */
  async #consume(token: string, refusal?: string): Promise<Attachment> {
    const presented = parseTermToken(token);
    const row = presented
      ? await this.db
          .selectFrom("term_credentials")
          .selectAll()
          .where("id", "=", presented.credentialId)
          .executeTakeFirst()
      : undefined;
    const valid = row !== undefined && tokenMatches(token, row.token_hash);
    const refuse = async (reason: string): Promise<never> => {
      if (row) {
        await this.activity.record({
          orgId: row.org_id,
          actor: { type: "anonymous", id: "anonymous" },
          action: "shell.term.attach",
          target: { type: "shell", id: row.shell_id },
          outcome: "denied",
          details: { credentialId: row.id, reason },
        });
      }
      throw new AppError(
        "unauthenticated",
        `Terminal credential refused: ${reason}. Mint a new one.`,
      );
    };
    if (!row || !valid) return refuse(refusal ?? "unknown credential");
    if (Date.parse(row.expires_at) <= Date.now()) return refuse("the credential expired");
    const grant: Attachment = {
      credentialId: row.id,
      orgId: row.org_id,
      shellId: row.shell_id,
      expiresAt: Date.parse(row.expires_at),
      actor: { type: row.created_by_type, id: row.created_by_id },
      keyId: row.created_by_key_id,
    };
    const lost = await this.#lostStanding(grant);
    if (lost) return refuse(lost);
    const claimed = await this.db
      .updateTable("term_credentials")
      .set({ used_at: nowIso() })
      .where("id", "=", row.id)
      .where("used_at", "is", null)
      .executeTakeFirst();
    if (Number(claimed.numUpdatedRows) === 0) return refuse("the credential was already used");
    if (refusal) return refuse(refusal);
    return grant;
  }

  /**
   * Registers the WebSocket route. Call after `@fastify/websocket` is registered with
   * `handleProtocols: selectTermProtocol`.
   */
  register(app: FastifyInstance): void {
    app.get(TERM_ATTACH_PATH, { websocket: true }, (socket: WebSocket, request) => {
      const query = request.query as Record<string, unknown>;
      const cols = terminalCols(Number(query.cols) || 80);
      const rows = terminalRows(Number(query.rows) || 24);
      const live: LiveTerminal = {
        minter: null,
        end: (code, _type, message) => socket.close(code, message.slice(0, 120)),
      };
      // A token in the URL has been seen by every proxy and access log on the way: it is burned
      // and refused, and the client told where a token belongs.
      const inUrl = typeof query.token === "string" ? query.token : undefined;
      const token = inUrl ?? offeredToken(request.headers["sec-websocket-protocol"]);
      const served = this.#serve(socket, token, cols, rows, live, inUrl !== undefined).catch(
        (error: unknown) => {
          const message = error instanceof AppError ? error.message : "terminal failed";
          if (!(error instanceof AppError)) this.logger.error({ err: error }, "terminal failed");
          if (socket.readyState !== socket.OPEN) return;
          socket.send(
            JSON.stringify({
              type: "error",
              code: error instanceof AppError ? error.code : "internal",
              message,
            }),
          );
          socket.resume();
          socket.close(
            error instanceof AppError && error.code === "unauthenticated"
              ? CLOSE.refused
              : CLOSE.failed,
            message.slice(0, 120),
          );
        },
      );
      this.#live.set(served, live);
      void served.finally(() => this.#live.delete(served));
    });
  }

  /** Ends every terminal and waits (at most 3 s) until each has recorded its end. */
  async close(): Promise<void> {
    for (const live of this.#live.values())
      live.end(CLOSE.shutdown, "shutdown", "server shutting down");
    await Promise.race([
      Promise.allSettled([...this.#live.keys()]),
      new Promise((resolve) => setTimeout(resolve, 3000)),
    ]);
  }

  async #serve(
    socket: WebSocket,
    token: string,
    cols: number,
    rows: number,
    live: LiveTerminal,
    tokenInUrl: boolean,
  ): Promise<void> {
    // Listen before anything is awaited, and stop reading the socket until the PTY runs: what the
    // client typed meanwhile waits (in the kernel, not here) and is replayed in order.
    const early: { data: RawData; isBinary: boolean }[] = [];
    let deliver: (data: RawData, isBinary: boolean) => void = (data, isBinary) =>
      early.push({ data, isBinary });
    socket.on("message", (data, isBinary) => deliver(data, isBinary));
    socket.pause();
    if (!tokenInUrl && (token === "" || socket.protocol !== TERM_PROTOCOL)) {
      throw new AppError(
        "unauthenticated",
        `Terminal credential missing: offer the WebSocket subprotocols ${TERM_PROTOCOL} and ${TERM_TOKEN_PROTOCOL_PREFIX}<token>.`,
      );
    }
    const grant = await this.#consume(
      token,
      tokenInUrl
        ? "the token was sent in the URL, where logs keep it; send it as the WebSocket subprotocol shells.token.<token> next to shells.term.v1"
        : undefined,
    );
    const shell = await this.shells.sandboxFor(grant.orgId, grant.shellId);
    const waitForDrain = async () => {
      while (socket.bufferedAmount > MAX_BUFFERED_BYTES && socket.readyState === socket.OPEN) {
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
    };
    // What crossed the terminal, in bytes (never its content), for the history's `shell.term.end`.
    const traffic = { inputBytes: 0, outputBytes: 0 };
    const running: SandboxProcess = await shell.call((backend) =>
      backend.spawn(
        grant.shellId,
        {
          command: [
            "/bin/sh",
            "-c",
            "if command -v bash >/dev/null 2>&1; then exec bash -l; else exec sh -l; fi",
          ],
          env: { ...shell.env, TERM: "xterm-256color" },
          cwd: "/workspace",
          pty: { cols, rows },
        },
        {
          onOutput: (_stream, chunk) => {
            if (socket.readyState !== socket.OPEN) return;
            traffic.outputBytes += chunk.length;
            socket.send(chunk, { binary: true });
            if (socket.bufferedAmount > MAX_BUFFERED_BYTES) return waitForDrain();
          },
        },
      ),
    );
    const started = Date.now();
    await this.activity.record({
      orgId: grant.orgId,
      actor: grant.actor,
      action: "shell.term.attach",
      target: { type: "shell", id: grant.shellId },
      outcome: "success",
      details: { credentialId: grant.credentialId },
    });

    let ended: { type: string; message: string } | undefined;
    live.minter = grant;
    live.end = (code, type, message) => {
      if (ended) return;
      ended = { type, message };
      deliver = () => undefined;
      running.signal("SIGKILL");
      if (socket.readyState !== socket.OPEN) return;
      socket.send(JSON.stringify({ type, message }));
      // The close handshake needs the client's close frame, so the socket is read again.
      socket.resume();
      socket.close(code, message.slice(0, 120));
    };
    const expiry = setTimeout(
      () => live.end(CLOSE.expired, "expired", "the terminal credential expired; mint a new one"),
      Math.max(0, grant.expiresAt - Date.now()),
    );
    // Revoking the minting key and every way of offboarding the holder (removal, disabling,
    // deleting an agent, directory sync) end the terminal here, whichever path did it.
    let checking = false;
    const standing = setInterval(() => {
      if (checking || ended) return;
      checking = true;
      this.#lostStanding(grant)
        .then(
          (lost) => {
            if (lost) live.end(CLOSE.revoked, "revoked", `terminal ended: ${lost}`);
          },
          (error: unknown) => {
            this.logger.error({ err: error }, "terminal standing check failed");
            live.end(CLOSE.failed, "error", "terminal ended: its credential could not be checked");
          },
        )
        .finally(() => (checking = false));
    }, STANDING_CHECK_INTERVAL_MS);

    // Input the process has not accepted yet is bounded: past the limit the socket is not read
    // until the process takes what it was given (a full pty pushes back through the helper).
    let pendingInput = 0;
    const type = (bytes: Buffer | string) => {
      const size = Buffer.byteLength(bytes);
      traffic.inputBytes += size;
      pendingInput += size;
      if (pendingInput > MAX_PENDING_INPUT_BYTES) socket.pause();
      void running.write(bytes).finally(() => {
        pendingInput -= size;
        if (pendingInput <= MAX_PENDING_INPUT_BYTES && !ended) socket.resume();
      });
    };
    deliver = (data, isBinary) => {
      const bytes = Buffer.isBuffer(data)
        ? data
        : Array.isArray(data)
          ? Buffer.concat(data)
          : Buffer.from(data);
      if (isBinary) {
        type(bytes);
        return;
      }
      try {
        const message = JSON.parse(bytes.toString("utf8")) as {
          type?: string;
          cols?: number;
          rows?: number;
          signal?: string;
          data?: string;
        };
        if (
          message.type === "resize" &&
          Number.isInteger(message.cols) &&
          Number.isInteger(message.rows)
        ) {
          running.resize(terminalCols(message.cols!), terminalRows(message.rows!));
        } else if (
          message.type === "signal" &&
          (message.signal === "SIGINT" ||
            message.signal === "SIGTERM" ||
            message.signal === "SIGHUP" ||
            message.signal === "SIGQUIT")
        ) {
          running.signal(message.signal);
        } else if (message.type === "input" && typeof message.data === "string") {
          type(message.data);
        }
      } catch {
        // Text that is not a control message is typed into the terminal.
        type(bytes);
      }
    };
    for (const message of early.splice(0)) deliver(message.data, message.isBinary);
    if (pendingInput <= MAX_PENDING_INPUT_BYTES) socket.resume();
    socket.on("close", () => {
      clearTimeout(expiry);
      clearInterval(standing);
      running.signal("SIGHUP");
      setTimeout(() => running.signal("SIGKILL"), 2000).unref();
    });
    if (socket.readyState !== socket.OPEN) running.signal("SIGKILL");
    const result = await running.exit;
    clearTimeout(expiry);
    clearInterval(standing);
    await this.activity.record({
      orgId: grant.orgId,
      actor: grant.actor,
      action: "shell.term.end",
      target: { type: "shell", id: grant.shellId },
      outcome: "success",
      details: {
        credentialId: grant.credentialId,
        exitCode: result.exitCode,
        durationMs: Date.now() - started,
        ...traffic,
        ...(result.killReason ? { killReason: result.killReason } : {}),
        ...(ended ? { endedBy: ended.type, reason: ended.message } : {}),
      },
    });
    if (socket.readyState === socket.OPEN) {
      socket.send(
        JSON.stringify({
          type: "exit",
          exitCode: result.exitCode,
          ...(result.killReason ? { killReason: result.killReason } : {}),
        }),
      );
      socket.close(CLOSE.ended, "terminal ended");
    }
  }
}
