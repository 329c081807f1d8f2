import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { mkdir, readFile, readdir, rename, rm, stat, utimes, writeFile } from "node:fs/promises";
import type { Language } from "@shells/contract";
import { isAlive, processStartTime, run, sleep } from "./proc.js";
import {
  checkToolchain,
  installToolchains,
  pruneToolchainCache,
  toolchainCacheFile,
  toolchainPackages,
  type InstalledToolchain,
} from "./toolchains.js";

/** One built base image. */
export interface ImageInfo {
  language: Language;
  /** `<language>-<UTC timestamp>`; recorded on each shell as its `imageVersion`. */
  version: string;
  /** The root filesystem directory (the overlay's read-only lower layer). */
  rootfs: string;
  /** Debian suite it was built from. */
  suite: string;
  /** Packages asked for on top of the variant's. */
  packages: string[];
  /** Toolchains installed beside Debian's (custom images whose recipe names any). */
  toolchains?: InstalledToolchain[];
  createdAt: string;
}

/** A step of an image build, for progress output. */
export interface ImageBuildProgress {
  phase: string;
  message: string;
  percent?: number;
}

/** Options of an image build. */
export interface BuildImageOptions {
  onProgress?: (event: ImageBuildProgress) => void;
  /** Debian suite (default: the host's Debian codename, else `bookworm`). */
  suite?: string;
  /** Debian mirror URL (default: mmdebstrap's; env `SHELLS_DEBIAN_MIRROR`). */
  mirror?: string;
  /** npm registry toolchains come from (default: the public one; env `SHELLS_NPM_REGISTRY`). */
  npmRegistry?: string;
}

/**
 * What each language preset adds to Debian. `essential` is the smallest bootable set (coreutils,
 * dash, bash, util-linux); `apt` keeps apt/dpkg so root inside can install more packages.
 * `toolchain` is the Debian package whose version is the preset's (reported by `presetVersions`).
 */
export const IMAGE_RECIPES: Record<
  Language,
  { variant: "essential" | "apt"; packages: string[]; toolchain: string }
> = {
  bash: { variant: "essential", packages: [], toolchain: "bash" },
  python: {
    variant: "apt",
    packages: ["python3", "python3-pip", "python3-venv", "ca-certificates"],
    toolchain: "python3",
  },
  node: { variant: "apt", packages: ["nodejs", "ca-certificates"], toolchain: "nodejs" },
  go: { variant: "apt", packages: ["golang-go", "ca-certificates"], toolchain: "golang-go" },
  rust: { variant: "apt", packages: ["rustc", "cargo", "ca-certificates"], toolchain: "rustc" },
};

/** One language preset's toolchain as its newest base image holds it. */
export interface PresetVersion {
  language: Language;
  /** The image shells of the language start from now; null until one is built. */
  image: string | null;
  /** The Debian package that is the preset's toolchain. */
  toolchain: string;
  /** Its version in the image (Debian's version string); null until the image is built. */
  version: string | null;
}

/**
 * The toolchain version of every language preset, read from the package database of each
 * language's newest base image (what a shell gets, not what a mirror offers today).
 */
export async function presetVersions(imagesDir: string): Promise<PresetVersion[]> {
  const images = await listImages(imagesDir);
  return Promise.all(
    LANGUAGES.map(async (language) => {
      const { toolchain } = IMAGE_RECIPES[language];
      const image = images.find((i) => i.language === language) ?? null;
      const version = image ? await installedVersion(image.rootfs, toolchain) : null;
      return { language, image: image?.version ?? null, toolchain, version };
    }),
  );
}

/** The version of `name` in the dpkg database of `rootfs`, or null when it is not installed. */
async function installedVersion(rootfs: string, name: string): Promise<string | null> {
  let status: string;
  try {
    status = await readFile(`${rootfs}/var/lib/dpkg/status`, "utf8");
  } catch {
    return null;
  }
  for (const stanza of status.split(/\n\n+/)) {
    if (!new RegExp(`^Package: ${name.replace(/[.+]/g, "\\$&")}$`, "m").test(stanza)) continue;
    if (!/^Status: install ok installed$/m.test(stanza)) continue;
    return /^Version: (.+)$/m.exec(stanza)?.[1] ?? null;
  }
  return null;
}

