import {
  chmod,
  mkdir,
  mkdtemp,
  readFile,
  readdir,
  rm,
  stat,
  utimes,
  writeFile,
} from "node:fs/promises";
import { tmpdir } from "node:os";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  customImageReady,
  ensureCustomImage,
  findImage,
  newestImage,
  pruneCustomImages,
  type CustomImageRecipe,
} from "./internal/images.js";
import type { SandboxProgress } from "@shells/sandbox";
import {
  SMALL,
  TEST_IMAGES_DIR,
  hostReport,
  makeTestBackend,
  request,
} from "./internal/test-support.js";

const ID_A = `img-${"a".repeat(32)}`;
const ID_B = `img-${"b".repeat(32)}`;

/**
 * Custom images through the real builder path (lock, finishing, baking files through a chroot,
 * atomic rename), with a stand-in `mmdebstrap` on PATH that records its arguments and copies the
 * cached bash image, so no test timeout covers a real image build. The real build of a recipe
 * (apt installing its packages) runs in test/global-setup.ts for the end-to-end test.
 */
describe.runIf(hostReport.available)("custom images", () => {
  let scratch: string;
  let imagesDir: string;
  const path = process.env.PATH;

  beforeAll(async () => {
    const cached = await newestImage(TEST_IMAGES_DIR, "bash");
    scratch = await mkdtemp(`${tmpdir()}/shells-custom-images-`);
    imagesDir = `${scratch}/images`;
    await writeFile(
      `${scratch}/mmdebstrap`,
      [
        "#!/bin/sh",
        `echo "$@" >> ${scratch}/mmdebstrap.args`,
        'for last; do :; done; target="$last"',
        "echo 'I: downloading packages with apt...' >&2",
        `cp -a ${cached?.rootfs ?? "/nonexistent"} "$target"`,
        // An absolute symlink, as Debian's alternatives make: it must resolve inside the image.
        `ln -s ${scratch}/host-file "$target/etc/trap"`,
        `mkdir -p "$target${scratch}"`,
        "echo 'I: success in 0.1 seconds' >&2",
      ].join("\n"),
    );
    await chmod(`${scratch}/mmdebstrap`, 0o755);
    await writeFile(`${scratch}/host-file`, "host\n");
    process.env.PATH = `${scratch}:${path ?? ""}`;
  });
  afterAll(async () => {
    process.env.PATH = path;
    await rm(scratch, { recursive: true, force: true });
  });

  const recipe: CustomImageRecipe = {
    id: ID_A,
    packages: ["jq", "tree"],
    files: [
      { path: "/etc/tool/config.toml", content: "answer = 42\n", mode: 0o640 },
      { path: "/etc/trap", content: "written through the link\n", mode: 0o644 },
    ],
  };

  it("builds once on the base recipe plus the extra packages, bakes files inside the image, and finds it again", async () => {
    expect(await customImageReady(imagesDir, ID_A)).toBe(false);
    const [first, second] = await Promise.all([
      ensureCustomImage(imagesDir, "bash", recipe),
      ensureCustomImage(imagesDir, "bash", recipe),
    ]);
    expect(second.rootfs).toBe(first.rootfs);
    expect(first).toMatchObject({ language: "bash", version: ID_A, packages: ["jq", "tree"] });
    const calls = (await readFile(`${scratch}/mmdebstrap.args`, "utf8")).trim().split("\n");
    expect(calls).toHaveLength(1);
    expect(calls[0]).toContain("--variant=essential");
    expect(calls[0]).toContain("--include=jq,tree");

    const config = `${first.rootfs}/etc/tool/config.toml`;
    expect(await readFile(config, "utf8")).toBe("answer = 42\n");
    expect((await stat(config)).mode & 0o777).toBe(0o640);
    // The symlink names a host path; the write went to that path inside the image.
    expect(await readFile(`${scratch}/host-file`, "utf8")).toBe("host\n");
    expect(await readFile(`${first.rootfs}${scratch}/host-file`, "utf8")).toBe(
      "written through the link\n",
    );
    expect(await customImageReady(imagesDir, ID_A)).toBe(true);
    expect((await findImage(imagesDir, ID_A))?.rootfs).toBe(first.rootfs);
    // A custom image is never a language's newest base image.
    expect(await newestImage(imagesDir, "bash")).toBeNull();
  });

  it("refuses package names and paths that are not plain", async () => {
    await expect(
      ensureCustomImage(imagesDir, "bash", { id: ID_B, packages: ["--force"], files: [] }),
    ).rejects.toThrow(/not a Debian package name/);
    await expect(
      ensureCustomImage(imagesDir, "bash", {
        id: ID_B,
        packages: [],
        files: [{ path: "/etc/../proc/x", content: "", mode: 0o644 }],
      }),
    ).rejects.toThrow(/cannot hold a file/);
    await expect(
      ensureCustomImage(imagesDir, "bash", { id: "../../etc", packages: [], files: [] }),
    ).rejects.toThrow(/not a custom image id/);
  });

  it("prunes only images outside keep that nothing used for the given time", async () => {
    await ensureCustomImage(imagesDir, "bash", { id: ID_B, packages: ["jq"], files: [] });
    // Both were just used: nothing goes.
    expect(await pruneCustomImages(imagesDir, new Set(), 60_000)).toEqual([]);
    const old = new Date(Date.now() - 3_600_000);
    for (const id of [ID_A, ID_B]) await utimes(`${imagesDir}/custom/${id}/used`, old, old);
    // A half-finished removal from before is cleared as well.
    await mkdir(`${imagesDir}/custom/.removing-${ID_B}-dead`, { recursive: true });
    expect(await pruneCustomImages(imagesDir, new Set([ID_A]), 60_000)).toEqual([ID_B]);
    expect((await readdir(`${imagesDir}/custom`)).sort()).toEqual([ID_A]);
    expect(await customImageReady(imagesDir, ID_B)).toBe(false);
    expect(await customImageReady(imagesDir, ID_A)).toBe(true);
  });

  it("builds a spec's image once for concurrent callers, runs a shell on it, and keeps it while the shell exists", async () => {
    const { backend, cleanup } = await makeTestBackend({ imagesDir });
    try {
      const image = {
        id: `img-${"d".repeat(32)}`,
        packages: ["jq"],
        files: [{ path: "/opt/tool/VERSION", content: "7\n", mode: 0o644 }],
      };
      expect(await backend.languageReady("bash", image)).toBe(false);
      const first: SandboxProgress[] = [];
      const second: SandboxProgress[] = [];
      await Promise.all([
        backend.prepareLanguage("bash", (p) => first.push(p), image),
        backend.prepareLanguage("bash", (p) => second.push(p), image),
      ]);
      expect(first.at(-1)).toMatchObject({ percent: 100 });
      expect(first[0]?.message).toContain(`custom image ${image.id} (bash with jq)`);
      expect(second.map((p) => p.message)).toEqual(first.map((p) => p.message));
      expect(await backend.languageReady("bash", image)).toBe(true);

      const info = await backend.create({
        shellId: "sh-custom1",
        language: "bash",
        runtime: "container",
        network: "sealed",
        resources: SMALL,
        env: {},
        image,
      });
      expect(info.imageVersion).toBe(image.id);
      const read = await backend.exec("sh-custom1", request(["cat", "/opt/tool/VERSION"]));
      expect(read.stdout).toBe("7\n");

      const old = new Date(Date.now() - 3_600_000);
      await utimes(`${imagesDir}/custom/${image.id}/used`, old, old);
      expect(await backend.pruneImages(new Set(), 60_000)).not.toContain(image.id);
      await backend.destroy("sh-custom1");
      expect(await backend.pruneImages(new Set(), 60_000)).toContain(image.id);
      expect(await backend.languageReady("bash", image)).toBe(false);
    } finally {
      await cleanup();
    }
  });
});
