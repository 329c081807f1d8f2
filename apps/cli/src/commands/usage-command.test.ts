import type { CapStatus, RateCard, UsageReport } from "@l1fe/shells";
import { Readable } from "node:stream";
import { describe, expect, it } from "vitest";
import type { CliIo } from "../context.js";
import { runCli } from "../program.js";
import { parseCap } from "./caps-command.js";
import { parseRate, resolveTime } from "./usage-command.js";

const NOW = Date.parse("2026-03-15T12:00:00Z");

const report: UsageReport = {
  from: "2026-03-01T00:00:00.000Z",
  to: "2026-03-15T12:00:00.000Z",
  groupBy: ["day", "class"],
  currency: "USD",
  rows: [
    {
      period: "2026-03-14T00:00:00.000Z",
      runtime: "container",
      seconds: { provisioning: 2, running: 7380, stopped: 30, error: 0 },
      cpuSeconds: 61.5,
      memoryMbSeconds: 3_600_000,
      egressBytes: 2048,
      cost: "0.082",
    },
  ],
  total: {
    seconds: { provisioning: 2, running: 7380, stopped: 30, error: 0 },
    cpuSeconds: 61.5,
    memoryMbSeconds: 3_600_000,
    egressBytes: 2048,
    cost: "0.082",
  },
  truncated: false,
};

const card: RateCard = {
  currency: "USD",
  classes: {
    wasm: { runningPerHour: "0.01", stoppedPerHour: "0.001" },
    container: { runningPerHour: "0.05", stoppedPerHour: "0.002" },
    microvm: { runningPerHour: "0.08", stoppedPerHour: "0.004" },
  },
  effectiveAt: "2026-03-15T12:00:00.000Z",
};

/** Requests the stand-in API received, and its answers. */
const received: { method: string; url: URL; body: unknown }[] = [];
const fakeApi: typeof fetch = async (input, init) => {
  const request = new Request(input, init);
  const url = new URL(request.url);
  const body = request.method === "GET" ? undefined : await request.json();
  received.push({ method: request.method, url, body });
  if (url.pathname === "/api/v1/usage" && url.searchParams.get("format") === "csv")
    return new Response("day,runtime,cost\r\n", { headers: { "content-type": "text/csv" } });
  if (url.pathname === "/api/v1/usage") return Response.json(report);
  if (url.pathname === "/api/v1/usage/rates") return Response.json(card);
  if (url.pathname === "/api/v1/governance")
    return Response.json({
      from: "2026-03-01T00:00:00.000Z",
      to: "2026-03-15T12:00:00.000Z",
      project: url.searchParams.get("project"),
      shells: { provisioning: 0, running: 3, stopped: 1, error: 0 },
      runs: { active: 1, started: 4, succeeded: 2, failed: 1, cancelled: 0 },
      denials: {
        total: 5,
        byKind: [
          { kind: "egress.denied", count: 4 },
          { kind: "shell.delete", count: 1 },
        ],
      },
      approvals: {
        requested: 2,
        pending: 0,
        granted: 1,
        denied: 1,
        expired: 0,
        timeToDecisionSeconds: { p50: 90, p90: 3600, max: 3600 },
      },
    });
  const caps: CapStatus[] = ((body as { caps?: CapStatus["cap"][] })?.caps ?? []).map((cap, i) => ({
    id: `cap-${i}`,
    project: "research",
    cap,
    used: 0,
    percent: 0,
    state: "ok",
  }));
  return Response.json({ items: caps });
};

async function cli(args: string[]) {
  let stdout = "";
  let stderr = "";
  const io: CliIo = {
    stdout: { write: (text: string | Uint8Array) => (stdout += String(text)) },
    stderr: { write: (text: string) => (stderr += text) },
    stdin: Object.assign(Readable.from([]), { isTTY: true }),
    env: { SHELLS_URL: "http://shells.test", SHELLS_API_TOKEN: "good" },
    cwd: "/nonexistent",
    fetch: fakeApi,
    now: () => NOW,
  };
  const exitCode = await runCli(args, io);
  return { exitCode, stdout, stderr };
}