const LANGUAGES = Object.keys(IMAGE_RECIPES) as Language[];

/** Every built image under `imagesDir`, newest first within each language. */
export async function listImages(imagesDir: string): Promise<ImageInfo[]> {
  const images = (
    await Promise.all(LANGUAGES.map((language) => imagesOf(imagesDir, language)))
  ).flat();
  return images.sort((a, b) =>
    a.language === b.language
      ? b.version.localeCompare(a.version)
      : a.language.localeCompare(b.language),
  );
}

/** The finished images of one language, in no order (a create asks this, so it reads at once). */
async function imagesOf(imagesDir: string, language: Language): Promise<ImageInfo[]> {
  let entries: string[];
  try {
    entries = await readdir(`${imagesDir}/${language}`);
  } catch {
    return [];
  }
  const images = await Promise.all(
    entries
      .filter((entry) => !entry.startsWith("."))
      .map(async (entry) => {
        try {
          const info = JSON.parse(
            await readFile(`${imagesDir}/${language}/${entry}/image.json`, "utf8"),
          ) as ImageInfo;
          return { ...info, rootfs: `${imagesDir}/${language}/${entry}/rootfs` };
        } catch {
          return null; // not a finished image
        }
      }),
  );
  return images.filter((image) => image !== null);
}

/** The newest image of a language, or null when none is built. */
export async function newestImage(
  imagesDir: string,
  language: Language,
): Promise<ImageInfo | null> {
  const images = await imagesOf(imagesDir, language);
  return images.sort((a, b) => b.version.localeCompare(a.version))[0] ?? null;
}

/** The image with this version (a base image's, or a custom image's id), or null. */
export async function findImage(imagesDir: string, version: string): Promise<ImageInfo | null> {
  if (CUSTOM_ID.test(version)) return readCustomImage(imagesDir, version);
  return (await listImages(imagesDir)).find((image) => image.version === version) ?? null;
}

/** What a custom image adds to its language's base image (see `SandboxImage`). */
export interface CustomImageRecipe {
  /** Content address, `img-` and 32 hex digits: the image's directory name. */
  id: string;
  /** Extra Debian packages. */
  packages: string[];
  /** Files baked in: absolute path, UTF-8 content, permission bits. */
  files: { path: string; content: string; mode: number }[];
  /** Newer toolchains than Debian's, by name and version as asked (`{ node: "22" }`). */
  toolchains?: Record<string, string>;
}

const CUSTOM_ID = /^img-[0-9a-f]{32}$/;
/** Debian policy's package name grammar; nothing else may reach mmdebstrap's command line. */
const PACKAGE_NAME = /^[a-z0-9][a-z0-9+.-]+$/;
/** Kernel filesystems every shell mounts fresh: a file baked there would be hidden, or worse. */
const UNBAKEABLE = ["/proc", "/sys", "/dev"];

/** Where custom images live: `<imagesDir>/custom/<id>/image/{rootfs,image.json}`. */
const customDir = (imagesDir: string, id: string) => `${imagesDir}/custom/${id}`;

/**
 * The custom image of `recipe`, building it first when it is not cached. Builds are shared like
 * base image builds; each use marks the image as used now, which keeps it from
 * `pruneCustomImages` for a while. A cached image is used as built, even after the language's
 * base recipe changed: shells may run on it, so it is only ever removed whole by the prune.
 */
export async function ensureCustomImage(
  imagesDir: string,
  language: Language,
  recipe: CustomImageRecipe,
  options: BuildImageOptions = {},
): Promise<ImageInfo> {
  checkCustomRecipe(recipe);
  const dir = customDir(imagesDir, recipe.id);
  const current = () => readCustomImage(imagesDir, recipe.id);
  const image =
    (await current()) ??
    (await withBuildLock(dir, `custom image ${recipe.id}`, options, async () => {
      // Another process may have finished it while we waited for the lock.
      return (await current()) ?? (await buildCustom(imagesDir, language, recipe, options));
    }));
  await markUsed(dir);
  return image;
}

