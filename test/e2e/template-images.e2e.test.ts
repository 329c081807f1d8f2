import type { EvidenceBundle, Run } from "@l1fe/shells";
import { customImageId } from "@shells/contract";
import { createHash } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { cliAgainst, cliOffline } from "./cli-runner.js";
import { call, startTestServer, type TestServer } from "./harness.js";
import { TEMPLATE_IMAGE_LANGUAGE, TEMPLATE_IMAGE_RECIPE } from "./template-image-recipe.js";

// A template with a custom image on real container shells: an extra Debian package (jq, which
// the bash preset's base image lacks) and a file baked into the image, plus a managed file. Its
// image was built by test/global-setup.ts, before any test timeout started; here the server
// finds it in the shared image cache under the same content address.

const work = mkdtempSync(join(tmpdir(), "shells-template-images-"));
const sha256 = (data: Uint8Array) => createHash("sha256").update(data).digest();
const imageId = customImageId(sha256, TEMPLATE_IMAGE_LANGUAGE, TEMPLATE_IMAGE_RECIPE);

const DEFINITION = {
  language: TEMPLATE_IMAGE_LANGUAGE,
  runtime: "container",
  network: "sealed",
  image: TEMPLATE_IMAGE_RECIPE,
  files: [
    { path: "POLICY.md", content: "reports only\n", readOnly: true },
    { path: "notes.txt", content: "first line\n" },
  ],
  locks: ["runtime", "network"],
};

/** A one-shot run that needs jq and the baked file, changes a file and writes an artifact. */
const SCRIPT = [
  "set -e",
  "mkdir -p out",
  `jq -c --arg policy "$(cat POLICY.md)" '. + {policy: $policy, tool: "jq"}' /etc/shells-e2e/motd.json > out/report.json`,
  "echo 'second line' >> notes.txt",
  "cat out/report.json",
].join("\n");

let server: TestServer;
const shells = (args: string[]) => cliAgainst(server, args, work);
beforeAll(async () => {
  server = await startTestServer({ backend: "container" });
});
afterAll(async () => {
  await server?.close();
  rmSync(work, { recursive: true, force: true });
});

describe("image recipes in template definitions", () => {
  it("refuse what cannot build, each with a stable code", async () => {
    const define = (name: string, changes: Record<string, unknown>) =>
      call(server, "POST", "/api/v1/templates", {
        name,
        definition: { ...DEFINITION, ...changes },
      });
    const badName = await define("bad-name", { image: { packages: ["jq; rm -rf /"] } });
    expect(badName.status).toBe(400);
    expect(badName.body).toMatchObject({ error: { code: "validation_failed" } });
    const option = await define("option", { image: { packages: ["--allow-unauthenticated"] } });
    expect(option.body).toMatchObject({ error: { code: "validation_failed" } });
    const twice = await define("twice", { image: { packages: ["jq", "jq"] } });
    expect(twice.status).toBe(400);
    expect(twice.body).toMatchObject({
      error: { code: "template_invalid", details: { field: "image.packages" } },
    });
    const wasm = await define("wasm", { runtime: "wasm", language: "python" });
    expect(wasm.body).toMatchObject({
      error: { code: "template_invalid", details: { field: "image" } },
    });
    const proc = await define("proc", {
      image: { packages: [], files: [{ path: "/proc/self/environ", content: "x" }] },
    });
    expect(proc.body).toMatchObject({
      error: { code: "template_invalid", details: { field: "image.files" } },
    });
    const escape = await define("escape", {
      image: { packages: [], files: [{ path: "/etc/../../host", content: "x" }] },
    });
    expect(escape.body).toMatchObject({ error: { code: "template_invalid" } });
  });
});

