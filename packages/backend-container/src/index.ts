/**
 * The `container` runtime class: real sandboxes from Linux namespaces, cgroups and an overlay root
 * filesystem over per-language Debian base images. This file is the package's contract; everything
 * else lives in `internal/` (and the C helper in `native/`).
 */
import type { Language } from "@shells/contract";
import {
  buildImage as buildImageIn,
  listImages as listImagesIn,
  presetVersions as presetVersionsIn,
  type BuildImageOptions,
  type ImageInfo,
  type PresetVersion,
} from "./internal/images.js";

export {
  ContainerBackend,
  type ContainerBackendOptions,
  type ContainerLogger,
} from "./container-backend.js";
export {
  checkContainerHost,
  onPath,
  type ContainerHostReport,
  type HostCheck,
} from "./internal/host-check.js";
export {
  detectCgroups,
  shellCgroupName,
  ShellCgroup,
  type CgroupHost,
} from "./internal/cgroups.js";
export { ensureSeccompProgram } from "./internal/native.js";
export { favorsDynmods, type DynmodsState } from "./internal/cgroup-dynmods.js";
/** Host-wide claims on numbered entries (uid slots, jail uids), one registry dir each. */
export { claimRegistryEntry } from "./internal/state.js";
export {
  claimJailUid,
  JAIL_UID_BANDS,
  releaseJailUid,
  releaseJailUidsOf,
  transferJailUid,
  type JailUidBand,
} from "./internal/jail-uids.js";
export {
  IMAGE_RECIPES,
  type BuildImageOptions,
  type ImageBuildProgress,
  type ImageInfo,
  type PresetVersion,
} from "./internal/images.js";

/** Where a state dir keeps its images unless `ContainerBackendOptions.imagesDir` says otherwise. */
export function imagesDirOf(stateDir: string): string {
  return `${stateDir.replace(/\/+$/, "")}/images`;
}

/**
 * Builds a new version of a language's base image under `<stateDir>/images` (for `shells images
 * build`); shells created afterwards, and `reinstallOs`, use it. Takes about a minute; progress goes
 * to `onProgress`. Concurrent builds of one language wait for each other.
 */
export function buildImage(
  stateDir: string,
  language: Language,
  options: BuildImageOptions & { imagesDir?: string } = {},
): Promise<ImageInfo> {
  const { imagesDir, ...build } = options;
  return buildImageIn(imagesDir ?? imagesDirOf(stateDir), language, build);
}

/**
 * Built base images under `<stateDir>/images` (or `imagesDir` when the server shares one), newest
 * first per language (for `shells images ls`).
 */
export function listImages(stateDir: string, imagesDir?: string): Promise<ImageInfo[]> {
  return listImagesIn(imagesDir ?? imagesDirOf(stateDir));
}

/**
 * Each language preset's toolchain and its version in the language's newest base image under
 * `<stateDir>/images` (or `imagesDir`); null versions for images not built yet.
 */
export function presetVersions(stateDir: string, imagesDir?: string): Promise<PresetVersion[]> {
  return presetVersionsIn(imagesDir ?? imagesDirOf(stateDir));
}

/**
 * The newest image of a language under `imagesDir`, building it first when there is none (other
 * runtime classes build their disks from the same rootfs: one recipe, two formats).
 */
export { ensureImage } from "./internal/images.js";
