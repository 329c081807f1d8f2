import { parseArgs } from "node:util";
import { resolve } from "node:path";
import { z } from "zod";

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
  /** Check every response against the contract (on in tests). Env `SHELLS_VALIDATE_RESPONSES=1`. */
  validateResponses: z
    .union([
      z.boolean(),
      z.enum(["0", "1", "true", "false"]).transform((v) => v === "1" || v === "true"),
    ])
    .default(false),
});
export type ServerConfig = z.infer<typeof ServerConfig>;

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
    },
    strict: true,
  });
  const raw = {
    port: values.port ?? env.SHELLS_PORT,
    host: values.host ?? env.SHELLS_HOST,
    dataDir: values["data-dir"] ?? env.SHELLS_DATA_DIR,
    backend: values.backend ?? env.SHELLS_BACKEND,
    profile: values.profile ?? env.SHELLS_PROFILE,
    logLevel: values["log-level"] ?? env.SHELLS_LOG_LEVEL,
    bodyLimitBytes: env.SHELLS_BODY_LIMIT_BYTES,
    region: env.SHELLS_REGION,
    validateResponses: env.SHELLS_VALIDATE_RESPONSES,
  };
  const parsed = ServerConfig.safeParse(
    Object.fromEntries(Object.entries(raw).filter(([, v]) => v !== undefined && v !== "")),
  );
  if (!parsed.success) {
    const problems = parsed.error.issues.map((i) => `${i.path.join(".")}: ${i.message}`).join("; ");
    throw new Error(`invalid configuration: ${problems}`);
  }
  return { ...parsed.data, dataDir: resolve(parsed.data.dataDir) };
}
