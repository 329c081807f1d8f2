/** Text formatting of CLI output: tables, key/value views, ages and sizes. */
import type { Approval, PendingApproval, PrincipalRef, Shell } from "@l1fe/shells";

/**
 * Renders rows under upper-case headers, columns left-aligned and separated by two spaces. The last
 * column is not padded, so lines carry no trailing blanks.
 */
export function formatTable(
  headers: readonly string[],
  rows: readonly (readonly string[])[],
): string {
  const all = [headers.map((header) => header.toUpperCase()), ...rows];
  const widths = headers.map((_, column) =>
    Math.max(...all.map((row) => (row[column] ?? "").length)),
  );
  return all
    .map((row) =>
      row
        .map((cell, column) =>
          column === row.length - 1 ? cell : cell.padEnd(widths[column] ?? 0),
        )
        .join("  ")
        .trimEnd(),
    )
    .join("\n");
}

/** Renders `label value` lines with the values aligned. */
export function formatKeyValues(pairs: readonly (readonly [string, string])[]): string {
  const width = Math.max(...pairs.map(([label]) => label.length));
  return pairs.map(([label, value]) => `${label.padEnd(width)}  ${value}`.trimEnd()).join("\n");
}

/**
 * How long ago an ISO time was, compactly: `12s`, `5m`, `3h`, `4d`, `2y`. A time in the future (clock
 * skew) reads `0s`.
 */
export function formatAge(isoTime: string, nowMs: number): string {
  return formatSpan((nowMs - Date.parse(isoTime)) / 1000, Math.floor);
}

/**
 * How long until an ISO time (an expiry), as compactly as {@link formatAge} but rounded to the
 * nearest unit, so a day less a second reads `24h`. A time already past reads `0s`.
 */
export function formatTimeUntil(isoTime: string, nowMs: number): string {
  return formatSpan((Date.parse(isoTime) - nowMs) / 1000, Math.round);
}

function formatSpan(rawSeconds: number, round: (value: number) => number): string {
  const seconds = Math.max(0, round(rawSeconds));
  if (Number.isNaN(seconds)) return "?";
  if (seconds < 120) return `${seconds}s`;
  const minutes = round(seconds / 60);
  if (minutes < 120) return `${minutes}m`;
  const hours = round(seconds / 3600);
  if (hours < 48) return `${hours}h`;
  const days = round(seconds / 86_400);
  if (days < 730) return `${days}d`;
  return `${round(seconds / (365 * 86_400))}y`;
}

/** A byte count in binary units: `512 B`, `1.5 KiB`, `20 MiB`. */
export function formatBytes(bytes: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  const rounded = unit === 0 || value >= 10 ? Math.round(value) : Math.round(value * 10) / 10;
  return `${rounded} ${units[unit]}`;
}

/** The columns `shells ls` shows for each shell. */
export const SHELL_TABLE_HEADERS = [
  "id",
  "name",
  "status",
  "language",
  "runtime",
  "network",
  "age",
];

/** One `shells ls` row. */
export function shellRow(shell: Shell, nowMs: number): string[] {
  return [
    shell.id,
    shell.name,
    shell.status,
    shell.language,
    shell.runtime,
    shell.network,
    formatAge(shell.createdAt, nowMs),
  ];
}

/** Everything about one shell, as `shells get` and `shells create` print it. */
export function formatShell(shell: Shell, nowMs: number): string {
  const { cpu, memoryMb, pids, diskMb } = shell.resources;
  const pairs: [string, string][] = [
    ["id", shell.id],
    ["name", shell.name],
    ["project", shell.project],
    ["status", shell.statusReason ? `${shell.status} (${shell.statusReason})` : shell.status],
    ["language", shell.language],
    ["runtime", `${shell.isolation ?? shell.runtime} (backend ${shell.backend})`],
    ["network", shell.network],
    ["region", shell.region],
    ["resources", `cpu ${cpu}, memory ${memoryMb} MiB, pids ${pids}, disk ${diskMb} MiB`],
    ["env", shell.envKeys.length > 0 ? shell.envKeys.join(", ") : "-"],
    ["image", shell.imageVersion ?? "-"],
    ["expires", shell.expiresAt ? `${shell.expiresAt} (ttl ${shell.ttlSeconds}s)` : "-"],
    ["created", `${shell.createdAt} (${formatAge(shell.createdAt, nowMs)} ago)`],
    ["updated", `${shell.updatedAt} (${formatAge(shell.updatedAt, nowMs)} ago)`],
  ];
  return formatKeyValues(pairs);
}

