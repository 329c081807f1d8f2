import {
  ERROR_STATUS,
  ROUTES,
  buildOpenApiDocument,
  type ErrorBody,
  type RunFrame,
} from "@shells/contract";
import type { SandboxBackend } from "@shells/sandbox";
import Fastify, {
  type FastifyBaseLogger,
  type FastifyError,
  type FastifyInstance,
  type FastifyReply,
} from "fastify";
import { randomBytes } from "node:crypto";
import { sql } from "kysely";
import type { ServerConfig } from "./config.js";
import { AppError } from "./errors.js";
import fastifyWebsocket from "@fastify/websocket";
import { FileService } from "./orchestrator/file-service.js";
import { ShellService } from "./orchestrator/shell-service.js";
import { TermService } from "./orchestrator/term-service.js";
import { InterpreterService } from "./orchestrator/interpreter-service.js";
import { RunService } from "./orchestrator/run-service.js";
import { RuntimeRegistry } from "./orchestrator/runtimes.js";
import { renderDocsPage } from "./routes/docs-page.js";
import { registerConsoleStatic } from "./routes/console-static.js";
import { openEventStream, wantsEventStream } from "./routes/event-stream.js";
import { registerRoutes, STREAMED, type Handlers } from "./routes/register-routes.js";
import { OidcAuth, publicBaseUrl, registerAuthRoutes } from "./iam/oidc/oidc-auth.js";
import { describeIdpError } from "./iam/oidc/identity-provider.js";
import { ApprovalGate, isPendingApproval } from "./orchestrator/approval-gate.js";
import { ActivityService } from "./services/activity-service.js";
import { AgentGate } from "./services/agent-gate.js";
import { IamService } from "./services/iam-service.js";
import { registerMcpEndpoint } from "./mcp/mcp-endpoint.js";
import { PolicyService } from "./services/policy-service.js";
import type { Store } from "./store/database.js";

/** The server's version, reported in the OpenAPI document. */
export const SERVER_VERSION = "0.1.0";

/** What the app is built from. Nothing here is a module-level singleton. */
export interface AppDeps {
  store: Store;
  backends: SandboxBackend[];
  logger: FastifyBaseLogger;
  /** How often expired shells are stopped; 0 disables the sweep (default 5000). */
  sweepIntervalMs?: number;
}

/** Answers 202 Accepted when the result is a pending approval rather than the action's result. */
function accepted<T>(reply: FastifyReply, result: T): T {
  if (isPendingApproval(result)) reply.code(202);
  return result;
}

function errorBody(
  code: AppError["code"],
  message: string,
  requestId: string,
  details?: Record<string, unknown>,
): ErrorBody {
  return { error: { code, message, ...(details ? { details } : {}), requestId } };
}

/**
 * Builds the control plane's HTTP app without listening. Tests drive it with `app.inject()`;
 * `startServer` listens on a socket.
 */
