import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable } from "node:stream";
import { afterAll, describe, expect, it } from "vitest";
import type { CliIo } from "../context.js";
import { runCli } from "../program.js";

const dir = mkdtempSync(join(tmpdir(), "shells-doctor-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** A server whose container class runs on the Kubernetes backend. */
const fakeApi: typeof fetch = async (input) => {
  const url = new URL(new Request(input).url);
  if (url.pathname === "/api/v1/runtimes")
    return Response.json({
      items: [
        {
          runtime: "container",
          available: true,
          backend: "kubernetes",
          reason:
            "kubernetes: Pods in namespace shells-sandboxes — unverified against a live cluster",
        },
        { runtime: "wasm", available: true, backend: "wasm", reason: null },
      ],
    });
  if (url.pathname === "/readyz")
    return Response.json({
      status: "ready",
      runtimes: [],
      region: "eu-west",
      regions: ["eu-west", "us-east"],
      capacity: [{ region: "eu-west", runtime: "container", slots: 8, reserved: 2, inUse: 3 }],
    });
  return new Response("not found", { status: 404 });
};

async function doctor(args: string[] = []) {
  let stdout = "";
  const io: CliIo = {
    stdout: { write: (text: string | Uint8Array) => (stdout += String(text)) },
    stderr: { write: () => true },
    stdin: Object.assign(Readable.from([]), { isTTY: true }),
    env: {
      SHELLS_URL: "http://shells.test",
      SHELLS_API_TOKEN: "good",
      SHELLS_MICROVM_CACHE_DIR: join(dir, "cache"),
    },
    cwd: dir,
    fetch: fakeApi,
    now: () => Date.now(),
  };
  await runCli([...args, "doctor"], io);
  return stdout;
}

describe("shells doctor", () => {
  it("says a class the server runs on Kubernetes is unverified against a live cluster", async () => {
    const text = await doctor();
    expect(text).toMatch(/container +yes +kubernetes/);
    expect(text).toContain("note: the kubernetes backend is unverified against a live cluster");
    const json = JSON.parse(await doctor(["--json"])) as { kubernetes?: string };
    expect(json.kubernetes).toMatch(/^the kubernetes backend is unverified against a live cluster/);
  });

  it("shows each region's pool: its limited classes' use and slots, or that it is unlimited", async () => {
    const text = await doctor();
    expect(text).toContain("regions (default eu-west):");
    expect(text).toMatch(/eu-west +container +3 +8 +2/);
    expect(text).toMatch(/us-east +all +- +unlimited/);
    const json = JSON.parse(await doctor(["--json"])) as { placement?: { regions: string[] } };
    expect(json.placement?.regions).toEqual(["eu-west", "us-east"]);
  });
});
