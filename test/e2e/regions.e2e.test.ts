import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { call, startTestServer, type TestServer } from "./harness.js";

// Two backend pools labelled by region on one host, both backed by the real container backend:
// shells run in either, each region counts its own slots, and a full server refuses.

interface ShellBody {
  id: string;
  region: string;
  status: string;
  backend: string;
}

describe("container shells in two labelled pools", () => {
  let server: TestServer;
  beforeAll(async () => {
    server = await startTestServer({
      backend: "container",
      env: { SHELLS_REGIONS: "eu-west:container=1;us-east:container=1" },
    });
  }, 300_000);
  afterAll(async () => {
    await server.close();
  });

  it("runs a shell in each region, refuses a third with capacity_exhausted, and places it once a region frees", async () => {
    const east = await call<ShellBody>(server, "POST", "/api/v1/shells", {
      language: "bash",
      region: "us-east",
    });
    expect(east.status, JSON.stringify(east.body)).toBe(201);
    expect(east.body).toMatchObject({ region: "us-east", status: "running", backend: "container" });
    const west = await call<ShellBody>(server, "POST", "/api/v1/shells", { language: "bash" });
    expect(west.status, JSON.stringify(west.body)).toBe(201);
    expect(west.body).toMatchObject({ region: "eu-west", status: "running", backend: "container" });

    // Both run real code.
    for (const shell of [east.body, west.body]) {
      const exec = await call<{ stdout: string; exitCode: number }>(
        server,
        "POST",
        `/api/v1/shells/${shell.id}/exec`,
        { command: ["sh", "-c", "echo hello from $0", shell.region] },
      );
      expect(exec.body).toMatchObject({ exitCode: 0, stdout: `hello from ${shell.region}\n` });
    }

    const full = await call<{ error: { code: string; details: Record<string, unknown> } }>(
      server,
      "POST",
      "/api/v1/shells",
      { language: "bash" },
    );
    expect(full.status).toBe(409);
    expect(full.body.error).toMatchObject({
      code: "capacity_exhausted",
      details: { region: "eu-west", regionsTried: ["eu-west", "us-east"] },
    });
    const ready = await fetch(`${server.url}/readyz`).then((r) => r.json());
    expect(ready).toMatchObject({
      regions: ["eu-west", "us-east"],
      capacity: [
        { region: "eu-west", runtime: "container", slots: 1, inUse: 1 },
        { region: "us-east", runtime: "container", slots: 1, inUse: 1 },
      ],
    });

    expect((await call(server, "DELETE", `/api/v1/shells/${east.body.id}`)).status).toBe(200);
    const again = await call<ShellBody>(server, "POST", "/api/v1/shells", { language: "bash" });
    expect(again.status, JSON.stringify(again.body)).toBe(201);
    expect(again.body).toMatchObject({ region: "us-east", status: "running" });
  }, 180_000);
});