export async function buildApp(config: ServerConfig, deps: AppDeps): Promise<FastifyInstance> {
  const app = Fastify({
    loggerInstance: deps.logger,
    bodyLimit: config.bodyLimitBytes,
    genReqId: () => `req-${randomBytes(8).toString("hex")}`,
    requestIdHeader: false,
    routerOptions: { maxParamLength: 200 },
    return503OnClosing: true,
    // Router-level faults (an undecodable URL, an overlong path parameter) bypass the error
    // handler; answer them in the same error shape.
    frameworkErrors: (error, request, reply) => {
      const code =
        error.code === "FST_ERR_MAX_PARAM_LENGTH" ? "validation_failed" : "malformed_request";
      void (reply as FastifyReply)
        .code(400)
        .send(errorBody(code, `Malformed request: ${error.message}`, request.id));
    },
  });
  // JSON is the only body the API accepts; anything else is 415, never parsed as text.
  app.removeContentTypeParser("text/plain");
  // File uploads and archives arrive as raw bytes; only the routes that declare them accept them.
  app.addContentTypeParser(
    ["application/octet-stream", "application/x-tar"],
    { parseAs: "buffer" },
    (_request, body, done) => done(null, body),
  );

  const db = deps.store.db;
  const activity = new ActivityService(db);
  const runtimes = new RuntimeRegistry(deps.backends);
  const policies = new PolicyService(db, activity);
  const gate = new ApprovalGate(db, activity, policies);
  const shells = new ShellService({
    db,
    activity,
    runtimes,
    logger: deps.logger,
    region: config.region,
    policies,
    gate,
    dataDir: config.dataDir,
  });
  const iam = new IamService(db, activity, policies);
  const files = new FileService(shells, activity);
  const terms = new TermService(db, shells, policies, activity, deps.logger);
  const interpreters = new InterpreterService(shells, activity);
  const runs = new RunService(db, shells, activity, config.dataDir, deps.logger);
  const agentGate = new AgentGate(shells, activity, {
    terms,
    interpreters,
    runs,
    files,
    baseUrl: () => publicBaseUrl(app, config),
  });
  app.addHook("onClose", async () => {
    await terms.close();
    interpreters.close();
    await runs.drain();
  });
  await app.register(fastifyWebsocket, { options: { maxPayload: 1024 * 1024 } });
  terms.register(app);
  const sendBytes = (reply: FastifyReply, type: string, bytes: Uint8Array) => {
    void reply
      .header("content-type", type)
      .header("content-length", bytes.length)
      .send(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length));
    return STREAMED;
  };
  const oidc = config.oidc
    ? new OidcAuth({
        db,
        activity,
        settings: config.oidc,
        sessionTtlSeconds: config.sessionTtlSeconds,
        publicUrl: () => publicBaseUrl(app, config),
        logger: deps.logger,
      })
    : null;
  const openapi = buildOpenApiDocument({ version: SERVER_VERSION });
  const docsHtml = renderDocsPage(openapi);

  app.addHook("onRequest", async (request, reply) => {
    reply.header("x-request-id", request.id);
  });

  app.setNotFoundHandler(async (request, reply) => {
    reply.code(404);
    return errorBody(
      "route_not_found",
      `No route ${request.method} ${request.url.split("?")[0] ?? ""}. See /docs.`,
      request.id,
    );
  });

  app.setErrorHandler(async (error: FastifyError | AppError, request, reply) => {
    if (error instanceof AppError) {
      reply.code(error.status);
      return errorBody(error.code, error.message, request.id, error.details);
    }
    const status = error.statusCode ?? 500;
    if (status === 413) {
      reply.code(413);
      return errorBody(
        "payload_too_large",
        `The body is larger than ${config.bodyLimitBytes} bytes.`,
        request.id,
        { limitBytes: config.bodyLimitBytes },
      );
    }
    if (status === 415) {
      reply.code(415);
      return errorBody(
        "unsupported_media_type",
        "Send request bodies as application/json.",
        request.id,
      );
    }
    if (status >= 400 && status < 500) {
      reply.code(400);
      return errorBody("malformed_request", `Malformed request: ${error.message}`, request.id);
    }
    request.log.error({ err: error }, "unhandled error");
    reply.code(ERROR_STATUS.internal);
    return errorBody("internal", "Internal error; report the request id.", request.id);
  });

  const handlers: Handlers = {
    health: async () => ({ status: "ok" }),
    ready: async () => {
      try {
        await sql`select 1`.execute(db);
      } catch (error) {
        throw new AppError("not_ready", "The store does not answer.", undefined, { cause: error });
      }
      return { status: "ready", runtimes: await runtimes.availability() };
    },
    whoami: async ({ caller }) => caller,
    listRuntimes: async () => ({ items: await runtimes.availability() }),
    listShells: async ({ caller, query }) => shells.list(caller, query),
    createShell: async ({ caller, body }) => shells.create(caller, body),
    getShell: async ({ caller, params }) => shells.get(caller, params.id),
    deleteShell: async ({ caller, params, query, reply }) =>
      accepted(reply, await shells.delete(caller, params.id, query.confirm)),
    actOnShell: async ({ caller, params, body, reply }) =>
      accepted(reply, await shells.act(caller, params.id, params.capability, body)),
    listSnapshots: async ({ caller, params }) => ({
      items: await shells.snapshots(caller, params.id),
    }),
    execInShell: async ({ caller, params, body, request, reply }) => {
      if (!wantsEventStream(request)) return shells.exec(caller, params.id, body);
      // Refuse a missing or stopped shell with a normal JSON error before the stream opens.
      await shells.requireRunning(caller, params.id);
      const stream = openEventStream(request, reply);
      const decoders = { stdout: new TextDecoder(), stderr: new TextDecoder() };
      try {
        const result = await shells.exec(caller, params.id, body, {
          signal: stream.signal,
          onOutput: (type, chunk) =>
            stream.send(type, {
              type,
              data: decoders[type].decode(chunk, { stream: true }),
              time: Date.now(),
            }),
        });
        await stream.send("exit", {
          type: "exit",
          result: { ...result, stdout: "", stderr: "" },
          time: Date.now(),
        });
      } catch (error) {
        const code = error instanceof AppError ? error.code : "internal";
        await stream.send(
          "error",
          errorBody(code, error instanceof Error ? error.message : "exec failed", request.id),
        );
      } finally {
        stream.end();
      }
      return STREAMED;
    },
    listActivity: async ({ caller, query }) => activity.list(caller.orgId, query),
    getPolicy: async ({ caller }) => policies.get(caller.orgId),
    updatePolicy: async ({ caller, body }) => policies.update(caller, body),
    listProjects: async ({ caller }) => ({ items: await iam.listProjects(caller) }),
    createProject: async ({ caller, body }) => iam.createProject(caller, body),
    listMembers: async ({ caller }) => ({ items: await iam.listMembers(caller) }),
    createMember: async ({ caller, body }) => iam.createMember(caller, body),
    updateMember: async ({ caller, params, body }) => iam.updateMember(caller, params.id, body),
    removeMember: async ({ caller, params }) => iam.removeMember(caller, params.id),
    listAgents: async ({ caller }) => ({ items: await iam.listAgents(caller) }),
    createAgent: async ({ caller, body }) => iam.createAgent(caller, body),
    deleteAgent: async ({ caller, params }) => iam.deleteAgent(caller, params.id),
    listKeys: async ({ caller }) => ({ items: await iam.listKeys(caller) }),
    createKey: async ({ caller, body }) => iam.createKey(caller, body),
    revokeKey: async ({ caller, params }) => iam.revokeKey(caller, params.id),
    listEntitlements: async ({ caller }) => ({ items: await iam.listEntitlements(caller) }),
    grantEntitlement: async ({ caller, body }) => iam.grantEntitlement(caller, body),
    revokeEntitlement: async ({ caller, params }) => iam.revokeEntitlement(caller, params.id),
    listApprovals: async ({ caller, query }) => ({ items: await gate.list(caller, query.state) }),
    getApproval: async ({ caller, params }) => gate.get(caller, params.id),
    grantApproval: async ({ caller, params, body }) =>
      shells.grantApproval(caller, params.id, body.reason),
    denyApproval: async ({ caller, params, body }) => {
      await gate.decide(caller, params.id, "denied", body.reason);
      return gate.get(caller, params.id);
    },
    agentInvoke: async ({ caller, body }) => agentGate.invoke(caller, body),
    listFiles: async ({ caller, params, query }) => ({
      items: await files.list(caller, params.id, query.path),
    }),
    statFile: async ({ caller, params, query }) => files.stat(caller, params.id, query.path),
    readFile: async ({ caller, params, query, reply }) =>
      sendBytes(reply, "application/octet-stream", await files.read(caller, params.id, query.path)),
    writeFile: async ({ caller, params, query, body }) =>
      files.write(caller, params.id, query, body as Buffer),
    removeFile: async ({ caller, params, query }) =>
      files.remove(caller, params.id, query.path, query.recursive === "true"),
    downloadArchive: async ({ caller, params, query, reply }) =>
      sendBytes(
        reply,
        "application/x-tar",
        await files.exportArchive(caller, params.id, query.path),
      ),
    uploadArchive: async ({ caller, params, query, body }) =>
      files.importArchive(caller, params.id, query.path, body as Buffer),
    runInterpreter: async ({ caller, params, body }) => interpreters.turn(caller, params.id, body),
    createRun: async ({ caller, body }) => runs.create(caller, body),
    listRuns: async ({ caller, query }) => ({ items: await runs.list(caller, query.limit) }),
    getRun: async ({ caller, params }) => runs.get(caller, params.id),
    getRunResult: async ({ caller, params }) => runs.get(caller, params.id),
    getRunActivity: async ({ caller, params }) => ({
      items: await runs.activityOf(caller, params.id),
    }),
    readRunArtifact: async ({ caller, params, query, reply }) =>
      sendBytes(
        reply,
        "application/octet-stream",
        await runs.artifact(caller, params.id, query.path),
      ),
    deleteRun: async ({ caller, params }) => runs.teardown(caller, params.id),
    streamRun: async ({ caller, params, request, reply }) => {
      const lastEventId = Number(request.headers["last-event-id"] ?? 0) || 0;
      const backlog = await runs.frames(caller, params.id, lastEventId);
      if (!wantsEventStream(request)) return { items: backlog };
      const stream = openEventStream(request, reply);
      let last = lastEventId;
      let finished = false;
      let wake: () => void = () => undefined;
      const live: RunFrame[] = [];
      const unsubscribe = runs.subscribe(params.id, (frame) => {
        live.push(frame);
        wake();
      });
      try {
        const send = async (frame: RunFrame) => {
          if (frame.seq <= last) return;
          last = frame.seq;
          await stream.send(frame.type, frame, frame.seq);
          if (frame.type === "exit") finished = true;
        };
        for (const frame of backlog) await send(frame);
        // Frames stored between the backlog read and the subscription are fetched once more.
        for (const frame of await runs.frames(caller, params.id, last)) await send(frame);
        if ((await runs.get(caller, params.id)).status !== "running" && !finished) {
          for (const frame of await runs.frames(caller, params.id, last)) await send(frame);
          finished = true;
        }
        while (!finished && !stream.closed) {
          if (live.length === 0)
            await new Promise<void>((resolve) => {
              wake = resolve;
              setTimeout(resolve, 15_000).unref();
            });
          const frame = live.shift();
          if (frame) await send(frame);
          else if (!stream.closed) await stream.send("ping", { time: Date.now() });
        }
      } finally {
        unsubscribe();
        stream.end();
      }
      return STREAMED;
    },
    // The attach URL comes from configuration (or the listening address), never from the request's Host.
    mintTermCredential: async ({ caller, params }) =>
      terms.mint(caller, params.id, publicBaseUrl(app, config)),
  };
  registerRoutes(app, handlers, {
    db,
    activity,
    validateResponses: config.validateResponses,
    oidc,
  });
  // Console login and logout (outside /api/v1 and the route table; see docs/architecture.md).
  registerAuthRoutes(app, oidc);
  // Agents over MCP (streamable HTTP; see docs/architecture.md): the same tools, through the same gate.
  registerMcpEndpoint(app, { db, activity, oidc, agentGate, config, version: SERVER_VERSION });
  if (oidc) {
    app.addHook("onReady", async () => {
      oidc.idp
        .warmUp()
        .catch((error: unknown) =>
          deps.logger.warn(
            { reason: describeIdpError(error) },
            "OIDC issuer not reachable yet; logins will retry discovery",
          ),
        );
    });
  }

  app.get("/openapi.json", async () => openapi);
  app.get("/docs", async (_request, reply) =>
    reply.type("text/html; charset=utf-8").send(docsHtml),
  );
  // The web console at `/` (built files, index.html for its routes); never shadows the API.
  registerConsoleStatic(app, config.consoleDir);

  app.addHook("onReady", async () => {
    const counts = await shells.reconcile();
    deps.logger.info(counts, "reconciled shells with their backends");
  });
  const sweepMs = deps.sweepIntervalMs ?? 5000;
  if (sweepMs > 0) {
    const timer = setInterval(() => {
      shells
        .expire()
        .catch((error: unknown) => deps.logger.error({ err: error }, "ttl sweep failed"));
    }, sweepMs);
    timer.unref();
    app.addHook("onClose", async () => clearInterval(timer));
  }
  return app;
}

export { ROUTES };
