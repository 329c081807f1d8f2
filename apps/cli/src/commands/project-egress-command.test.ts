import type { ProjectEgress } from "@l1fe/shells";
import { Readable } from "node:stream";
import { describe, expect, it } from "vitest";
import type { CliIo } from "../context.js";
import { runCli } from "../program.js";
import { egressRulesFrom, parsePortList } from "./project-egress-command.js";

/** Requests the stand-in API received; it keeps one project's rules as the server would. */
const received: { method: string; path: string; body: unknown }[] = [];
let stored: ProjectEgress = { project: "research", rules: {}, updatedAt: null, updatedBy: null };
const fakeApi: typeof fetch = async (input, init) => {
  const request = new Request(input, init);
  const url = new URL(request.url);
  const body = request.method === "GET" ? undefined : await request.json();
  received.push({ method: request.method, path: url.pathname, body });
  if (url.pathname !== "/api/v1/projects/research/egress")
    return Response.json(
      { error: { code: "project_not_found", message: "No project named nowhere in this org." } },
      { status: 404 },
    );
  if (request.method === "PUT") {
    const { rules } = body as { rules: ProjectEgress["rules"] };
    stored =
      Object.keys(rules).length === 0
        ? { project: "research", rules: {}, updatedAt: null, updatedBy: null }
        : {
            project: "research",
            rules,
            updatedAt: "2026-03-15T12:00:00.000Z",
            updatedBy: { type: "user", id: "usr-admin" },
          };
  }
  return Response.json(stored);
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
    now: () => Date.parse("2026-03-15T12:00:00Z"),
  };
  const exitCode = await runCli(args, io);
  return { exitCode, stdout, stderr };
}

describe("shells projects egress", () => {
  it("replaces a project's rules with the lists given, shows them, and clears them", async () => {
    const set = await cli([
      "projects",
      "egress",
      "research",
      "--deny-hosts",
      "*.example.net,mail.example",
      "--deny-ports",
      "25",
      "--allow-cidrs",
      "",
    ]);
    expect(set.exitCode, set.stderr).toBe(0);
    expect(received.at(-1)).toEqual({
      method: "PUT",
      path: "/api/v1/projects/research/egress",
      body: {
        rules: { denyHosts: ["*.example.net", "mail.example"], allowCidrs: [], denyPorts: [25] },
      },
    });
    expect(set.stdout).toMatch(/deny hosts +\*\.example\.net, mail\.example/);
    expect(set.stdout).toMatch(/allow cidrs +none \(no non-public range\)/);
    expect(set.stdout).toMatch(/allow hosts +- \(the org decides\)/);

    const shown = await cli(["--json", "projects", "egress", "research"]);
    expect(received.at(-1)?.method).toBe("GET");
    expect(JSON.parse(shown.stdout)).toMatchObject({ rules: { denyPorts: [25] } });

    const cleared = await cli(["projects", "egress", "research", "--clear"]);
    expect(received.at(-1)?.body).toEqual({ rules: {} });
    expect(cleared.stdout).toMatch(/updated +never/);
  });

  it("refuses a port it cannot read and --clear with lists, before asking the server", async () => {
    const before = received.length;
    expect((await cli(["projects", "egress", "research", "--deny-ports", "smtp"])).exitCode).toBe(
      2,
    );
    expect(
      (await cli(["projects", "egress", "research", "--clear", "--deny-ports", "25"])).exitCode,
    ).not.toBe(0);
    expect(received.length).toBe(before);
    expect(() => parsePortList("0")).toThrow(/1-65535/);
    expect(parsePortList("80, 443")).toEqual([80, 443]);
    expect(egressRulesFrom({ denyHosts: ["a.example"] })).toEqual({ denyHosts: ["a.example"] });
  });

  it("names the project the server could not find", async () => {
    const missing = await cli(["projects", "egress", "nowhere"]);
    expect(missing.exitCode).not.toBe(0);
    expect(missing.stderr).toContain("project_not_found");
  });
});
