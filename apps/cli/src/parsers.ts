import { GateMode, GatedAction } from "@shells/contract";
import { InvalidArgumentError } from "commander";

/**
 * Collects repeatable `KEY=VALUE` options (`--env A=1 --env B=2`) into a record. The value may
 * itself contain `=`; the key must be an environment variable name.
 */
export function parseEnvPair(
  value: string,
  previous: Record<string, string> = {},
): Record<string, string> {
  const separator = value.indexOf("=");
  const key = separator === -1 ? value : value.slice(0, separator);
  if (separator === -1 || !/^[A-Za-z_][A-Za-z0-9_]*$/.test(key)) {
    throw new InvalidArgumentError(
      "expected KEY=VALUE with KEY a variable name (letters, digits, _).",
    );
  }
  return { ...previous, [key]: value.slice(separator + 1) };
}

const DURATION_UNITS_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/**
 * Parses a duration into milliseconds: `500ms`, `30s`, `5m`, `1h`, `1.5s`; a bare number counts
 * seconds (as `timeout(1)` does).
 */
export function parseDurationMs(value: string): number {
  const match = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(value.trim());
  const unitMs = DURATION_UNITS_MS[match?.[2] ?? "s"];
  if (!match?.[1] || unitMs === undefined) {
    throw new InvalidArgumentError("expected a duration such as 500ms, 30s, 5m or 1h.");
  }
  const ms = Math.round(Number(match[1]) * unitMs);
  if (ms < 1) throw new InvalidArgumentError("expected a duration of at least 1ms.");
  return ms;
}

/** Parses a positive whole number (counts, MiB). */
export function parsePositiveInt(value: string): number {
  if (!/^\d+$/.test(value.trim()) || Number(value) < 1) {
    throw new InvalidArgumentError("expected a positive whole number.");
  }
  return Number(value);
}

/** Parses a positive number that may be fractional (CPU cores). */
export function parsePositiveNumber(value: string): number {
  const number = Number(value);
  if (value.trim() === "" || !Number.isFinite(number) || number <= 0) {
    throw new InvalidArgumentError("expected a positive number.");
  }
  return number;
}

/** Parses a duration (as {@link parseDurationMs}: `30s`, `5m`, `1h`, bare seconds) into whole seconds. */
export function parseDurationSeconds(value: string): number {
  const ms = parseDurationMs(value);
  if (ms % 1000 !== 0)
    throw new InvalidArgumentError("expected whole seconds, e.g. 90, 30s, 5m or 1h.");
  return ms / 1000;
}

/** Parses a comma-separated list (`a,b`); blanks are dropped, so `""` is the empty list. */
export function parseCommaList(value: string): string[] {
  return value
    .split(",")
    .map((item) => item.trim())
    .filter((item) => item !== "");
}

/**
 * Collects repeatable `--gate ACTION=MODE` options (`--gate wipe_state=approvers --gate delete=confirm`)
 * into the approval gates to change.
 */
export function parseGate(
  value: string,
  previous: Partial<Record<GatedAction, GateMode>> = {},
): Partial<Record<GatedAction, GateMode>> {
  const [action, mode, ...rest] = value.split("=");
  const parsedAction = GatedAction.safeParse(action);
  const parsedMode = GateMode.safeParse(mode);
  if (rest.length > 0 || !parsedAction.success || !parsedMode.success) {
    throw new InvalidArgumentError(
      `expected ACTION=MODE with ACTION one of ${GatedAction.options.join(", ")} and MODE one of ${GateMode.options.join(", ")}.`,
    );
  }
  return { ...previous, [parsedAction.data]: parsedMode.data };
}

/** Collects a repeatable option's values. */
export function collect(value: string, previous: string[] = []): string[] {
  return [...previous, value];
}
