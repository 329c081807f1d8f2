import type { TermCredential } from "@shells/contract";
import type { SandboxProcess } from "@shells/sandbox";
import type { FastifyBaseLogger, FastifyInstance } from "fastify";
import type { Kysely } from "kysely";
import { randomBytes, timingSafeEqual } from "node:crypto";
import type { RawData, WebSocket } from "ws";
import { AppError } from "../errors.js";
import { actorOf, type Caller } from "../iam/principal.js";
import { newId, nowIso, sha256Hex } from "../ids.js";
import type { ActivityService } from "../services/activity-service.js";
import type { PolicyService } from "../services/policy-service.js";
import type { Database } from "../store/schema.js";
import type { ShellService } from "./shell-service.js";

/** Path of the WebSocket that attaches a terminal. */
export const TERM_ATTACH_PATH = "/api/v1/term/attach";

const TOKEN = /^sht_([0-9a-z]{12})_([A-Za-z0-9_-]{43})$/;
/** A terminal width the server accepts (10–500 columns). */
const terminalCols = (cols: number) => Math.min(500, Math.max(10, cols));
/** A terminal height the server accepts (5–200 rows). */
const terminalRows = (rows: number) => Math.min(200, Math.max(5, rows));

/** Output queued for a slow terminal client before the pty is paused. */
const MAX_BUFFERED_BYTES = 1024 * 1024;

/** What a valid credential allows: one terminal on one shell until it expires. */
interface Attachment {
  credentialId: string;
  orgId: string;
  shellId: string;
  expiresAt: number;
  actor: { type: "user" | "agent"; id: string };
}

/**
 * Term credentials: short-lived, single-use secrets that attach a WebSocket to a real PTY running a
 * login shell inside the sandbox. Only the SHA-256 of a token is stored; minting is an activity
 * event, the material never is. The connection ends when the credential expires.
 */
export class TermService {
  /** Terminals being served, so shutdown can end them and record their end before the store closes. */
  readonly #live = new Map<Promise<void>, () => void>();

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
    const id = newId("term");
    const token = `sht_${id.slice(5)}_${randomBytes(32).toString("base64url")}`;
    const now = Date.now();
    const expiresAt = new Date(now + policy.termCredentialTtlSeconds * 1000).toISOString();
    await this.db
      .insertInto("term_credentials")
      .values({
        id,
        org_id: caller.orgId,
        shell_id: shell.shellId,
        token_hash: sha256Hex(token),
        created_by_type: caller.actor.type,
        created_by_id: caller.actor.id,
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
    const wsBase = baseUrl.replace(/^http/, "ws");
    return {
      id,
      token,
      url: `${wsBase}${TERM_ATTACH_PATH}?token=${encodeURIComponent(token)}`,
      expiresAt,
    };
  }

  /** Consumes a token: valid, unexpired and never used before — or refused. */
  async #consume(token: string): Promise<Attachment> {
    const match = TOKEN.exec(token);
    const row = match
      ? await this.db
          .selectFrom("term_credentials")
          .selectAll()
          .where("id", "=", `term-${match[1]}`)
          .executeTakeFirst()
      : undefined;
    const presented = Buffer.from(sha256Hex(token), "hex");
    const valid =
      row !== undefined && timingSafeEqual(presented, Buffer.from(row.token_hash, "hex"));
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
    if (!row || !valid) return refuse("unknown credential");
    if (Date.parse(row.expires_at) <= Date.now()) return refuse("the credential expired");
    const claimed = await this.db
      .updateTable("term_credentials")
      .set({ used_at: nowIso() })
      .where("id", "=", row.id)
      .where("used_at", "is", null)
      .executeTakeFirst();
    if (Number(claimed.numUpdatedRows) === 0) return refuse("the credential was already used");
    return {
      credentialId: row.id,
      orgId: row.org_id,
      shellId: row.shell_id,
      expiresAt: Date.parse(row.expires_at),
      actor: { type: row.created_by_type, id: row.created_by_id },
    };
  }

  /** Registers the WebSocket route. Call after `@fastify/websocket` is registered. */
  register(app: FastifyInstance): void {
    app.get(TERM_ATTACH_PATH, { websocket: true }, (socket: WebSocket, request) => {
      const query = request.query as Record<string, unknown>;
      const token = typeof query.token === "string" ? query.token : "";
      const cols = terminalCols(Number(query.cols) || 80);
      const rows = terminalRows(Number(query.rows) || 24);
      let hangUp = () => socket.close(1001, "server shutting down");
      const served = this.#serve(socket, token, cols, rows, (end) => (hangUp = end)).catch(
        (error: unknown) => {
          const message = error instanceof AppError ? error.message : "terminal failed";
          if (!(error instanceof AppError)) this.logger.error({ err: error }, "terminal failed");
          socket.send(
            JSON.stringify({
              type: "error",
              code: error instanceof AppError ? error.code : "internal",
              message,
            }),
          );
          socket.close(
            error instanceof AppError && error.code === "unauthenticated" ? 4401 : 1011,
            message.slice(0, 120),
          );
        },
      );
      this.#live.set(served, () => hangUp());
      void served.finally(() => this.#live.delete(served));
    });
  }

  /** Ends every terminal and waits (at most 3 s) until each has recorded its end. */
  async close(): Promise<void> {
    for (const end of this.#live.values()) end();
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
    onHangUp: (end: () => void) => void,
  ): Promise<void> {
    // Listen before anything is awaited: what the client types while the PTY starts is queued,
    // not lost, and replayed in order once the process runs.
    const early: { data: RawData; isBinary: boolean }[] = [];
    let deliver: (data: RawData, isBinary: boolean) => void = (data, isBinary) =>
      early.push({ data, isBinary });
    socket.on("message", (data, isBinary) => deliver(data, isBinary));
    const grant = await this.#consume(token);
    const shell = await this.shells.sandboxFor(grant.orgId, grant.shellId);
    const waitForDrain = async () => {
      while (socket.bufferedAmount > MAX_BUFFERED_BYTES && socket.readyState === socket.OPEN) {
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
    };
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
    const expiry = setTimeout(
      () => {
        socket.send(
          JSON.stringify({
            type: "expired",
            message: "the terminal credential expired; mint a new one",
          }),
        );
        socket.close(4001, "credential expired");
      },
      Math.max(0, grant.expiresAt - Date.now()),
    );
    deliver = (data, isBinary) => {
      const bytes = Buffer.isBuffer(data)
        ? data
        : Array.isArray(data)
          ? Buffer.concat(data)
          : Buffer.from(data);
      if (isBinary) {
        void running.write(bytes);
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
          void running.write(message.data);
        }
      } catch {
        // Text that is not a control message is typed into the terminal.
        void running.write(bytes);
      }
    };
    for (const message of early.splice(0)) deliver(message.data, message.isBinary);
    socket.on("close", () => {
      clearTimeout(expiry);
      running.signal("SIGHUP");
      setTimeout(() => running.signal("SIGKILL"), 2000).unref();
    });
    if (socket.readyState !== socket.OPEN) running.signal("SIGKILL");
    onHangUp(() => {
      running.signal("SIGKILL");
      socket.close(1001, "server shutting down");
    });
    const result = await running.exit;
    clearTimeout(expiry);
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
        ...(result.killReason ? { killReason: result.killReason } : {}),
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
      socket.close(1000, "terminal ended");
    }
  }
}