/** A user or agent as `user:usr-…` / `agent:agt-…`. */
export function formatPrincipal(principal: PrincipalRef): string {
  return `${principal.type}:${principal.id}`;
}

/** Everything about one approval, as `shells approvals get|grant|deny` print it. */
export function formatApproval(approval: Approval, nowMs: number): string {
  const pairs: [string, string][] = [
    ["id", approval.id],
    ["state", approval.state],
    ["action", approval.action],
    ["shell", approval.shellId],
    ["requested by", formatPrincipal(approval.requestedBy)],
    ["requested", `${approval.createdAt} (${formatAge(approval.createdAt, nowMs)} ago)`],
  ];
  if (approval.state === "pending") {
    pairs.push([
      "expires",
      `${approval.expiresAt} (in ${formatTimeUntil(approval.expiresAt, nowMs)})`,
    ]);
  } else if (approval.state === "expired") {
    pairs.push(["expired", approval.expiresAt]);
  }
  if (approval.decidedBy !== null) pairs.push(["decided by", `user:${approval.decidedBy}`]);
  if (approval.decidedAt !== null) pairs.push(["decided", approval.decidedAt]);
  if (approval.reason !== null) pairs.push(["reason", approval.reason]);
  if (approval.outcome !== null) pairs.push(["outcome", approval.outcome]);
  pairs.push(...contextPairs(approval));
  return formatKeyValues(pairs);
}

/** What an approval's context tells its approver: what is asked, why it waits, and the diff. */
function contextPairs(approval: Approval): [string, string][] {
  const context = approval.context;
  if (!context) return [];
  const pairs: [string, string][] = [];
  if (context.summary) pairs.push(["asks to", context.summary]);
  if (context.policy) pairs.push(["because", context.policy]);
  if (context.template) pairs.push(["template", context.template]);
  if (context.bindings) pairs.push(["bindings", context.bindings.join(", ")]);
  if (context.diff) {
    pairs.push(["widens", context.diff.widens.join("; ") || "-"]);
    if (context.diff.narrows.length > 0) pairs.push(["narrows", context.diff.narrows.join("; ")]);
  }
  return pairs;
}

/**
 * What `shells action` and `shells rm` print when the org's gate parked the request for an approver:
 * the approval, when it expires, and the command an approver runs.
 */
export function formatPendingApproval(pending: PendingApproval, nowMs: number): string {
  const { approval } = pending;
  return [
    `pending approval: ${pending.message}`,
    formatKeyValues([
      ["approval", approval.id],
      ["action", approval.action],
      ["shell", approval.shellId],
      ["expires", `${approval.expiresAt} (in ${formatTimeUntil(approval.expiresAt, nowMs)})`],
      ...contextPairs(approval),
    ]),
    `next: ask an approver: shells approvals grant ${approval.id} --reason "…"`,
  ].join("\n");
}

/**
 * A secret shown masked: its type prefix (`sht_`, up to the first `_` within 8 characters) and its
 * last 4 characters, enough to tell two apart and never enough to use one: `sht_…abcd`. A secret
 * too short to keep anything hidden is masked whole.
 */
export function maskSecret(secret: string): string {
  const underscore = secret.indexOf("_");
  const prefix = underscore >= 0 && underscore < 8 ? secret.slice(0, underscore + 1) : "";
  const rest = secret.slice(prefix.length);
  if (rest.length < 16) return `${prefix}…`;
  return `${prefix}…${rest.slice(-4)}`;
}

/** Permission bits as `ls -l` shows them: `rwxr-xr-x`. */
export function formatMode(mode: number): string {
  const bits = "rwxrwxrwx";
  return [...bits].map((letter, i) => (mode & (1 << (8 - i)) ? letter : "-")).join("");
}
