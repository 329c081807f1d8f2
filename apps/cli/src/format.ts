/** Text formatting of CLI output: tables, key/value views, ages and sizes. */
import type { Shell } from "@l1fe/shells";

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
  const seconds = Math.max(0, Math.floor((nowMs - Date.parse(isoTime)) / 1000));
  if (Number.isNaN(seconds)) return "?";
  if (seconds < 120) return `${seconds}s`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 120) return `${minutes}m`;
  const hours = Math.floor(minutes / 60);
  if (hours < 48) return `${hours}h`;
  const days = Math.floor(hours / 24);
  if (days < 730) return `${days}d`;
  return `${Math.floor(days / 365)}y`;
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
    ["runtime", `${shell.runtime} (backend ${shell.backend})`],
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
