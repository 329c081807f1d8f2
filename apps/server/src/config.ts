import type { AddressInfo } from "node:net";
import { parseArgs } from "node:util";
import { resolve } from "node:path";
import { z } from "zod";
import { Role } from "@shells/contract";

/** JWS algorithms a token may be signed with. Symmetric (HS*) and `none` are never accepted. */
export const ASYMMETRIC_JWS_ALGORITHMS = [
  "RS256",
  "RS384",
  "RS512",
  "PS256",
  "PS384",
  "PS512",
  "ES256",
  "ES384",
  "ES512",
  "EdDSA",
  "Ed25519",
] as const;

const LOOPBACK_HOST = /^(127(?:\.\d{1,3}){3}|\[::1\]|localhost)$/;

/** Splits a comma- or space-separated list, dropping empty entries. */
function splitList(value: string, separator: RegExp): string[] {
  return value
    .split(separator)
    .map((s) => s.trim())
    .filter((s) => s.length > 0);
}

/**
 * OpenID Connect settings: console login (authorization code + PKCE) and JWT bearer tokens for
 * programs. Present only when `SHELLS_OIDC_ISSUER` is set.
 */
export const OidcConfig = z
  .strictObject({
    /**
     * Issuer URL, exactly as the provider's discovery document names it. Env `SHELLS_OIDC_ISSUER`.
     * Must be https; plain http is accepted only for a loopback issuer (a development IdP).
     */
    issuer: z.url().refine((value) => {
      const url = new URL(value);
      return (
        url.protocol === "https:" || (url.protocol === "http:" && LOOPBACK_HOST.test(url.hostname))
      );
    }, "must be an https URL (http is allowed only on loopback)"),
    /** OAuth client id registered at the issuer. Env `SHELLS_OIDC_CLIENT_ID`. */
    clientId: z.string().min(1),
    /** Client secret; without one the server is a public client (PKCE only). Env `SHELLS_OIDC_CLIENT_SECRET`. */
    clientSecret: z.string().min(1).optional(),
    /** Scopes asked for at login, space-separated; must include `openid`. Env `SHELLS_OIDC_SCOPES`. */
    scopes: z
      .string()
      .default("openid profile email")
      .transform((v) => splitList(v, /[\s,]+/))
      .refine((v) => v.includes("openid"), "must include openid"),
    /** Accepted `aud` of bearer JWTs (default: the client id). Env `SHELLS_OIDC_AUDIENCE`. */
    audience: z.string().min(1).optional(),
    /**
     * Claim that carries the user's groups or roles (a string or an array of strings; a dotted path
     * such as `realm_access.roles` reaches into objects). Env `SHELLS_OIDC_ROLE_CLAIM`.
     */
    roleClaim: z.string().min(1).default("groups"),
    /**
     * Claim value → role, e.g. `shells-admins=admin,shells-devs=developer`. The highest mapped role
     * wins; a user with no mapped value is refused. Env `SHELLS_OIDC_ROLE_MAP`.
     */
    roleMap: z
      .string()
      .transform((v, ctx) => {
        const entries: { claimValue: string; role: Role }[] = [];
        for (const item of splitList(v, /,/)) {
          const at = item.lastIndexOf("=");
          const role = Role.safeParse(item.slice(at + 1).trim());
          const claimValue = item.slice(0, Math.max(at, 0)).trim();
          if (at <= 0 || !claimValue || !role.success) {
            ctx.addIssue({
              code: "custom",
              message: `"${item}" is not <claim value>=<owner|admin|developer|viewer>`,
            });
            return z.NEVER;
          }
          entries.push({ claimValue, role: role.data });
        }
        return entries;
      })
      .pipe(
        z
          .array(z.object({ claimValue: z.string(), role: Role }))
          .min(1, "maps no claim value to a role"),
      ),
    /** Name of the org OIDC users belong to; created on first login. Env `SHELLS_OIDC_ORG`. */
    org: z.string().min(1).default("default"),
    /**
     * Signature algorithms accepted on ID tokens and bearer JWTs, comma-separated. Only asymmetric
     * ones: `none` and HS* would let anyone who knows the public key forge tokens.
     * Env `SHELLS_OIDC_ALGORITHMS`.
     */
    algorithms: z
      .string()
      .default("RS256,ES256,PS256,EdDSA")
      .transform((v) => splitList(v, /[\s,]+/))
      .pipe(z.array(z.enum(ASYMMETRIC_JWS_ALGORITHMS)).min(1)),
    /**
     * How often a console session re-asks the issuer whether the user still maps to a role, seconds
     * (0 = on every request). Env `SHELLS_OIDC_RECHECK_SECONDS`.
     */
    recheckSeconds: z.coerce.number().int().min(0).max(60).default(60),
  })
  .transform((o) => ({ ...o, audience: o.audience ?? o.clientId }));