/** Whether the custom image `id` is cached (a create on it can start at once). */
export async function customImageReady(imagesDir: string, id: string): Promise<boolean> {
  return CUSTOM_ID.test(id) && (await readCustomImage(imagesDir, id)) !== null;
}

/**
 * Removes every custom image that is not in `keep` or `inUse` and was not used for `unusedForMs`
 * (a build or a create marks it used); answers the removed ids. An image being built is skipped
 * (its lock is held); base images are never touched.
 */
export async function pruneCustomImages(
  imagesDir: string,
  keep: ReadonlySet<string>,
  unusedForMs: number,
): Promise<string[]> {
  let entries: string[];
  try {
    entries = await readdir(`${imagesDir}/custom`);
  } catch {
    return [];
  }
  const removed: string[] = [];
  for (const id of entries) {
    // What a prune cut short (a crash between its rename and its rm) goes now.
    if (id.startsWith(".removing-"))
      await rm(`${imagesDir}/custom/${id}`, { recursive: true, force: true });
    if (!CUSTOM_ID.test(id) || keep.has(id)) continue;
    const dir = customDir(imagesDir, id);
    if (await exists(`${dir}/.build.lock`)) continue;
    const usedAt = await stat(`${dir}/used`).then(
      (s) => s.mtimeMs,
      () => stat(dir).then((s) => s.mtimeMs),
    );
    if (Date.now() - usedAt < unusedForMs) continue;
    // Renamed away first: a reader never sees a half-removed image.
    const doomed = `${imagesDir}/custom/.removing-${id}-${randomBytes(4).toString("hex")}`;
    await rename(dir, doomed);
    await rm(doomed, { recursive: true, force: true });
    removed.push(id);
  }
  return removed;
}

/**
 * Removes the cached toolchain downloads no remaining custom image was built from (and nothing
 * fetched for `unusedForMs`); answers the removed file names. Skipped while any custom image is
 * being built: its download is in no image yet.
 */
export async function pruneToolchainDownloads(
  imagesDir: string,
  unusedForMs: number,
): Promise<string[]> {
  const keep = new Set<string>();
  let entries: string[];
  try {
    entries = await readdir(`${imagesDir}/custom`);
  } catch {
    entries = [];
  }
  for (const id of entries) {
    if (!CUSTOM_ID.test(id)) continue;
    if (await exists(`${customDir(imagesDir, id)}/.build.lock`)) return [];
    for (const toolchain of (await readCustomImage(imagesDir, id))?.toolchains ?? [])
      keep.add(toolchainCacheFile(toolchain));
  }
  return pruneToolchainCache(`${imagesDir}/toolchains`, keep, unusedForMs);
}

function checkCustomRecipe(recipe: CustomImageRecipe): void {
  if (!CUSTOM_ID.test(recipe.id)) throw new Error(`not a custom image id: ${recipe.id}`);
  const bad = recipe.packages.find((name) => !PACKAGE_NAME.test(name));
  if (bad !== undefined) throw new Error(`not a Debian package name: ${JSON.stringify(bad)}`);
  for (const [name, version] of Object.entries(recipe.toolchains ?? {}))
    checkToolchain(name, version);
  for (const file of recipe.files) {
    const parts = file.path.split("/");
    if (
      !file.path.startsWith("/") ||
      parts.includes("..") ||
      parts.includes(".") ||
      UNBAKEABLE.some((top) => file.path === top || file.path.startsWith(`${top}/`))
    )
      throw new Error(`a custom image cannot hold a file at ${file.path}`);
  }
}

async function readCustomImage(imagesDir: string, id: string): Promise<ImageInfo | null> {
  const image = `${customDir(imagesDir, id)}/image`;
  try {
    const info = JSON.parse(await readFile(`${image}/image.json`, "utf8")) as ImageInfo;
    return { ...info, rootfs: `${image}/rootfs` };
  } catch {
    return null;
  }
}

