import {
  bindingEnvName,
  type Capability,
  type ExecRequest,
  type ExecResult,
  type ResolvedResources,
  type RouteBody,
  type Shell,
  type ShellStatus,
  type EgressRules,
  type ShellEgress,
} from "@shells/contract";
import { SANDBOX_EGRESS_PORT } from "@shells/sandbox";
import { BINDINGS_PATH, type BindingGrant } from "../egress/binding-proxy.js";
import type { ShellEgressSettings } from "../egress/egress-service.js";
import { actorOf, type Caller } from "../iam/principal.js";
import type { SealedBox } from "../iam/sealed-box.js";
import { redact, secretValues } from "../redact.js";
import type { ActivityService } from "../services/activity-service.js";
import type { ShellTable } from "../store/schema.js";
import type { ShellRow } from "../store/shells-store.js";
import type { Admitted } from "./admission.js";

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
      ...(row.egress ? { egress: JSON.parse(row.egress) as ShellEgress } : {}),
      ...(row.bindings ? { bindings: grantsOf(row).map((g) => g.name) } : {}),
      ...(row.template ? { template: row.template } : {}),
      region: row.region,
      resources: JSON.parse(row.resources) as ResolvedResources,
      envKeys: Object.keys(JSON.parse(row.env) as Record<string, string>).sort(),
      secretEnvKeys: Object.keys(this.secretEnv(row)).sort(),
      backend: row.backend,
      imageVersion: row.image_version,
      isolation: row.isolation,
      ttlSeconds: row.ttl_seconds,
      expiresAt: row.expires_at,
      createdAt: row.created_at,
      updatedAt: row.updated_at,
    };
  }

  /**
   * The row of a new shell, `provisioning`; its secret environment is stored sealed.
   * `egressRules`: those of the template version it is made from, kept for its egress proxy.
   */
  newRow(
    id: string,
    name: string,
    input: RouteBody<"createShell"> & { language: Shell["language"] },
    admitted: Admitted,
    grants: readonly BindingGrant[],
    creator: { type: "user" | "agent"; id: string },
    egressRules: EgressRules | null,
  ): Omit<ShellTable, "org_id"> {
    const now = new Date().toISOString();
    const secretEnv = input.secretEnv ?? {};
    return {
      id,
      project_id: admitted.project.id,
      name,
      status: "provisioning",
      status_reason: null,
      language: input.language,
      runtime: admitted.runtime,
      network: admitted.network,
      egress: admitted.egress ? JSON.stringify(admitted.egress) : null,
      egress_rules: egressRules ? JSON.stringify(egressRules) : null,
      bindings: grants.length > 0 ? JSON.stringify(grants) : null,
      region: admitted.region,
      resources: JSON.stringify(admitted.resources),
      env: JSON.stringify(input.env ?? {}),
      secret_env:
        Object.keys(secretEnv).length > 0 ? this.box.seal(JSON.stringify(secretEnv)) : null,
      backend: admitted.backend.name,
      image_version: null,
      isolation: null,
      ttl_seconds: input.ttlSeconds ?? null,
      expires_at: input.ttlSeconds
        ? new Date(Date.now() + input.ttlSeconds * 1000).toISOString()
        : null,
      created_at: now,
      updated_at: now,
      deleted_at: null,
      template: input.template ?? null,
      created_by_type: creator.type,
      created_by_id: creator.id,
      delete_requested_by: null,
    };
  }

  /**
   * The create request a fork of `row` makes: the parent's language, runtime, network and egress,
   * region, project, resources, environment (secret too) and TTL; the name is the caller's.
   */
  forkInput(row: ShellRow): RouteBody<"createShell"> {
    const secretEnv = this.secretEnv(row);
    return {
      language: row.language as Shell["language"],
      runtime: row.runtime as Shell["runtime"],
      network: row.network as Shell["network"],
      ...(row.egress ? { egress: JSON.parse(row.egress) as ShellEgress } : {}),
      region: row.region,
      project: row.project_name,
      resources: JSON.parse(row.resources) as ResolvedResources,
      env: JSON.parse(row.env) as Record<string, string>,
      ...(Object.keys(secretEnv).length > 0 ? { secretEnv } : {}),
      ...(row.ttl_seconds !== null ? { ttlSeconds: row.ttl_seconds } : {}),
      ...(row.template !== null ? { template: row.template } : {}),
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

/** The service bindings a shell was granted at launch. */
export function grantsOf(row: Pick<ShellTable, "bindings">): BindingGrant[] {
  return row.bindings ? (JSON.parse(row.bindings) as BindingGrant[]) : [];
}

/**
 * What a shell's egress proxy serves, or null when the shell has none: `internet` shells and
 * shells granted bindings have one.
 */
export function egressSettingsOf(
  row: Pick<ShellTable, "network" | "egress" | "egress_rules" | "bindings" | "project_id">,
): ShellEgressSettings | null {
  const bindings = grantsOf(row);
  const internet = row.network === "internet";
  if (!internet && bindings.length === 0) return null;
  return {
    internet,
    projectId: row.project_id,
    templateRules: row.egress_rules ? (JSON.parse(row.egress_rules) as EgressRules) : null,
    egress: row.egress ? (JSON.parse(row.egress) as ShellEgress) : null,
    bindings,
  };
}

/**
 * The variables that carry a shell's binding URLs: `SHELLS_BINDING_<NAME>_URL` =
 * `http://127.0.0.1:3128/bindings/<name>` — the egress proxy's listener inside the sandbox. A URL,
 * never a secret: the proxy holds the secret and adds it on the way out.
 */
export function bindingEnv(grants: readonly BindingGrant[]): Record<string, string> {
  return Object.fromEntries(
    grants.map((g) => [
      bindingEnvName(g.name),
      `http://127.0.0.1:${SANDBOX_EGRESS_PORT}${BINDINGS_PATH}${g.name}`,
    ]),
  );
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

/** Records a lifecycle step of a caller on a shell in the activity history. */
export async function recordShellAction(
  activity: ActivityService,
  caller: Caller,
  shellId: string,
  capability: Capability | "delete" | "egress_change" | "binding_attach" | "binding_detach",
  outcome: "success" | "failure" | "denied",
  details: Record<string, unknown>,
): Promise<void> {
  await activity.record({
    orgId: caller.orgId,
    actor: actorOf(caller),
    action: capability === "delete" ? "shell.delete" : `shell.action.${capability}`,
    target: { type: "shell", id: shellId },
    outcome,
    details,
  });
}