export type OidcConfig = z.infer<typeof OidcConfig>;

/**
 * Server configuration, parsed once at start. Precedence: command-line flag, then environment
 * variable, then default.
 */
export const ServerConfig = z.strictObject({
  /** TCP port. Flag `--port`, env `SHELLS_PORT`. */
  port: z.coerce.number().int().min(0).max(65535).default(8080),
  /** Listen address. Flag `--host`, env `SHELLS_HOST`. Loopback by default. */
  host: z.string().min(1).default("127.0.0.1"),
  /** Directory of the SQLite store, the admin token and backend state. Flag `--data-dir`, env `SHELLS_DATA_DIR`. */
  dataDir: z.string().min(1).default("./.shells"),
  /**
   * The store on a PostgreSQL server instead of SQLite in the data dir:
   * `postgres://user:password@host:port/database` (libpq-style query parameters such as `sslmode`
   * pass through). Several servers over one database are replicas (see `leaseTtlSeconds`). Its
   * password never reaches a log. Env `SHELLS_DATABASE_URL`.
   */
  databaseUrl: z
    .string()
    .refine((value) => {
      try {
        return ["postgres:", "postgresql:"].includes(new URL(value).protocol);
      } catch {
        return false;
      }
    }, "must be a postgres:// (or postgresql://) URL")
    .optional(),
  /**
   * How long a replica's lease on the background work (reconciler, TTL sweep, metering, cap
   * sweeps, webhook delivery, checkpoint signing) lasts without renewal, seconds: the longest
   * that work pauses after its holder dies. Renewed every third of it. Only a PostgreSQL store
   * has replicas; on SQLite the one server always holds it. Env `SHELLS_LEASE_TTL_SECONDS`.
   */
  leaseTtlSeconds: z.coerce.number().min(1).max(300).default(15),
  /**
   * Which backend runs shells. Flag `--backend`, env `SHELLS_BACKEND`. `container` is the real one;
   * `simulator` is a model for tests and demos that runs no code, used only when asked for.
   */
  backend: z.enum(["container", "simulator"]).default("container"),
  /** `local` bootstraps an org and an admin key on first start; `hosted` never does. Flag `--profile`, env `SHELLS_PROFILE`. */
  profile: z.enum(["local", "hosted"]).default("local"),
  /** pino level. Flag `--log-level`, env `SHELLS_LOG_LEVEL`. */
  logLevel: z.enum(["fatal", "error", "warn", "info", "debug", "trace", "silent"]).default("info"),
  /** Largest accepted request body, bytes. Env `SHELLS_BODY_LIMIT_BYTES`. */
  bodyLimitBytes: z.coerce
    .number()
    .int()
    .min(1024)
    .default(1024 * 1024),
  /** Default region recorded on shells. Env `SHELLS_REGION`. */
  region: z.string().min(1).default("local"),
  /**
   * Where the container backend keeps its base images (default `<dataDir>/container/images`); several
   * data dirs may share one. Env `SHELLS_IMAGES_DIR`.
   */
  imagesDir: z.string().min(1).optional(),
  /**
   * Where the microvm backend keeps the guest kernel, base disks and saved VM templates (default
   * `<dataDir>/microvm/cache`); several data dirs may share one. Env `SHELLS_MICROVM_CACHE_DIR`.
   */
  microvmCacheDir: z.string().min(1).optional(),
  /**
   * Capabilities root keeps inside container shells: `none` (default: zero effective capabilities,
   * enough for pip and editing anything in the shell) or `package-manager` (Docker's default set,
   * still confined to the shell's user namespace, so dpkg/apt can change file owners). Env
   * `SHELLS_ROOT_CAPABILITIES`.
   */
  rootCapabilities: z.enum(["none", "package-manager"]).default("none"),
  /**
   * Formatted shell disks (of the default `diskMb`) the container backend keeps ready, so a create
   * skips mkfs; refilled in the background, reported by `/readyz`. 0: none. Env
   * `SHELLS_CONTAINER_WARM_DISKS`.
   */
  containerWarmDisks: z.coerce.number().int().min(0).max(1000).default(0),
  /**
   * Directory of the built web console served at `/` (default: `apps/console/dist` next to this
   * server package). Env `SHELLS_CONSOLE_DIR`.
   */
  consoleDir: z.string().min(1).optional(),
  /**
   * Base URL users reach the server at (the OIDC redirect URI is `<publicUrl>/auth/callback`;
   * https makes the session cookie Secure). Default `http://<host>:<port>`. Flag `--public-url`,
   * env `SHELLS_PUBLIC_URL`.
   */
  publicUrl: z
    .url({ protocol: /^https?$/ })
    .refine((v) => {
      const url = new URL(v);
      return !url.search && !url.hash && !url.username && !url.password;
    }, "must be a plain http(s) base URL")
    .transform((v) => v.replace(/\/+$/, ""))
    .optional(),
  /**
   * Keys that seal secrets at rest (base64 of 32 bytes, comma-separated; the first seals, all open).
   * Default: `<data dir>/sealing-key`, created on first use. Env `SHELLS_SEALING_KEY`.
   */
  sealingKeys: z.string().min(1).optional(),
  /** Lifetime of a console session, seconds (default 8 h). Env `SHELLS_SESSION_TTL_SECONDS`. */
  sessionTtlSeconds: z.coerce
    .number()
    .int()
    .min(60)
    .default(8 * 3600),
  /** OIDC login and JWT bearer tokens; null when `SHELLS_OIDC_ISSUER` is not set. */
  oidc: OidcConfig.nullable().default(null),
  /**
   * Most open connections from one remote address; more are closed at once, so one host cannot
   * hold every socket. Env `SHELLS_MAX_CONNECTIONS_PER_ADDRESS`.
   */
  maxConnectionsPerAddress: z.coerce.number().int().min(1).default(256),
  /** Most open connections in all; more are closed at once. Env `SHELLS_MAX_CONNECTIONS`. */
  maxConnections: z.coerce.number().int().min(1).default(4096),
  /**
   * How long a new connection may stay silent before its first request arrives, ms; then it is
   * closed. Env `SHELLS_IDLE_SOCKET_TIMEOUT_MS`.
   */
  idleSocketTimeoutMs: z.coerce.number().int().min(100).default(10_000),
  /** Longest a client may take to send a request's headers, ms. Env `SHELLS_HEADERS_TIMEOUT_MS`. */
  headersTimeoutMs: z.coerce.number().int().min(100).default(15_000),
  /**
   * Longest a client may take to send a whole request (headers and body), ms. Responses are not
   * bounded by it: exec streams, run streams and terminals stay open. Env `SHELLS_REQUEST_TIMEOUT_MS`.
   */
  requestTimeoutMs: z.coerce.number().int().min(100).default(120_000),
  /** How long an idle keep-alive connection is kept between requests, ms. Env `SHELLS_KEEP_ALIVE_TIMEOUT_MS`. */
  keepAliveTimeoutMs: z.coerce.number().int().min(100).default(5_000),
  /**
   * Refused authentications one address may cause per window before it is answered 429
   * `rate_limited` (callers that authenticate are never throttled by it). Env
   * `SHELLS_AUTH_FAILURE_LIMIT`.
   */
  authFailureLimit: z.coerce.number().int().min(1).default(300),
  /**
   * The window of `authFailureLimit`, and of aggregating refused authentications into one activity
   * event per source, seconds. Env `SHELLS_AUTH_FAILURE_WINDOW_SECONDS`.
   */
  authFailureWindowSeconds: z.coerce.number().int().min(1).max(3600).default(60),
  /**
   * Requests one API key may make per `rateLimitWindowSeconds` (for a console session or a JWT: one
   * person or agent); past it the API answers 429 `rate_limited` with `Retry-After`. 0 turns the
   * limit off. Env `SHELLS_RATE_LIMIT_PER_KEY`.
   */
  rateLimitPerKey: z.coerce.number().int().min(0).default(6000),
  /** The window of `rateLimitPerKey`, seconds. Env `SHELLS_RATE_LIMIT_WINDOW_SECONDS`. */
  rateLimitWindowSeconds: z.coerce.number().int().min(1).max(3600).default(60),
  /**
   * The window of aggregating egress decisions into one activity event per destination, seconds.
   * Env `SHELLS_EGRESS_DECISION_WINDOW_SECONDS`.
   */
  egressDecisionWindowSeconds: z.coerce.number().int().min(1).max(3600).default(60),
  /**
   * How often each org whose activity history grew gets a signed checkpoint, seconds; 0 signs only
   * on demand. Env `SHELLS_CHECKPOINT_INTERVAL_SECONDS`.
   */
  checkpointIntervalSeconds: z.coerce
    .number()
    .int()
    .min(0)
    .max(7 * 24 * 3600)
    .default(3600),
  /**
   * Names the egress proxies resolve from this map instead of DNS (`name → addresses`). Set only
   * programmatically, by tests that give their own upstream servers names; no flag or variable.
   */
  egressTestHosts: z.record(z.string(), z.array(z.string())).optional(),
  /**
   * A PEM file of extra CA certificates the egress proxy trusts for service binding upstreams,
   * besides Node's bundled roots (a private CA, or a test CA). Nothing else trusts them: not the
   * API's clients, not the shells. Env `SHELLS_BINDINGS_CA_FILE`.
   */
  bindingsCaFile: z.string().min(1).optional(),
  /**
   * Accept plain `http://` binding upstreams: for tests and development only (the secret would
   * cross the network in the clear). Env `SHELLS_BINDINGS_ALLOW_HTTP=1`.
   */
  bindingsAllowHttp: z
    .union([
      z.boolean(),
      z.enum(["0", "1", "true", "false"]).transform((v) => v === "1" || v === "true"),
    ])
    .default(false),
  /**
   * Bearer token a Prometheus scraper presents at `GET /metrics` (at least 16 characters). Metrics
   * describe every org on the server, so no org's API key opens them; without a token the path is
   * not served. Env `SHELLS_METRICS_TOKEN`.
   */
  metricsToken: z.string().min(16, "must be at least 16 characters").optional(),
  /**
   * Tries per webhook delivery before it is given up (`failed`). Env `SHELLS_WEBHOOK_MAX_ATTEMPTS`.
   */
  webhookMaxAttempts: z.coerce.number().int().min(1).max(50).default(10),
  /**
   * Wait after a webhook delivery's first failed try, ms; it doubles with each further try (up to
   * an hour). Env `SHELLS_WEBHOOK_RETRY_BASE_MS`.
   */
  webhookRetryBaseMs: z.coerce.number().int().min(10).default(10_000),
  /** Longest one webhook delivery try may take, ms. Env `SHELLS_WEBHOOK_TIMEOUT_MS`. */
  webhookTimeoutMs: z.coerce.number().int().min(100).max(120_000).default(10_000),
  /**
   * How often metering reads every running shell's counters and checkpoints its open intervals,
   * and how often period caps are swept, seconds. A crash loses at most this much of the time of
   * shells whose state changed while the server was down. Env `SHELLS_METERING_CHECKPOINT_SECONDS`.
   */
  meteringCheckpointSeconds: z.coerce.number().min(0.1).max(60).default(2),
  /**
   * Most bytes a git workload source may fetch and check out (each bounded on its own), bytes.
   * Env `SHELLS_GIT_MAX_BYTES`.
   */
  gitMaxBytes: z.coerce
    .number()
    .int()
    .min(1024)
    .max(4 * 1024 ** 3)
    .default(64 * 1024 ** 2),
  /** Most files in a git workload source's commit. Env `SHELLS_GIT_MAX_FILES`. */
  gitMaxFiles: z.coerce.number().int().min(1).max(1_000_000).default(20_000),
  /** Wall clock of a git source's clone, seconds. Env `SHELLS_GIT_TIMEOUT_SECONDS`. */
  gitTimeoutSeconds: z.coerce.number().int().min(1).max(3600).default(120),
  /** Check every response against the contract (on in tests). Env `SHELLS_VALIDATE_RESPONSES=1`. */
  validateResponses: z
    .union([
      z.boolean(),
      z.enum(["0", "1", "true", "false"]).transform((v) => v === "1" || v === "true"),
    ])
    .default(false),
});
export type ServerConfig = z.infer<typeof ServerConfig>;