/** The packages a custom image of `recipe` holds on `language`'s current base recipe. */
function customPackages(language: Language, recipe: CustomImageRecipe): string[] {
  return [
    ...new Set([
      ...IMAGE_RECIPES[language].packages,
      ...recipe.packages,
      ...toolchainPackages(recipe.toolchains ?? {}),
    ]),
  ];
}

async function markUsed(dir: string): Promise<void> {
  const now = new Date();
  await writeFile(`${dir}/used`, "").catch(() => undefined);
  await utimes(`${dir}/used`, now, now).catch(() => undefined);
}

async function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}

/**
 * Builds a custom image: mmdebstrap of the language's variant with its base packages and the
 * recipe's, the shell touches every image gets, the recipe's toolchains (fetched on the host and
 * checked, see toolchains.ts), then the recipe's files written from inside a
 * chroot of the new root — so a path through a symlink of the image (`/etc/alternatives/…` points
 * at absolute paths) resolves inside it, never on the host.
 */
async function buildCustom(
  imagesDir: string,
  language: Language,
  recipe: CustomImageRecipe,
  options: BuildImageOptions,
): Promise<ImageInfo> {
  const dir = customDir(imagesDir, recipe.id);
  const work = `${dir}/.build-${randomBytes(4).toString("hex")}`;
  const rootfs = `${work}/rootfs`;
  const report = reporter(options);
  const packages = customPackages(language, recipe);
  await mkdir(work, { recursive: true, mode: 0o700 });
  try {
    const asked = [
      ...recipe.packages,
      ...Object.entries(recipe.toolchains ?? {}).map(([name, version]) => `${name} ${version}`),
    ];
    const extra = asked.length ? ` with ${asked.join(", ")}` : "";
    const suite = await debootstrap(rootfs, IMAGE_RECIPES[language].variant, packages, options, {
      what: `custom image ${recipe.id} (${language}${extra})`,
      report,
    });
    report("finishing the image", 97);
    await finishRootfs(rootfs, language);
    const toolchains = recipe.toolchains
      ? await installToolchains(rootfs, `${imagesDir}/toolchains`, recipe.toolchains, {
          ...(options.npmRegistry ? { npmRegistry: options.npmRegistry } : {}),
          report,
        })
      : [];
    for (const file of recipe.files) {
      const written = await run(
        "chroot",
        [
          rootfs,
          "/bin/sh",
          "-c",
          'mkdir -p -- "$(dirname -- "$1")" && cat > "$1" && chmod "$2" "$1"',
          "sh",
          file.path,
          file.mode.toString(8),
        ],
        { input: file.content },
      );
      if (written.code !== 0)
        throw new Error(`could not bake ${file.path} into the image: ${written.stderr.trim()}`);
    }
    const info: ImageInfo = {
      language,
      version: recipe.id,
      rootfs: "",
      suite,
      packages,
      ...(toolchains.length ? { toolchains } : {}),
      createdAt: new Date().toISOString(),
    };
    await writeFile(`${work}/image.json`, JSON.stringify(info, null, 2));
    await rename(work, `${dir}/image`);
    report(`built ${recipe.id}`, 100);
    return { ...info, rootfs: `${dir}/image/rootfs` };
  } catch (error) {
    await rm(work, { recursive: true, force: true });
    throw error;
  }
}

/** The newest image of a language, building it first when there is none. */
export async function ensureImage(
  imagesDir: string,
  language: Language,
  options: BuildImageOptions = {},
): Promise<ImageInfo> {
  const existing = await newestImage(imagesDir, language);
  if (existing) return existing;
  return withBuildLock(`${imagesDir}/${language}`, `the ${language} image`, options, async () => {
    // Another process may have finished it while we waited for the lock.
    return (await newestImage(imagesDir, language)) ?? (await build(imagesDir, language, options));
  });
}

