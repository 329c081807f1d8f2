import fastifyWebsocket from "@fastify/websocket";
import type { SandboxBackend } from "@shells/sandbox";
import Fastify, { type FastifyBaseLogger, type FastifyInstance } from "fastify";
import { join } from "node:path";
import { randomUUID } from "node:crypto";
import { readFileSync } from "node:fs";
import { cpus, totalmem } from "node:os";
import { publicBaseUrl, type ServerConfig } from "./config.js";
import { makeResolver } from "./egress/egress-proxy.js";
import { EgressService } from "./egress/egress-service.js";
import { AuthFailureLog } from "./iam/auth-failure-log.js";
import { CallerCache } from "./iam/caller-cache.js";
import { describeIdpError } from "./iam/oidc/identity-provider.js";
import { OidcAuth } from "./iam/oidc/oidc-auth.js";
import { ServerMetrics } from "./metrics/server-metrics.js";
import { ActivityTree } from "./audit/activity-tree.js";
import { CheckpointService } from "./audit/checkpoint-service.js";
import { CheckpointSigner } from "./audit/checkpoint-signer.js";
import { EvidenceService } from "./audit/evidence-service.js";
import { RunRetentionService } from "./services/run-retention-service.js";
import { retentionHandlers } from "./routes/retention-routes.js";
import { SealedBox } from "./iam/sealed-box.js";
import { standingWatch } from "./iam/standing.js";
import { ApprovalGate } from "./orchestrator/approval-gate.js";
import { CapacityGate } from "./orchestrator/capacity.js";
import { FileService } from "./orchestrator/file-service.js";
import { InterpreterService } from "./orchestrator/interpreter-service.js";
import { KeyedMutex } from "./orchestrator/keyed-mutex.js";
import { RunReviewService } from "./orchestrator/run-reviews.js";
import { RunService } from "./orchestrator/run-service.js";
import { RegionPools, resolveRegionPools } from "./orchestrator/region-pools.js";
import { RuntimeRegistry } from "./orchestrator/runtimes.js";
import { ShellService } from "./orchestrator/shell-service.js";
import type { GitCloneDeps } from "./sources/git-clone.js";
import { PortService } from "./orchestrator/port-service.js";
import { TermService, selectTermProtocol } from "./orchestrator/term-service.js";
import { agentGateHandlers } from "./routes/agent-gate-routes.js";
import { approvalHandlers } from "./routes/approval-routes.js";
import { bindingHandlers } from "./routes/binding-routes.js";
import { projectEgressHandlers } from "./routes/project-egress-routes.js";
import { templateHandlers } from "./routes/template-routes.js";
import { auditHandlers } from "./routes/audit-routes.js";
import { registerAuthRoutes } from "./routes/auth-routes.js";
import { guardConnections } from "./routes/connection-guard.js";
import { registerConsoleStatic } from "./routes/console-static.js";
import { healthHandlers, registerDocsRoutes } from "./routes/docs-routes.js";
import { frameworkErrors, registerErrorHandler } from "./routes/error-handler.js";
import { registerGracefulShutdown } from "./routes/graceful-shutdown.js";
import { fileHandlers } from "./routes/file-routes.js";
import { iamHandlers } from "./routes/iam-routes.js";
import { registerMcpEndpoint } from "./routes/mcp-endpoint.js";
import { registerMetrics } from "./routes/metrics-route.js";
import { portHandlers, registerPortProxy } from "./routes/port-routes.js";
import { registerRoutes } from "./routes/register-routes.js";
import { registerRequestAuth } from "./routes/request-auth.js";
import { runHandlers } from "./routes/run-routes.js";
import { shellHandlers } from "./routes/shell-routes.js";
import { registerTerminalAttach, terminalHandlers } from "./routes/terminal-routes.js";
import { webhookHandlers } from "./routes/webhook-routes.js";
import { usageHandlers } from "./routes/usage-routes.js";
import { ActivityService } from "./services/activity-service.js";
import { BindingService } from "./services/binding-service.js";
import { TemplateService } from "./services/template-service.js";
import { AgentGate } from "./iam/agent-gate.js";
import { CapService } from "./services/cap-service.js";
import { GovernanceService } from "./services/governance-service.js";
import { IamService } from "./services/iam-service.js";
import { IdempotencyService } from "./services/idempotency-service.js";
import { KeyService } from "./services/key-service.js";
import { MeteringService } from "./services/metering-service.js";
import { PolicyService } from "./services/policy-service.js";
import { ProjectEgressService } from "./services/project-egress-service.js";
import type { Store } from "./store/database.js";
import { memoryHeldAcrossOrgs } from "./store/shells-store.js";
import { LeaseKeeper } from "./replicas/lease-keeper.js";
import { TemplateImageService } from "./templates/template-images.js";
import { WebhookDispatcher } from "./webhooks/webhook-dispatcher.js";
import { WebhookService } from "./webhooks/webhook-service.js";
import { traceBackend } from "./tracing/backend-spans.js";
import { registerRequestSpans } from "./tracing/request-spans.js";

