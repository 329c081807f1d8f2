import type { UsageReport } from "@shells/contract";
import { describe, expect, it } from "vitest";
import { ConflictError, ShellsClient } from "./index.js";

/** A client whose requests are answered by `handler`, in-process. */
function clientFor(handler: (request: Request) => Response | Promise<Response>): ShellsClient {
  return new ShellsClient({
    baseUrl: "http://shells.test",
    token: "sk-test",
    fetch: async (input, init) => handler(new Request(input, init)),
  });
}

const report: UsageReport = {
  from: "2026-03-01T00:00:00.000Z",
  to: "2026-03-02T00:00:00.000Z",
  groupBy: ["day", "class"],
  currency: "USD",
  rows: [],
  total: {
    seconds: { provisioning: 0, running: 0, stopped: 0, error: 0 },
    cpuSeconds: 0,
    memoryMbSeconds: 0,
    egressBytes: 0,
    cost: "0.00",
  },
  truncated: false,
};

describe("shells.usage and shells.caps", () => {
  it("send a report's filters as the route's query and read CSV as text", async () => {
    const seen: URL[] = [];
    const shells = clientFor((request) => {
      const url = new URL(request.url);
      seen.push(url);
      if (url.searchParams.get("format") === "csv")
        return new Response("runtime,cost\r\ncontainer,0.04\r\n", {
          headers: { "content-type": "text/csv" },
        });
      return Response.json(report);
    });
    const answer = await shells.usage.report({
      from: new Date(Date.UTC(2026, 2, 1)),
      to: "2026-03-02T00:00:00Z",
      groupBy: ["day", "class"],
      project: "default",
    });
    expect(answer.groupBy).toEqual(["day", "class"]);
    expect(Object.fromEntries(seen[0]!.searchParams)).toEqual({
      from: "2026-03-01T00:00:00.000Z",
      to: "2026-03-02T00:00:00Z",
      groupBy: "day,class",
      project: "default",
      format: "json",
    });
    expect(await shells.usage.csv({ groupBy: ["class"] })).toBe(
      "runtime,cost\r\ncontainer,0.04\r\n",
    );
    expect(seen[1]!.pathname).toBe("/api/v1/usage");
  });

  it("set a project's caps at its own path and surface a refusal over a cap as a ConflictError", async () => {
    const shells = clientFor(async (request) => {
      const url = new URL(request.url);
      if (request.method === "PUT") {
        expect(url.pathname).toBe("/api/v1/projects/research/caps");
        expect(await request.json()).toEqual({
          caps: [{ metric: "running_seconds", period: "day", limit: 60 }],
        });
        return Response.json({ items: [] });
      }
      return Response.json(
        {
          error: {
            code: "quota_exceeded",
            message: "Project research has reached its cap",
            details: { quota: "concurrent_shells", used: 2, limit: 2 },
            requestId: "req-1",
          },
        },
        { status: 409 },
      );
    });
    expect(
      await shells.caps.set("research", [{ metric: "running_seconds", period: "day", limit: 60 }]),
    ).toEqual([]);
    const refused = await shells.create({ language: "bash", project: "research" }).catch((e) => e);
    expect(refused).toBeInstanceOf(ConflictError);
    expect(refused).toMatchObject({ code: "quota_exceeded", details: { used: 2, limit: 2 } });
  });
});