/** Builds a new version of a language's image (the newest from then on). */
export async function buildImage(
  imagesDir: string,
  language: Language,
  options: BuildImageOptions = {},
): Promise<ImageInfo> {
  if (!LANGUAGES.includes(language)) throw new Error(`no image recipe for language ${language}`);
  return withBuildLock(`${imagesDir}/${language}`, `the ${language} image`, options, () =>
    build(imagesDir, language, options),
  );
}

const inProcess = new Map<string, Promise<unknown>>();

/**
 * One build per image directory (a language's, or one custom image's) at a time, across
 * processes: a lock directory holding the owner's pid and start time. A lock whose owner died
 * (kill -9 mid-build) is taken over, and its half-built directory removed; finished images only
 * ever appear by an atomic rename.
 */
async function withBuildLock<T>(
  dir: string,
  what: string,
  options: BuildImageOptions,
  body: () => Promise<T>,
): Promise<T> {
  const key = dir;
  while (inProcess.has(key)) await inProcess.get(key)?.catch(() => undefined);
  const task = (async () => {
    await mkdir(dir, { recursive: true, mode: 0o700 });
    const lock = `${dir}/.build.lock`;
    let announced = false;
    for (;;) {
      try {
        await mkdir(lock);
        const start = await processStartTime(process.pid);
        await writeFile(`${lock}/owner`, JSON.stringify({ pid: process.pid, start }));
        break;
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== "EEXIST") throw error;
        const owner = await readOwner(lock);
        if (owner && !(await isAlive(owner.pid, owner.start))) {
          await rm(lock, { recursive: true, force: true });
          continue;
        }
        if (!owner) {
          // Just created by another process that has not written its owner file yet, or left
          // empty by a crash between mkdir and write: give it a moment, then take it over.
          const age =
            Date.now() -
            (await stat(lock).then(
              (s) => s.mtimeMs,
              () => Date.now(),
            ));
          if (age > 10_000) await rm(lock, { recursive: true, force: true });
        }
        if (!announced) {
          options.onProgress?.({
            phase: "image",
            message: `waiting for another build of ${what}`,
          });
          announced = true;
        }
        await sleep(500);
      }
    }
    try {
      for (const entry of await readdir(dir)) {
        if (entry.startsWith(".build-"))
          await rm(`${dir}/${entry}`, { recursive: true, force: true });
      }
      return await body();
    } finally {
      await rm(lock, { recursive: true, force: true });
    }
  })();
  inProcess.set(key, task);
  try {
    return await task;
  } finally {
    inProcess.delete(key);
  }
}

async function readOwner(lock: string): Promise<{ pid: number; start: string } | null> {
  try {
    return JSON.parse(await readFile(`${lock}/owner`, "utf8")) as { pid: number; start: string };
  } catch {
    return null;
  }
}

function hostSuite(): string {
  try {
    const osRelease = readFileSync("/etc/os-release", "utf8");
    const isDebian = /^ID=debian$/m.test(osRelease);
    const codename = /^VERSION_CODENAME=(\w+)$/m.exec(osRelease)?.[1];
    if (isDebian && codename) return codename;
  } catch {
    // not Debian
  }
  return "bookworm";
}

/** mmdebstrap's own progress lines, mapped to a rough percentage. */
const MILESTONES: [RegExp, number][] = [
  [/running apt-get update/, 5],
  [/downloading packages/, 20],
  [/extracting archives/, 45],
  [/installing essential packages/, 60],
  [/installing remaining packages/, 75],
  [/cleaning package lists/, 90],
  [/success/, 95],
];