/** The lease of the background work (see `LeaseKeeper`), as named in `leases` and the metrics. */
export const BACKGROUND_LEASE = "background";

/** The server's version, reported in the OpenAPI document. */
export const SERVER_VERSION = "0.1.0";

/** What the app is built from. Nothing here is a module-level singleton. */
export interface AppDeps {
  store: Store;
  backends: SandboxBackend[];
  logger: FastifyBaseLogger;
  /** How often expired shells are stopped; 0 disables the sweep (default 5000). */
  sweepIntervalMs?: number;
  /**
   * How often the webhook outbox is checked for due retries, ms (new deliveries go out at once);
   * 0 sends nothing, and deliveries wait in the outbox (default 1000).
   */
  webhookPollIntervalMs?: number;
  /**
   * How often metering checkpoints and period caps are swept, ms; 0 disables both timers (state
   * changes are still metered). Default: the configuration's `meteringCheckpointSeconds`.
   */
  meteringIntervalMs?: number;
  /**
   * Whether other control-plane processes use the same store at once (replicas over a shared
   * database). Default: true on PostgreSQL, false on SQLite. False: at start-up every pending idempotency key of another
   * process belongs to a dead one and is resolved at once. True: only keys whose owner's lease ran
   * out are (see `IdempotencyService`).
   */
  storeSharedByReplicas?: boolean;
  /** The time the retention sweep expires runs against (default: the wall clock); tests move it. */
  clock?: () => Date;
}

/**
 * Builds the control plane's HTTP app without listening: the services, then every route under
 * `routes/`. Tests drive it with `app.inject()`; `startServer` listens on a socket.
 */