describe("a run from a template with a custom image", () => {
  let run: Run;
  const bundleFile = join(work, "bundle.json");
  const keysFile = join(work, "keys.json");

  beforeAll(async () => {
    writeFileSync(join(work, "reports.json"), JSON.stringify(DEFINITION));
    const created = await shells(["templates", "create", "reports", "-f", "reports.json"]);
    expect(created.exitCode, created.stderr).toBe(0);
    expect(created.stdout).toContain("base + jq, files /etc/shells-e2e/motd.json");
  });

  it("finds the image built and cached under its content address", async () => {
    const built = await shells(["templates", "build", "reports@1"]);
    expect(built.exitCode, built.stderr).toBe(0);
    expect(built.stdout).toContain(`reports@1: image ${imageId} is ready`);
    const status = await call(server, "GET", "/api/v1/templates/reports/versions/1/image");
    expect(status.body).toMatchObject({ imageId, state: "ready", percent: 100 });
  });

  it("runs on it: the extra package and the baked file are there, files change, artifacts are kept", async () => {
    const started = await shells([
      "run",
      "--json",
      "-t",
      "reports",
      "--artifact",
      "out/*.json",
      "-c",
      SCRIPT,
    ]);
    expect(started.exitCode, started.stderr).toBe(0);
    run = JSON.parse(started.stdout.trim().split("\n").at(-1) as string) as Run;
    expect(run).toMatchObject({ status: "succeeded", exitCode: 0, template: "reports@1" });
    expect(run.output?.stdout).toContain(
      '{"greeting":"baked into the image","policy":"reports only","tool":"jq"}',
    );
    expect(run.artifacts.map((a) => a.path)).toEqual(["out/report.json"]);
  });

  it("exports an evidence bundle that verifies with no server", async () => {
    const exported = await shells(["evidence", "export", run.id, "-o", bundleFile]);
    expect(exported.exitCode, exported.stderr).toBe(0);
    const bundle = JSON.parse(readFileSync(bundleFile, "utf8")) as EvidenceBundle;
    expect(bundle.run.template).toBe("reports@1");
    expect(bundle.events.map((e) => e.action)).toEqual(
      expect.arrayContaining(["run.start", "shell.create", "run.finish"]),
    );
    expect(bundle.artifacts.map((a) => a.path)).toEqual(["out/report.json"]);
    expect(bundle.workspaceChanges?.changes.map((c) => `${c.change} ${c.path}`)).toEqual(
      expect.arrayContaining(["added out/report.json", "modified notes.txt"]),
    );
    expect((await shells(["audit", "keys", "-o", keysFile])).exitCode).toBe(0);

    const verified = await cliOffline(["evidence", "verify", bundleFile, "--keys", keysFile], work);
    expect(verified.exitCode, verified.stderr).toBe(0);
    expect(verified.stdout).toContain(`ok: evidence of run ${run.id} (succeeded) holds`);
  });

  it("gives a shell from the template the image; a shell from the base image has no jq", async () => {
    const fromTemplate = await call<{ id: string; imageVersion: string | null }>(
      server,
      "POST",
      "/api/v1/shells",
      { template: "reports" },
    );
    expect(fromTemplate.status, JSON.stringify(fromTemplate.body)).toBe(201);
    expect(fromTemplate.body.imageVersion).toBe(imageId);
    const plain = await call<{ id: string; imageVersion: string | null }>(
      server,
      "POST",
      "/api/v1/shells",
      { language: "bash", runtime: "container", network: "sealed" },
    );
    expect(plain.status, JSON.stringify(plain.body)).toBe(201);
    expect(plain.body.imageVersion).not.toBe(imageId);
    const probe = { command: ["sh", "-c", "command -v jq && jq --version"] };
    const withJq = await call<{ exitCode: number; stdout: string }>(
      server,
      "POST",
      `/api/v1/shells/${fromTemplate.body.id}/exec`,
      probe,
    );
    expect(withJq.body.exitCode).toBe(0);
    expect(withJq.body.stdout).toMatch(/jq-1\./);
    const without = await call<{ exitCode: number }>(
      server,
      "POST",
      `/api/v1/shells/${plain.body.id}/exec`,
      probe,
    );
    expect(without.body.exitCode).not.toBe(0);
  });
});