/**
 * The server's public base URL: `SHELLS_PUBLIC_URL` when set, else `http://<host>:<port>` of the
 * listening socket (a wildcard host is reached through loopback). Attach URLs and the OIDC redirect
 * URI are built from it, never from a request's `Host`.
 */
export function publicBaseUrl(
  config: Pick<ServerConfig, "publicUrl" | "host" | "port">,
  server: { address(): AddressInfo | string | null },
): string {
  if (config.publicUrl) return config.publicUrl;
  const address = server.address();
  const port = address !== null && typeof address === "object" ? address.port : config.port;
  const host = config.host === "0.0.0.0" ? "127.0.0.1" : config.host === "::" ? "::1" : config.host;
  return `http://${host.includes(":") ? `[${host}]` : host}:${port}`;
}

/** Parses configuration from flags and environment; throws a readable error on bad values. */
export function loadConfig(
  argv: string[] = [],
  env: NodeJS.ProcessEnv = process.env,
): ServerConfig {
  const { values } = parseArgs({
    args: argv,
    options: {
      port: { type: "string" },
      host: { type: "string" },
      "data-dir": { type: "string" },
      backend: { type: "string" },
      profile: { type: "string" },
      "log-level": { type: "string" },
      "public-url": { type: "string" },
    },
    strict: true,
  });
  const raw = {
    port: values.port ?? env.SHELLS_PORT,
    host: values.host ?? env.SHELLS_HOST,
    dataDir: values["data-dir"] ?? env.SHELLS_DATA_DIR,
    databaseUrl: env.SHELLS_DATABASE_URL,
    leaseTtlSeconds: env.SHELLS_LEASE_TTL_SECONDS,
    backend: values.backend ?? env.SHELLS_BACKEND,
    profile: values.profile ?? env.SHELLS_PROFILE,
    logLevel: values["log-level"] ?? env.SHELLS_LOG_LEVEL,
    bodyLimitBytes: env.SHELLS_BODY_LIMIT_BYTES,
    region: env.SHELLS_REGION,
    imagesDir: env.SHELLS_IMAGES_DIR,
    microvmCacheDir: env.SHELLS_MICROVM_CACHE_DIR,
    rootCapabilities: env.SHELLS_ROOT_CAPABILITIES,
    containerWarmDisks: env.SHELLS_CONTAINER_WARM_DISKS,
    consoleDir: env.SHELLS_CONSOLE_DIR,
    validateResponses: env.SHELLS_VALIDATE_RESPONSES,
    publicUrl: values["public-url"] ?? env.SHELLS_PUBLIC_URL,
    sessionTtlSeconds: env.SHELLS_SESSION_TTL_SECONDS,
    sealingKeys: env.SHELLS_SEALING_KEY,
    maxConnectionsPerAddress: env.SHELLS_MAX_CONNECTIONS_PER_ADDRESS,
    maxConnections: env.SHELLS_MAX_CONNECTIONS,
    idleSocketTimeoutMs: env.SHELLS_IDLE_SOCKET_TIMEOUT_MS,
    headersTimeoutMs: env.SHELLS_HEADERS_TIMEOUT_MS,
    requestTimeoutMs: env.SHELLS_REQUEST_TIMEOUT_MS,
    keepAliveTimeoutMs: env.SHELLS_KEEP_ALIVE_TIMEOUT_MS,
    authFailureLimit: env.SHELLS_AUTH_FAILURE_LIMIT,
    authFailureWindowSeconds: env.SHELLS_AUTH_FAILURE_WINDOW_SECONDS,
    egressDecisionWindowSeconds: env.SHELLS_EGRESS_DECISION_WINDOW_SECONDS,
    bindingsCaFile: env.SHELLS_BINDINGS_CA_FILE,
    bindingsAllowHttp: env.SHELLS_BINDINGS_ALLOW_HTTP,
    metricsToken: env.SHELLS_METRICS_TOKEN,
    rateLimitPerKey: env.SHELLS_RATE_LIMIT_PER_KEY,
    rateLimitWindowSeconds: env.SHELLS_RATE_LIMIT_WINDOW_SECONDS,
    webhookMaxAttempts: env.SHELLS_WEBHOOK_MAX_ATTEMPTS,
    webhookRetryBaseMs: env.SHELLS_WEBHOOK_RETRY_BASE_MS,
    webhookTimeoutMs: env.SHELLS_WEBHOOK_TIMEOUT_MS,
    meteringCheckpointSeconds: env.SHELLS_METERING_CHECKPOINT_SECONDS,
    gitMaxBytes: env.SHELLS_GIT_MAX_BYTES,
    gitMaxFiles: env.SHELLS_GIT_MAX_FILES,
    gitTimeoutSeconds: env.SHELLS_GIT_TIMEOUT_SECONDS,
    checkpointIntervalSeconds: env.SHELLS_CHECKPOINT_INTERVAL_SECONDS,
    oidc: oidcSettings(env),
  };
  const parsed = ServerConfig.safeParse(
    Object.fromEntries(Object.entries(raw).filter(([, v]) => v !== undefined && v !== "")),
  );
  if (!parsed.success) {
    const problems = parsed.error.issues
      .map((i) => {
        const path = i.path.join(".");
        const name = ENV_NAMES[path] ?? ENV_NAMES[i.path.slice(0, 2).join(".")] ?? path;
        return `${name}: ${i.message}`;
      })
      .join("; ");
    throw new Error(`invalid configuration: ${problems}`);
  }
  return { ...parsed.data, dataDir: resolve(parsed.data.dataDir) };
}

