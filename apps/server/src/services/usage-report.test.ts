import fc from "fast-check";
import { describe, expect, it } from "vitest";
import type { UsageSumRow } from "../store/usage-store.js";
import { foldUsage, usageCsv } from "./usage-report.js";
import {
  CostSum,
  DEFAULT_RATES,
  applyRateUpdate,
  formatMoney,
  parseMoney,
  type StoredRates,
} from "./usage-rates.js";

const HOUR = 3_600_000;

function row(fields: Partial<UsageSumRow>): UsageSumRow {
  return {
    period_ms: null,
    project: null,
    shell_id: null,
    actor_id: null,
    runtime: "container",
    state: "running",
    rates_id: null,
    ms: 0,
    cpu_usec: 0,
    memory_mb_ms: 0,
    egress_bytes: 0,
    ...fields,
  };
}

const input = (extra: Partial<Parameters<typeof foldUsage>[1]> = {}) => ({
  fromMs: 0,
  toMs: 10 * HOUR,
  groupBy: [] as const,
  limit: 100,
  ratesOf: () => DEFAULT_RATES,
  currency: "USD",
  ...extra,
});

describe("money", () => {
  it("parses and prints decimal strings without ever going through a float", () => {
    expect(parseMoney("0.04")).toBe(40_000n);
    expect(parseMoney("12")).toBe(12_000_000n);
    expect(parseMoney("0.000001")).toBe(1n);
    expect(formatMoney(40_000n)).toBe("0.04");
    expect(formatMoney(0n)).toBe("0.00");
    expect(formatMoney(123_456_789n)).toBe("123.456789");
    fc.assert(
      fc.property(fc.bigInt({ min: 0n, max: 10n ** 18n }), (micros) => {
        expect(parseMoney(formatMoney(micros))).toBe(micros);
      }),
    );
  });

  it("costs a sum of many short stretches exactly as one long one (no drift)", () => {
    const parts = new CostSum();
    for (let i = 0; i < 3600; i += 1) parts.add(1000, 40_000n);
    const whole = new CostSum();
    whole.add(HOUR, 40_000n);
    expect(parts.micros).toBe(40_000n);
    expect(whole.micros).toBe(40_000n);
    // 0.1 + 0.2 in floats is 0.30000000000000004; in micro-units it is 0.3.
    const thirds = new CostSum();
    thirds.add(HOUR / 10, 1_000_000n);
    thirds.add(HOUR / 5, 1_000_000n);
    expect(formatMoney(thirds.micros)).toBe("0.30");
  });

  it("changes only the rates an update names", () => {
    const next = applyRateUpdate(DEFAULT_RATES, {
      currency: "EUR",
      classes: { container: { runningPerHour: "0.05" } },
    });
    expect(next.currency).toBe("EUR");
    expect(next.classes.container).toEqual({ running: 50_000, stopped: 2_000 });
    expect(next.classes.wasm).toEqual(DEFAULT_RATES.classes.wasm);
    expect(DEFAULT_RATES.classes.container.running).toBe(40_000);
  });
});

describe("usage reports", () => {
  it("charges running and stopped time at the class's rates and provisioning and error time at none", () => {
    const report = foldUsage(
      [
        row({ state: "running", ms: HOUR }),
        row({ state: "stopped", ms: 2 * HOUR }),
        row({ state: "provisioning", ms: HOUR }),
        row({ state: "error", ms: HOUR }),
        row({ runtime: "wasm", state: "running", ms: HOUR / 2 }),
      ],
      input({ groupBy: ["class"] }),
    );
    expect(report.rows).toEqual([
      expect.objectContaining({
        runtime: "container",
        seconds: { provisioning: 3600, running: 3600, stopped: 7200, error: 3600 },
        cost: "0.044",
      }),
      expect.objectContaining({ runtime: "wasm", cost: "0.005" }),
    ]);
    expect(report.total.cost).toBe("0.049");
  });

  it("costs time under the rate card it was metered with", () => {
    const dearer: StoredRates = applyRateUpdate(DEFAULT_RATES, {
      classes: { container: { runningPerHour: "1" } },
    });
    const report = foldUsage(
      [row({ rates_id: null, ms: HOUR }), row({ rates_id: 7, ms: HOUR })],
      input({ ratesOf: (id) => (id === 7 ? dearer : DEFAULT_RATES) }),
    );
    expect(report.total.cost).toBe("1.04");
  });

  it("orders rows by period, then by cost, and says when the limit left some out", () => {
    const report = foldUsage(
      [
        row({ period_ms: HOUR, shell_id: "sh-b", ms: HOUR }),
        row({ period_ms: 0, shell_id: "sh-a", ms: 60_000 }),
        row({ period_ms: 0, shell_id: "sh-b", ms: HOUR }),
      ],
      input({ groupBy: ["hour", "shell"], limit: 2 }),
    );
    expect(report.rows.map((r) => [r.period, r.shell])).toEqual([
      [new Date(0).toISOString(), "sh-b"],
      [new Date(0).toISOString(), "sh-a"],
    ]);
    expect(report.truncated).toBe(true);
    expect(report.total.seconds.running).toBe(7260);
  });

  it("exports CSV whose rows add up to its total line, with hostile names defused", () => {
    const report = foldUsage(
      [
        row({ project: "default", actor_id: '=HYPERLINK("x")', ms: 1234 }),
        row({ project: "research", actor_id: "usr-1", ms: HOUR, cpu_usec: 2_500_000 }),
      ],
      input({ groupBy: ["project", "actor"] }),
    );
    const lines = usageCsv(report).trimEnd().split("\r\n");
    expect(lines[0]).toBe(
      "project,actor,provisioning_seconds,running_seconds,stopped_seconds,error_seconds,cpu_seconds,memory_mb_seconds,egress_bytes,cost,currency",
    );
    expect(lines).toContain("research,usr-1,0,3600,0,0,2.5,0,0,0.04,USD");
    expect(lines).toContain(`default,"'=HYPERLINK(""x"")",0,1.234,0,0,0,0,0,0.000014,USD`);
    expect(lines.at(-1)).toBe("total,,0,3601.234,0,0,2.5,0,0,0.040014,USD");
  });
});