export async function buildApp(config: ServerConfig, deps: AppDeps): Promise<FastifyInstance> {
  const app = Fastify({
    loggerInstance: deps.logger,
    bodyLimit: config.bodyLimitBytes,
    // A UUID comes from random bytes Node draws in bulk and caches; drawing 8 bytes per request
    // costs about twenty times as much (measured 2.8 µs against 0.14 µs).
    genReqId: () => `req-${randomUUID()}`,
    requestIdHeader: false,
    routerOptions: { maxParamLength: 200 },
    // A shutdown answers in the API's own error shape (see graceful-shutdown.ts).
    return503OnClosing: false,
    frameworkErrors,
    // Slow or silent clients are cut off; these bound receiving a request, never a response.
    keepAliveTimeout: config.keepAliveTimeoutMs,
    requestTimeout: config.requestTimeoutMs,
    http: {
      headersTimeout: Math.min(config.headersTimeoutMs, config.requestTimeoutMs),
      connectionsCheckingInterval: 1000,
    },
  });
  guardConnections(app.server, config);
  // JSON is the only body the API accepts; anything else is 415, never parsed as text.
  app.removeContentTypeParser("text/plain");
  // File uploads and archives arrive as raw bytes; only the routes that declare them accept them.
  app.addContentTypeParser(
    ["application/octet-stream", "application/x-tar"],
    { parseAs: "buffer" },
    (_request, body, done) => done(null, body),
  );
  app.addHook("onRequest", async (request, reply) => {
    reply.header("x-request-id", request.id);
  });
  registerErrorHandler(app, config);
  // With tracing on (see tracing/tracing.ts): a span per request, and backend calls under it.
  const tracing = config.otlpEndpoint !== undefined;
  if (tracing) registerRequestSpans(app);
  const backends = tracing ? deps.backends.map(traceBackend) : deps.backends;

  const db = deps.store.db;
  const baseUrl = () => publicBaseUrl(config, app.server);
  const windowMs = config.authFailureWindowSeconds * 1000;
  const activity = new ActivityService(db);
  const sealedBox = SealedBox.open(config.dataDir, config.sealingKeys);
  const signer = CheckpointSigner.open(config.dataDir, sealedBox);
  const checkpoints = new CheckpointService({
    db,
    tree: new ActivityTree(db),
    signer,
    logger: deps.logger,
  });
  const failures = new AuthFailureLog(activity, { windowMs, logger: deps.logger });
  const runtimes = new RuntimeRegistry(backends);
  const policies = new PolicyService(db, activity);
  const resolve = makeResolver(config.egressTestHosts);
  const gate = new ApprovalGate(db, activity, policies);
  const bindings = new BindingService(db, activity, sealedBox, {
    allowHttpUpstream: config.bindingsAllowHttp,
  });
  const templates = new TemplateService(db, activity);
  const templateImages = new TemplateImageService({
    db,
    templates,
    runtimes,
    activity,
    logger: deps.logger,
    unusedForMs: config.imageUnusedSeconds * 1000,
  });
  const projectEgress = new ProjectEgressService(db, activity, gate);
  const placement = resolveRegionPools(config);
  const metrics = new ServerMetrics(db, { regions: placement.pools.map((p) => p.region) });
  // Times every response; serves Prometheus metrics to the operator (token-protected, else off).
  registerMetrics(app, metrics, config.metricsToken);
  const egress = new EgressService({
    socketDir: join(config.dataDir, "egress"),
    activity,
    policy: (orgId) => policies.get(orgId),
    projectRules: (orgId, projectId) => projectEgress.rulesOf(orgId, projectId),
    logger: deps.logger,
    resolve,
    decisionWindowMs: config.egressDecisionWindowSeconds * 1000,
    headerTimeoutMs: config.egressHeaderTimeoutSeconds * 1000,
    tunnelIdleMs: config.egressTunnelIdleSeconds * 1000,
    bindings,
    ...(config.bindingsCaFile
      ? { bindingsExtraCa: [readFileSync(config.bindingsCaFile, "utf8")] }
      : {}),
    metrics,
  });
  const metering = new MeteringService({
    db,
    runtimes,
    activity,
    logger: deps.logger,
    egress,
  });
  // Lifecycle work on one shell (and admission to one project's caps) runs one at a time, on
  // every server sharing the store.
  const lock = deps.store.lifecycleLock(new KeyedMutex());
  const caps = new CapService({ db, activity, metering, logger: deps.logger, lock });
  // The backend pools by region, each with its class slots; reservations are the default region's.
  const pools = new RegionPools({
    db,
    ...placement,
    reservations: config.reservations,
    lock,
  });
  const idempotency = new IdempotencyService({ db, logger: deps.logger });
  const git: GitCloneDeps = {
    limits: {
      maxBytes: config.gitMaxBytes,
      maxFiles: config.gitMaxFiles,
      timeoutMs: config.gitTimeoutSeconds * 1000,
    },
    vet: (orgId, host, port, scope) => egress.vet(orgId, host, port, scope),
    bindings,
  };
  // The host's capacity: creates start a few at a time, within a budget of shell memory.
  const hostGate = new CapacityGate({
    maxProvisioning: config.maxProvisioning ?? 8 * cpus().length,
    queueTimeoutMs: config.createQueueTimeoutMs,
    memoryBudgetMb: Math.floor(
      (config.hostMemoryMb ?? totalmem() / (1024 * 1024)) * config.memoryOvercommit,
    ),
    // Pooled sandboxes no shell owns yet hold memory too.
    committedMb: async () =>
      (await memoryHeldAcrossOrgs(db)) +
      runtimes.backends.reduce((sum, backend) => sum + (backend.pooledMemoryMb?.() ?? 0), 0),
  });
  const shells = new ShellService({
    db,
    hostGate,
    lock,
    activity,
    runtimes,
    logger: deps.logger,
    region: pools.defaultRegion,
    policies,
    gate,
    dataDir: config.dataDir,
    sealedBox,
    egress,
    bindings,
    metrics,
    metering,
    caps,
    pools,
    templates,
    templateImages,
    idempotency,
    git,
  });
  caps.stopWith((orgId, shellId, why) => shells.stopForQuota(orgId, shellId, why));
  egress.stopWith((orgId, shellId, usage) => shells.stopForEgressLimit(orgId, shellId, usage));
  const reconciler = shells.reconciler;
  const watch = standingWatch(db);
  const iam = new IamService(db, activity, policies);
  const keys = new KeyService(db, activity);
  const files = new FileService(shells, activity);
  const terms = new TermService(db, shells, policies, activity, deps.logger);
  const ports = new PortService(db, shells, activity);
  const interpreters = new InterpreterService(shells, activity);
  const runs = new RunService(db, shells, activity, config.dataDir, deps.logger, {
    artifacts: {
      quotaBytes: config.runArtifactMaxBytes,
      maxCount: config.runArtifactMaxCount,
      reserveBytes: config.dataDirReserveMb * 1024 * 1024,
    },
    gate,
  });
  const dispatcher = new WebhookDispatcher({
    db,
    box: sealedBox,
    policies,
    resolve,
    logger: deps.logger,
    metrics,
    maxAttempts: config.webhookMaxAttempts,
    retryBaseMs: config.webhookRetryBaseMs,
    timeoutMs: config.webhookTimeoutMs,
  });
  const webhooks = new WebhookService(db, activity, sealedBox, policies, dispatcher.wake);
  // Every recorded event that endpoints subscribe to queues its deliveries in its own transaction.
  activity.addSink(webhooks.enqueue);
  // Each signed checkpoint goes to the endpoints that subscribed to it: someone outside holds it.
  checkpoints.onCheckpoint((checkpoint) => {
    webhooks
      .enqueueCheckpoint(checkpoint)
      .catch((error: unknown) =>
        deps.logger.error(
          { err: error, checkpointId: checkpoint.id },
          "could not queue a checkpoint",
        ),
      );
  });
  const reviews = new RunReviewService(db, runs, activity, policies);
  const evidence = new EvidenceService(runs, checkpoints, signer, reviews);
  const retention = new RunRetentionService({
    db,
    activity,
    runs,
    logger: deps.logger,
    defaultDays: config.runRetentionDays,
    ...(deps.clock ? { clock: deps.clock } : {}),
  });
  const agentGate = new AgentGate(shells, activity, { terms, interpreters, runs, files, baseUrl });
  const oidc = config.oidc
    ? new OidcAuth({
        db,
        activity,
        failures,
        settings: config.oidc,
        sessionTtlSeconds: config.sessionTtlSeconds,
        publicUrl: baseUrl,
        logger: deps.logger,
      })
    : null;
  registerGracefulShutdown(app, {
    graceMs: config.shutdownGraceSeconds * 1000,
    logger: deps.logger,
    endWork: async () => {
      const execs = shells.endExecs("host_restart");
      deps.logger.warn({ execs }, "execs still running end with kill reason host_restart");
      interpreters.close();
      await Promise.all([terms.close(), runs.drain()]);
    },
  });
  const describeShell = (orgId: string, shellId: string) => shells.describe(orgId, shellId);
  const othersMayBeAlive = deps.storeSharedByReplicas ?? deps.store.dialect !== "sqlite";
  // The background work over every org (reconciliation, the TTL sweep, metering checkpoints, cap
  // sweeps, webhook delivery, checkpoint signing, the retention sweep) runs on one server of those sharing the store:
  // whichever holds the lease (see replicas/lease-keeper.ts). On SQLite that is always this one.
  const background = new LeaseKeeper({
    db,
    name: BACKGROUND_LEASE,
    exclusive: deps.store.dialect === "sqlite",
    ttlMs: config.leaseTtlSeconds * 1000,
    logger: deps.logger,
    onAcquire: async () => {
      // Metering closes what a previous holder left open before reconciliation changes any
      // state, and opens the intervals of the shells found afterwards.
      await metering.recover();
      // Runs a dead process left `running` end before reconciliation, which deletes their shells.
      if (!othersMayBeAlive) deps.logger.info({ runs: await runs.recover() }, "ended cut runs");
      deps.logger.info(await reconciler.reconcile(), "reconciled shells with their backends");
      // After reconciliation: a key of a cut create is answered with its shell as it now stands.
      await idempotency.recover({
        othersMayBeAlive,
        describeShell,
      });
      await metering.resume();
      const sweepMs = deps.sweepIntervalMs ?? 5000;
      if (sweepMs > 0) reconciler.start(sweepMs);
      dispatcher.start(deps.webhookPollIntervalMs ?? 1000);
      const meteringMs = deps.meteringIntervalMs ?? config.meteringCheckpointSeconds * 1000;
      metering.start(meteringMs);
      caps.start(meteringMs);
      if (config.checkpointIntervalSeconds > 0)
        checkpoints.start(config.checkpointIntervalSeconds * 1000);
      retention.start(config.retentionSweepSeconds * 1000);
      templateImages.start(config.imageSweepIntervalSeconds * 1000);
    },
    onLose: () => {
      retention.stop();
      templateImages.stop();
      reconciler.stop();
      caps.stop();
      metering.stop();
      checkpoints.stop();
      dispatcher.stop();
    },
  });
  metrics.reportLease(BACKGROUND_LEASE, () => background.held);

  app.addHook("onClose", async () => {
    idempotency.stop();
    const held = background.held;
    retention.stop();
    reconciler.stop();
    caps.stop();
    metering.stop();
    checkpoints.stop();
    templateImages.stop();
    await terms.close();
    interpreters.close();
    await runs.drain();
    // The last checkpoint: a restart continues every shell still in its state from here. Only
    // the holder checkpoints: two readers of one counter would both count it.
    if (held) await metering.checkpoint();
    await failures.close();
    await egress.close();
    // Last: what closing the rest recorded is queued; a try cut off here is due again at start.
    await dispatcher.close();
    await background.close();
  });

  const callers = new CallerCache();
  activity.addSink(callers.forgetOnIamChange);
  const limit = { failureLimit: config.authFailureLimit, windowMs };
  const authenticate = await registerRequestAuth(app, {
    db,
    failures,
    oidc,
    callers,
    ...limit,
    requestLimit: config.rateLimitPerKey,
    requestWindowMs: config.rateLimitWindowSeconds * 1000,
  });
  // Before `@fastify/websocket`: exposed ports tunnel upgrades themselves (see port-routes.ts).
  await registerPortProxy(app, ports);
  await app.register(fastifyWebsocket, {
    options: { maxPayload: 1024 * 1024, handleProtocols: selectTermProtocol },
  });
  registerTerminalAttach(app, terms);
  registerRoutes(
    app,
    {
      ...healthHandlers(db, runtimes, pools),
      ...shellHandlers({ shells, runtimes, interpreters, activity, policies, watch }),
      ...fileHandlers(files),
      ...runHandlers(runs, reviews, watch),
      ...iamHandlers(iam, keys),
      ...bindingHandlers(bindings),
      ...templateHandlers(templates, templateImages),
      ...projectEgressHandlers(projectEgress),
      ...retentionHandlers(retention),
      ...approvalHandlers(gate, shells, runs),
      ...webhookHandlers(webhooks),
      ...auditHandlers(checkpoints, evidence),
      ...agentGateHandlers(agentGate),
      ...terminalHandlers(terms, baseUrl),
      ...usageHandlers(metering, caps, new GovernanceService(db)),
      ...portHandlers(ports, baseUrl),
    },
    { idempotency, activity, validateResponses: config.validateResponses, authenticate },
  );
  registerAuthRoutes(app, oidc, limit);
  // Agents over MCP (streamable HTTP; see docs/architecture.md): the same tools, through the same gate.
  registerMcpEndpoint(app, {
    activity,
    authenticate,
    agentGate,
    config,
    version: SERVER_VERSION,
    shells,
  });
  registerDocsRoutes(app, SERVER_VERSION);
  // The web console at `/` (built files, index.html for its routes); never shadows the API.
  registerConsoleStatic(app, config.consoleDir);

  app.addHook("onReady", async () => {
    oidc?.idp
      .warmUp()
      .catch((error: unknown) =>
        deps.logger.warn(
          { reason: describeIdpError(error) },
          "OIDC issuer not reachable yet; logins will retry discovery",
        ),
      );
    // A free lease is taken (and its start-up work done) before the server answers.
    await background.start();
    // Every server resolves the keys of dead ones as their leases run out.
    idempotency.start(describeShell);
  });
  return app;
}