/** Environment variables of settings whose field path would not say where to fix them. */
const ENV_NAMES: Record<string, string> = {
  databaseUrl: "SHELLS_DATABASE_URL",
  leaseTtlSeconds: "SHELLS_LEASE_TTL_SECONDS",
  publicUrl: "SHELLS_PUBLIC_URL",
  sealingKeys: "SHELLS_SEALING_KEY",
  sessionTtlSeconds: "SHELLS_SESSION_TTL_SECONDS",
  maxConnectionsPerAddress: "SHELLS_MAX_CONNECTIONS_PER_ADDRESS",
  maxConnections: "SHELLS_MAX_CONNECTIONS",
  idleSocketTimeoutMs: "SHELLS_IDLE_SOCKET_TIMEOUT_MS",
  headersTimeoutMs: "SHELLS_HEADERS_TIMEOUT_MS",
  requestTimeoutMs: "SHELLS_REQUEST_TIMEOUT_MS",
  keepAliveTimeoutMs: "SHELLS_KEEP_ALIVE_TIMEOUT_MS",
  authFailureLimit: "SHELLS_AUTH_FAILURE_LIMIT",
  authFailureWindowSeconds: "SHELLS_AUTH_FAILURE_WINDOW_SECONDS",
  egressDecisionWindowSeconds: "SHELLS_EGRESS_DECISION_WINDOW_SECONDS",
  bindingsCaFile: "SHELLS_BINDINGS_CA_FILE",
  bindingsAllowHttp: "SHELLS_BINDINGS_ALLOW_HTTP",
  metricsToken: "SHELLS_METRICS_TOKEN",
  rateLimitPerKey: "SHELLS_RATE_LIMIT_PER_KEY",
  rateLimitWindowSeconds: "SHELLS_RATE_LIMIT_WINDOW_SECONDS",
  webhookMaxAttempts: "SHELLS_WEBHOOK_MAX_ATTEMPTS",
  webhookRetryBaseMs: "SHELLS_WEBHOOK_RETRY_BASE_MS",
  webhookTimeoutMs: "SHELLS_WEBHOOK_TIMEOUT_MS",
  meteringCheckpointSeconds: "SHELLS_METERING_CHECKPOINT_SECONDS",
  gitMaxBytes: "SHELLS_GIT_MAX_BYTES",
  gitMaxFiles: "SHELLS_GIT_MAX_FILES",
  gitTimeoutSeconds: "SHELLS_GIT_TIMEOUT_SECONDS",
  checkpointIntervalSeconds: "SHELLS_CHECKPOINT_INTERVAL_SECONDS",
  "oidc.issuer": "SHELLS_OIDC_ISSUER",
  "oidc.clientId": "SHELLS_OIDC_CLIENT_ID",
  "oidc.clientSecret": "SHELLS_OIDC_CLIENT_SECRET",
  "oidc.scopes": "SHELLS_OIDC_SCOPES",
  "oidc.audience": "SHELLS_OIDC_AUDIENCE",
  "oidc.roleClaim": "SHELLS_OIDC_ROLE_CLAIM",
  "oidc.roleMap": "SHELLS_OIDC_ROLE_MAP",
  "oidc.org": "SHELLS_OIDC_ORG",
  "oidc.algorithms": "SHELLS_OIDC_ALGORITHMS",
  "oidc.recheckSeconds": "SHELLS_OIDC_RECHECK_SECONDS",
};

/** The raw OIDC settings from the environment, or undefined when none is set. */
function oidcSettings(env: NodeJS.ProcessEnv): Record<string, string> | undefined {
  const raw = {
    issuer: env.SHELLS_OIDC_ISSUER,
    clientId: env.SHELLS_OIDC_CLIENT_ID,
    clientSecret: env.SHELLS_OIDC_CLIENT_SECRET,
    scopes: env.SHELLS_OIDC_SCOPES,
    audience: env.SHELLS_OIDC_AUDIENCE,
    roleClaim: env.SHELLS_OIDC_ROLE_CLAIM,
    roleMap: env.SHELLS_OIDC_ROLE_MAP,
    org: env.SHELLS_OIDC_ORG,
    algorithms: env.SHELLS_OIDC_ALGORITHMS,
    recheckSeconds: env.SHELLS_OIDC_RECHECK_SECONDS,
  };
  const set = Object.entries(raw).filter(
    (e): e is [string, string] => e[1] !== undefined && e[1] !== "",
  );
  return set.length > 0 ? Object.fromEntries(set) : undefined;
}
