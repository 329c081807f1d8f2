import type {
  ExecRequest,
  ExecResult,
  ResolvedResources,
  Shell,
  ShellStatus,
} from "@shells/contract";
import type { SealedBox } from "../iam/sealed-box.js";
import { redact, secretValues } from "../redact.js";
import type { ShellRow } from "../store/shells-store.js";

/** Characters of each exec's stdout and stderr kept in its log entry. */
export const EXEC_LOG_EXCERPT_CHARS = 2000;

/** Explicit secret values shorter than this are not masked (masking `1` would mask every digit). */
const MIN_EXPLICIT_SECRET_CHARS = 3;

/**
 * How a stored shell becomes what the API shows: environment values are never shown (names only),
 * and the secret environment is opened only to run commands and to know what to mask.
 */
export class ShellRecords {
  constructor(private readonly box: SealedBox) {}

  /** The API's view of a shell row. */
  toShell(row: ShellRow): Shell {
    return {
      id: row.id,
      name: row.name,
      project: row.project_name,
      status: row.status as ShellStatus,
      statusReason: row.status_reason,
      language: row.language as Shell["language"],
      runtime: row.runtime as Shell["runtime"],
      network: row.network as Shell["network"],
      region: row.region,
      resources: JSON.parse(row.resources) as ResolvedResources,
      envKeys: Object.keys(JSON.parse(row.env) as Record<string, string>).sort(),
      secretEnvKeys: Object.keys(this.secretEnv(row)).sort(),
      backend: row.backend,
      imageVersion: row.image_version,
      ttlSeconds: row.ttl_seconds,
      expiresAt: row.expires_at,
      createdAt: row.created_at,
      updatedAt: row.updated_at,
    };
  }

  /** The shell's secret environment, opened. */
  secretEnv(row: ShellRow): Record<string, string> {
    return row.secret_env
      ? (JSON.parse(this.box.unseal(row.secret_env)) as Record<string, string>)
      : {};
  }

  /** Values to mask: every explicit secret, and plain values whose names look secret. */
  secretsOf(plain: Record<string, string>, secret: Record<string, string>): string[] {
    return [
      ...secretValues(plain),
      ...Object.values(secret).filter((v) => v.length >= MIN_EXPLICIT_SECRET_CHARS),
    ];
  }
}

/** An exec's log line and history details, with `secrets` masked in every excerpt. */
export function describeExec(
  request: ExecRequest,
  result: ExecResult,
  secrets: readonly string[],
): { logLine: string; details: Record<string, unknown> } {
  const summary = redact(request.command.join(" ").slice(0, 300), secrets);
  const excerpt = (label: string, text: string) =>
    text
      ? `\n${label}: ${redact(text.slice(0, EXEC_LOG_EXCERPT_CHARS), secrets)}${text.length > EXEC_LOG_EXCERPT_CHARS ? " […]" : ""}`
      : "";
  return {
    logLine:
      `$ ${summary} → exit ${result.exitCode}${result.killReason ? ` (killed: ${result.killReason})` : ""} in ${Math.round(result.durationMs)} ms, ${result.stdout.length} B stdout, ${result.stderr.length} B stderr` +
      excerpt("stdout", result.stdout) +
      excerpt("stderr", result.stderr),
    details: {
      command: summary,
      exitCode: result.exitCode,
      durationMs: Math.round(result.durationMs),
      ...(result.killReason ? { killReason: result.killReason } : {}),
      ...(request.env ? { envKeys: Object.keys(request.env) } : {}),
      ...(request.secretEnv ? { secretEnvKeys: Object.keys(request.secretEnv) } : {}),
    },
  };
}
