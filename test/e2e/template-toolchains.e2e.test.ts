import { customImageId, type RuntimeAvailability } from "@shells/contract";
import { createHash } from "node:crypto";
import { tmpdir } from "node:os";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { cliAgainst } from "./cli-runner.js";
import { call, startTestServer, type TestServer } from "./harness.js";
import {
  TEMPLATE_IMAGE_LANGUAGE,
  TOOLCHAIN_IMAGE_RECIPE,
  TOOLCHAIN_TEST_ENABLED,
} from "./template-image-recipe.js";

// Newer toolchains in template images, on real container shells. Refusals and the presets'
// versions run always; the shell on an image with Node.js 22 from the npm registry runs only with
// SHELLS_TEST_TOOLCHAINS=1, when test/global-setup.ts has built that image (a real mmdebstrap and
// a real download, before any test timeout starts).

const sha256 = (data: Uint8Array) => createHash("sha256").update(data).digest();
const imageId = customImageId(sha256, TEMPLATE_IMAGE_LANGUAGE, TOOLCHAIN_IMAGE_RECIPE);

let server: TestServer;
beforeAll(async () => {
  server = await startTestServer({ backend: "container" });
});
afterAll(async () => {
  await server?.close();
});

describe("toolchains in template images", () => {
  it("refuses a toolchain the server cannot fetch, naming the one it offers", async () => {
    for (const name of ["go", "rust"]) {
      const res = await call(server, "POST", "/api/v1/templates", {
        name: `with-${name}`,
        definition: { language: "bash", image: { packages: [], toolchains: { [name]: "1" } } },
      });
      expect(res.status).toBe(400);
      expect(res.body).toMatchObject({
        error: {
          code: "template_invalid",
          details: { field: "image.toolchains" },
          message: expect.stringContaining("offers node (from the npm registry"),
        },
      });
    }
    const badVersion = await call(server, "POST", "/api/v1/templates", {
      name: "node-latest",
      definition: { language: "bash", image: { packages: [], toolchains: { node: "latest" } } },
    });
    expect(badVersion.status).toBe(400);
    expect(badVersion.body).toMatchObject({ error: { code: "validation_failed" } });
  });

  it("lists each language preset with the toolchain version its image holds", async () => {
    const res = await call<{ items: RuntimeAvailability[] }>(server, "GET", "/api/v1/runtimes");
    const container = res.body.items.find((r) => r.runtime === "container");
    const node = container?.presets?.find((p) => p.language === "node");
    // Every base image is built by the global setup: Debian bookworm's Node.js is 18.
    expect(node).toMatchObject({ toolchain: "nodejs", version: expect.stringMatching(/^18\./) });
    expect(container?.presets?.map((p) => p.language)).toEqual([
      "bash",
      "python",
      "node",
      "go",
      "rust",
    ]);
    const listed = await cliAgainst(server, ["runtimes"], tmpdir());
    expect(listed.exitCode, listed.stderr).toBe(0);
    expect(listed.stdout).toMatch(/^container language presets:$/m);
    expect(listed.stdout).toMatch(/^node\s+nodejs\s+18\.\S+\s+node-/m);
  });

  it.runIf(TOOLCHAIN_TEST_ENABLED)(
    "runs a shell on an image with Node.js 22 from the npm registry, found before Debian's",
    async () => {
      const created = await call(server, "POST", "/api/v1/templates", {
        name: "node22",
        definition: {
          language: TEMPLATE_IMAGE_LANGUAGE,
          runtime: "container",
          network: "sealed",
          image: TOOLCHAIN_IMAGE_RECIPE,
        },
      });
      expect(created.status, JSON.stringify(created.body)).toBe(201);
      const status = await call(server, "GET", "/api/v1/templates/node22/versions/1/image");
      expect(status.body).toMatchObject({ imageId, state: "ready" });
      const shell = await call<{ id: string; imageVersion: string }>(
        server,
        "POST",
        "/api/v1/shells",
        { template: "node22" },
      );
      expect(shell.status, JSON.stringify(shell.body)).toBe(201);
      expect(shell.body.imageVersion).toBe(imageId);
      const ran = await call<{ exitCode: number; stdout: string }>(
        server,
        "POST",
        `/api/v1/shells/${shell.body.id}/exec`,
        {
          command: [
            "sh",
            "-c",
            "command -v node && node -e 'console.log(process.version, [1, 2].toSorted().length)'",
          ],
        },
      );
      expect(ran.body.exitCode).toBe(0);
      // `toSorted` is new in Node 20: Debian's Node 18 would fail here.
      expect(ran.body.stdout).toMatch(/^\/usr\/local\/bin\/node\nv22\.\d+\.\d+ 2\n$/);
    },
  );
});
