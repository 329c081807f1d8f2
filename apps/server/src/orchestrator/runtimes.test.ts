import { checkMicrovmHost, MicrovmBackend } from "@shells/backend-microvm";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { createTestApp, type TestApp } from "../test-support/test-app.js";

/** Whether this host has what a microvm create needs before its template (QEMU and the tools). */
const microvmHost = await checkMicrovmHost(tmpdir());

describe("a microvm class this host cannot run", () => {
  let t: TestApp | undefined;
  const savedPath = process.env.PATH;
  afterEach(async () => {
    process.env.PATH = savedPath;
    await t?.close();
  });

  it("is refused with runtime_unavailable, naming the apt packages to install", async () => {
    const stateDir = mkdtempSync(join(tmpdir(), "shells-microvm-host-"));
    const microvm = new MicrovmBackend({
      stateDir,
      images: () => Promise.reject(new Error("no image is needed to refuse")),
    });
    // A host without QEMU and the build tools: nothing the class needs is on PATH.
    process.env.PATH = stateDir;
    try {
      t = await createTestApp({ backends: [microvm] });
      const ready = await t.app.inject({ method: "GET", url: "/readyz" });
      const offered = ready
        .json<{ runtimes: { runtime: string; available: boolean; reason: string }[] }>()
        .runtimes.find((r) => r.runtime === "microvm");
      expect(offered).toMatchObject({ available: false });
      expect(offered?.reason).toContain("apt-get install -y qemu-system-x86 qemu-utils");

      const res = await t.call("POST", "/api/v1/shells", { language: "rust", runtime: "microvm" });
      expect(res.statusCode).toBe(422);
      expect(res.json().error).toMatchObject({
        code: "runtime_unavailable",
        details: { runtime: "microvm" },
      });
      expect(res.json().error.message).toMatch(/qemu-system-x86_64 not found/);
      expect((await t.call("GET", "/api/v1/shells")).json().items).toEqual([]);
    } finally {
      rmSync(stateDir, { recursive: true, force: true });
    }
  });
});

describe("a microvm class whose template cannot be made", () => {
  let t: TestApp | undefined;
  afterEach(async () => {
    await t?.close();
  });

  it.skipIf(!microvmHost.available)(
    "refuses the create with runtime_unavailable, saying why and which command shows each step",
    async () => {
      const stateDir = mkdtempSync(join(tmpdir(), "shells-microvm-template-"));
      const microvm = new MicrovmBackend({
        stateDir,
        images: () => Promise.reject(new Error("the Debian mirror is unreachable")),
      });
      try {
        t = await createTestApp({ backends: [microvm] });
        const res = await t.call("POST", "/api/v1/shells", { language: "go", runtime: "microvm" });
        expect(res.statusCode).toBe(422);
        expect(res.json().error.code).toBe("runtime_unavailable");
        expect(res.json().error.message).toContain("the Debian mirror is unreachable");
        expect(res.json().error.message).toContain(
          "shells images build --runtime microvm --memory-mb 512 go",
        );
      } finally {
        rmSync(stateDir, { recursive: true, force: true });
      }
    },
  );
});

describe("the runtimes list", () => {
  let t: TestApp | undefined;
  afterEach(async () => {
    await t?.close();
  });

  it("names the network modes each class offers on this server", async () => {
    t = await createTestApp();
    const res = await t.call("GET", "/api/v1/runtimes");
    expect(res.statusCode).toBe(200);
    const items = res.json<{ items: { runtime: string; networks: string[] }[] }>().items;
    // The simulator routes through no egress proxy: sealed and localhost, never internet.
    expect(items.find((r) => r.runtime === "container")?.networks).toEqual(["sealed", "localhost"]);
  });
});