async function build(
  imagesDir: string,
  language: Language,
  options: BuildImageOptions,
): Promise<ImageInfo> {
  const recipe = IMAGE_RECIPES[language];
  const now = new Date();
  const version = `${language}-${now
    .toISOString()
    .replace(/[-:]/g, "")
    .replace(/\.\d+Z$/, "z")
    .toLowerCase()}`;
  const work = `${imagesDir}/${language}/.build-${randomBytes(4).toString("hex")}`;
  const report = reporter(options);
  await mkdir(work, { recursive: true, mode: 0o700 });
  try {
    const suite = await debootstrap(`${work}/rootfs`, recipe.variant, recipe.packages, options, {
      what: `the ${language} image`,
      report,
    });
    report("finishing the image", 97);
    await finishRootfs(`${work}/rootfs`, language);
    const info: ImageInfo = {
      language,
      version,
      rootfs: "",
      suite,
      packages: recipe.packages,
      createdAt: now.toISOString(),
    };
    // Two builds within one second (a rebuild right after a build) get distinct versions.
    let final = `${imagesDir}/${language}/${version}`;
    for (
      let n = 2;
      await stat(final).then(
        () => true,
        () => false,
      );
      n++
    ) {
      info.version = `${version}-${n}`;
      final = `${imagesDir}/${language}/${info.version}`;
    }
    await writeFile(`${work}/image.json`, JSON.stringify(info, null, 2));
    await rename(work, final);
    report(`built ${info.version}`, 100);
    return { ...info, rootfs: `${final}/rootfs` };
  } catch (error) {
    await rm(work, { recursive: true, force: true });
    throw error;
  }
}

function reporter(options: BuildImageOptions) {
  return (message: string, percent?: number) =>
    options.onProgress?.({
      phase: "image",
      message,
      ...(percent === undefined ? {} : { percent }),
    });
}

/**
 * Runs mmdebstrap into `rootfs` with `packages` on top of `variant`, mapping its progress lines
 * to `report`; answers the Debian suite it used.
 */
async function debootstrap(
  rootfs: string,
  variant: "essential" | "apt",
  packages: string[],
  options: BuildImageOptions,
  { what, report }: { what: string; report: ReturnType<typeof reporter> },
): Promise<string> {
  const suite = options.suite ?? hostSuite();
  const mirror = options.mirror ?? process.env.SHELLS_DEBIAN_MIRROR;
  report(`building ${what} (${suite}, mmdebstrap --variant=${variant}); this takes a minute`, 0);
  const args = [
    `--variant=${variant}`,
    "--mode=root",
    "--format=directory",
    ...(packages.length ? [`--include=${packages.join(",")}`] : []),
    suite,
    rootfs,
    ...(mirror ? [mirror] : []),
  ];
  const result = await run("mmdebstrap", args, {
    onStderrLine: (line) => {
      const milestone = MILESTONES.find(([pattern]) => pattern.test(line));
      if (milestone) report(line.replace(/^I: /, ""), milestone[1]);
    },
  });
  if (result.code !== 0)
    throw new Error(
      `mmdebstrap failed (exit ${result.code}): ${result.stderr.trim().slice(-2000)}`,
    );
  return suite;
}

/** Shell-specific touches: a workspace, name resolution for localhost, no host resolver leaked. */
async function finishRootfs(rootfs: string, language: Language): Promise<void> {
  // Each shell gets a fresh /dev (a tmpfs with the harmless devices); the image needs no nodes.
  for (const entry of await readdir(`${rootfs}/dev`))
    await rm(`${rootfs}/dev/${entry}`, { recursive: true, force: true });
  await mkdir(`${rootfs}/workspace`, { recursive: true, mode: 0o755 });
  await writeFile(
    `${rootfs}/etc/hosts`,
    "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n",
  );
  await writeFile(`${rootfs}/etc/hostname`, "shell\n");
  // mmdebstrap copies the host's resolver config; a shell has no route to it (and must not learn it).
  await rm(`${rootfs}/etc/resolv.conf`, { force: true });
  await writeFile(`${rootfs}/etc/resolv.conf`, "");
  if (language === "python") {
    // The shell is its own disposable system: let `pip install` write to it (PEP 668 marker off).
    for (const entry of await readdir(`${rootfs}/usr/lib`)) {
      if (entry.startsWith("python3"))
        await rm(`${rootfs}/usr/lib/${entry}/EXTERNALLY-MANAGED`, { force: true });
    }
  }
}