describe("shells usage", () => {
  it("prints a table of time per state and cost, grouped as asked, with a total line", async () => {
    const { exitCode, stdout } = await cli(["usage", "--by", "day,class", "--from", "7d"]);
    expect(exitCode).toBe(0);
    expect(stdout).toContain("DAY         RUNTIME    RUNNING  STOPPED  OTHER  CPU");
    expect(stdout).toMatch(/2026-03-14 +container +2h03m +30s +2s +1m02s +1000 +2 KiB +0\.082 USD/);
    expect(stdout).toMatch(/\ntotal +2h03m/);
    const sent = received.at(-1)!.url.searchParams;
    expect(sent.get("groupBy")).toBe("day,class");
    expect(sent.get("from")).toBe("2026-03-08T12:00:00.000Z");
  });

  it("prints the server's CSV with --csv and the raw report with --json", async () => {
    expect((await cli(["usage", "--csv"])).stdout).toBe("day,runtime,cost\r\n");
    expect(JSON.parse((await cli(["--json", "usage"])).stdout)).toEqual(report);
  });

  it("refuses a time it cannot read and a dimension that does not exist", async () => {
    expect((await cli(["usage", "--from", "last tuesday"])).exitCode).toBe(2);
    expect((await cli(["usage", "--by", "weekday"])).exitCode).toBe(2);
    expect(resolveTime("2026-03-01", NOW)).toBe("2026-03-01T00:00:00.000Z");
    expect(resolveTime("90m", NOW)).toBe("2026-03-15T10:30:00.000Z");
  });
});

describe("shells governance", () => {
  it("prints a project's activity, denials by kind and time to decision", async () => {
    const { exitCode, stdout } = await cli(["governance", "--project", "team-a"]);
    expect(exitCode).toBe(0);
    expect(received.at(-1)!.url.searchParams.get("project")).toBe("team-a");
    expect(stdout).toMatch(/scope +project team-a/);
    expect(stdout).toMatch(/denials +5: egress.denied 4, shell.delete 1/);
    expect(stdout).toMatch(/time to decision +p50 1m30s, p90 1h00m, max 1h00m/);
  });
});

describe("shells rates and shells caps", () => {
  it("sends only the rates named", async () => {
    const { stdout } = await cli(["rates", "set", "container.running=0.05", "--currency", "USD"]);
    expect(received.at(-1)!.body).toEqual({
      currency: "USD",
      classes: { container: { runningPerHour: "0.05" } },
    });
    expect(stdout).toMatch(/container +0\.05 USD +0\.002 USD/);
    expect(() => parseRate("container.idle=1")).toThrow(/CLASS.STATE=AMOUNT/);
  });

  it("reads caps in their short form and replaces a project's caps with them", async () => {
    expect(parseCap("concurrent=10")).toEqual({ metric: "concurrent_shells", limit: 10 });
    expect(parseCap("running/day@microvm=8h")).toEqual({
      metric: "running_seconds",
      period: "day",
      limit: 28_800,
      runtime: "microvm",
    });
    expect(parseCap("cost/month=25.00")).toEqual({
      metric: "cost",
      period: "month",
      limit: "25.00",
    });
    for (const bad of [
      "running=60",
      "concurrent/day=1",
      "cost/month=1.1234567",
      "cpu/day=1",
      "concurrent@vm=1",
    ])
      expect(() => parseCap(bad), bad).toThrow(/METRIC/);
    const { exitCode, stdout } = await cli([
      "caps",
      "set",
      "research",
      "concurrent=2",
      "cost/day=1",
    ]);
    expect(exitCode).toBe(0);
    expect(received.at(-1)).toMatchObject({
      method: "PUT",
      body: {
        caps: [
          { metric: "concurrent_shells", limit: 2 },
          { metric: "cost", period: "day", limit: "1" },
        ],
      },
    });
    expect(received.at(-1)!.url.pathname).toBe("/api/v1/projects/research/caps");
    expect(stdout).toMatch(/research +concurrent +0 +2 +0% +ok/);
  });
});
