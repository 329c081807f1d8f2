import { chmod, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import type { SandboxProgress } from "@shells/sandbox";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { newestImage } from "./internal/images.js";
import {
  SMALL,
  TEST_IMAGES_DIR,
  hostReport,
  makeTestBackend,
  request,
} from "./internal/test-support.js";

/**
 * A first create of a language on an empty images dir. The image builder is a stand-in
 * `mmdebstrap` on PATH that prints mmdebstrap's own progress lines and copies the cached bash
 * image (whatever the language), so the backend's build path (lock, progress parsing, finishing, atomic rename) runs for
 * real in seconds and no test timeout covers a real image build.
 */
describe.runIf(hostReport.available)("preparing a language whose image is not built", () => {
  let scratch: string;
  let imagesDir: string;
  let cleanup: () => Promise<void>;
  let backend: Awaited<ReturnType<typeof makeTestBackend>>["backend"];
  const path = process.env.PATH;

  beforeAll(async () => {
    const cached = await newestImage(TEST_IMAGES_DIR, "bash");
    scratch = await mkdtemp(`${tmpdir()}/shells-prepare-`);
    imagesDir = `${scratch}/images`;
    await writeFile(
      `${scratch}/mmdebstrap`,
      [
        "#!/bin/sh",
        // The last two arguments: the suite, then the target directory.
        'for last; do :; done; target="$last"',
        "echo 'I: running apt-get update...' >&2; sleep 0.2",
        "echo 'I: downloading packages with apt...' >&2; sleep 0.2",
        "echo 'I: extracting archives...' >&2",
        `cp -a ${cached?.rootfs ?? "/nonexistent"} "$target"`,
        "echo 'I: success in 0.4 seconds' >&2",
      ].join("\n"),
    );
    await chmod(`${scratch}/mmdebstrap`, 0o755);
    process.env.PATH = `${scratch}:${path ?? ""}`;
    ({ backend, cleanup } = await makeTestBackend({ imagesDir }));
  });
  afterAll(async () => {
    process.env.PATH = path;
    await cleanup?.();
    await rm(scratch, { recursive: true, force: true });
  });

  it("reports the build's steps to every caller of one shared build, then creates at once", async () => {
    // (makeTestBackend made the bash image through the stand-in already; node is not built.)
    expect(await backend.languageReady("node")).toBe(false);
    const first: SandboxProgress[] = [];
    const second: SandboxProgress[] = [];
    await Promise.all([
      backend.prepareLanguage("node", (progress) => first.push(progress)),
      backend.prepareLanguage("node", (progress) => second.push(progress)),
    ]);
    expect(first.map((p) => p.percent)).toEqual(expect.arrayContaining([0, 5, 20, 45, 100]));
    expect(first.some((p) => /downloading packages/.test(p.message))).toBe(true);
    // The second caller joined the first build: same steps, no "waiting for another build".
    expect(second.map((p) => p.message)).toEqual(first.map((p) => p.message));
    expect(await backend.languageReady("node")).toBe(true);

    await backend.create({
      shellId: "sh-prepared1",
      language: "node",
      runtime: "container",
      network: "sealed",
      resources: SMALL,
      env: {},
    });
    const result = await backend.exec("sh-prepared1", request(["sh", "-c", "echo built"]));
    expect(result.stdout).toBe("built\n");
  });
});
