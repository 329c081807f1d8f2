import type { RateCard, RateCardUpdate, RuntimeClass } from "@shells/contract";

/**
 * Money arithmetic for metering. Amounts are integer micro-units (1e-6 of the currency) held in
 * `bigint`; the API carries them as decimal strings. Nothing here touches a float, so a report's
 * cost is the same however its rows are added up.
 */

/** Micro-units per currency unit. */
const MICROS = 1_000_000n;
/** Milliseconds per hour: rates are per hour, metered time is in milliseconds. */
const HOUR_MS = 3_600_000n;

/** A rate card as stored: micro-units per hour by class and state. */
export interface StoredRates {
  currency: string;
  classes: Record<RuntimeClass, { running: number; stopped: number }>;
}

/**
 * The rates of an org that set none: isolation costs more the stronger it is (wasm < container <
 * microvm), and a stopped shell costs a small fraction of a running one (it keeps its disk).
 */
export const DEFAULT_RATES: StoredRates = {
  currency: "USD",
  classes: {
    wasm: { running: 10_000, stopped: 1_000 },
    container: { running: 40_000, stopped: 2_000 },
    microvm: { running: 80_000, stopped: 4_000 },
  },
};

/** `"0.04"` → 40 000n micro-units. The contract's `Money` pattern has been checked already. */
export function parseMoney(value: string): bigint {
  const [whole = "0", fraction = ""] = value.split(".");
  return BigInt(whole) * MICROS + BigInt(fraction.padEnd(6, "0").slice(0, 6));
}

/** 40 000n micro-units → `"0.04"`: at least two decimals, trailing zeros beyond them dropped. */
export function formatMoney(micros: bigint): string {
  const whole = micros / MICROS;
  const fraction = (micros % MICROS)
    .toString()
    .padStart(6, "0")
    .replace(/0{1,4}$/, "");
  return `${whole}.${fraction.padEnd(2, "0")}`;
}

/** The API's view of a stored rate card. */
export function toRateCard(rates: StoredRates, effectiveAtMs: number | null): RateCard {
  const of = (r: { running: number; stopped: number }) => ({
    runningPerHour: formatMoney(BigInt(r.running)),
    stoppedPerHour: formatMoney(BigInt(r.stopped)),
  });
  return {
    currency: rates.currency,
    classes: {
      wasm: of(rates.classes.wasm),
      container: of(rates.classes.container),
      microvm: of(rates.classes.microvm),
    },
    effectiveAt: effectiveAtMs === null ? null : new Date(effectiveAtMs).toISOString(),
  };
}

/** `rates` with the fields of `update` changed. */
export function applyRateUpdate(rates: StoredRates, update: RateCardUpdate): StoredRates {
  const next: StoredRates = structuredClone(rates);
  if (update.currency) next.currency = update.currency;
  for (const runtime of ["wasm", "container", "microvm"] as const) {
    const change = update.classes?.[runtime];
    if (change?.runningPerHour !== undefined)
      next.classes[runtime].running = Number(parseMoney(change.runningPerHour));
    if (change?.stoppedPerHour !== undefined)
      next.classes[runtime].stopped = Number(parseMoney(change.stoppedPerHour));
  }
  return next;
}

/** Micro-units per hour of `state` for `runtime`; states that are not charged cost nothing. */
export function hourlyRate(rates: StoredRates, runtime: string, state: string): bigint {
  const card = rates.classes[runtime as RuntimeClass];
  if (!card) return 0n;
  if (state === "running") return BigInt(card.running);
  if (state === "stopped") return BigInt(card.stopped);
  return 0n;
}

/**
 * Cost accumulated exactly: each part adds `ms × rate per hour` (micro-unit milliseconds per
 * hour), and only the final amount is divided by the hour and rounded (half up) to a micro-unit.
 */
export class CostSum {
  #numerator = 0n;

  /** Adds `ms` milliseconds charged at `ratePerHour` micro-units. */
  add(ms: number, ratePerHour: bigint): void {
    this.#numerator += BigInt(Math.max(0, Math.round(ms))) * ratePerHour;
  }

  /** The sum in micro-units, rounded half up. */
  get micros(): bigint {
    return (this.#numerator * 2n + HOUR_MS) / (2n * HOUR_MS);
  }
}
