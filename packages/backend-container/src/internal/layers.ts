import { randomBytes } from "node:crypto";
import { link, mkdir, readdir, rename, rm } from "node:fs/promises";
import { repairDiskIfNeeded, type DiskCopyMethod } from "./disk.js";
import { listShellIds, readJson, writeJson } from "./state.js";

/*
 * Shared layers: a fork's inherited state, read-only, under `<stateDir>/layers/<id>/disk.img`.
 *
 * A shell's root is overlay(lower = its layers (top first) : base image, upper = its own disk). A
 * fork turns the parent's state at one instant into a new layer: a stopped parent's disk simply
 * becomes the layer (a hard link, then the parent gets a fresh disk over it), a running or paused
 * one's disk is copied once while it is frozen (a hard link would let the parent's in-place writes
 * show through). Every child then starts on an empty disk of its own over the same layers, so N
 * children cost one copy at most, not N.
 *
 * A layer is never written again once made; whoever holds its id in a chain may read it. It is
 * referenced by shell records, snapshot metadata (a snapshot is its upper's archive plus the chain
 * it sat on) and fork captures, and removed by `sweepLayers` once nothing references it: the
 * count is derived from those files, so it survives a crash and a restart of the control plane.
 */

/** One layer a shell stacks on: its id and the host uid of root in its files (whoever wrote it). */
export interface LayerRef {
  id: string;
  uidBase: number;
}

/** Deepest chain a shell stacks on (native/sandbox.h MAX_LAYERS); deeper forks copy instead. */
export const MAX_LAYER_DEPTH = 8;

const LAYER_ID = /^layer-[0-9a-f]{16}$/;

/** `<stateDir>/layers`. */
export function layersDirOf(stateDir: string): string {
  return `${stateDir}/layers`;
}

/** The disk image of a layer. */
export function layerDisk(stateDir: string, layerId: string): string {
  return `${layersDirOf(stateDir)}/${layerId}/disk.img`;
}

/**
 * Makes a layer whose disk image `fill` puts at the path it is given: a hard link to a disk nothing
 * writes any more (a stopped shell's, about to be replaced), or a copy (see `copyDisk`), which is
 * then checked (`e2fsck`) after `fill` returned, so a caller that holds a shell still for `fill`
 * does not hold it for the check. Made under a hidden name and renamed in when whole: a crash
 * leaves a hidden directory, which `recover` removes.
 */
export async function makeLayer(
  stateDir: string,
  uidBase: number,
  fill: (target: string) => Promise<DiskCopyMethod | "link">,
): Promise<{ ref: LayerRef; method: DiskCopyMethod | "link" }> {
  const id = `layer-${randomBytes(8).toString("hex")}`;
  const dir = layersDirOf(stateDir);
  const pending = `${dir}/.${id}`;
  await mkdir(pending, { recursive: true, mode: 0o700 });
  try {
    const method = await fill(`${pending}/disk.img`);
    // Copied while mounted: the copy's superblock says "not cleanly unmounted".
    if (method !== "link") await repairDiskIfNeeded(`${pending}/disk.img`);
    await writeJson(`${pending}/layer.json`, { id, uidBase, createdAt: new Date().toISOString() });
    await rename(pending, `${dir}/${id}`);
    return { ref: { id, uidBase }, method };
  } catch (error) {
    await rm(pending, { recursive: true, force: true });
    throw error;
  }
}

/** What may hold layers: a shell record, a snapshot's metadata, a fork capture. */
interface LayerHolder {
  layers?: LayerRef[];
}

/**
 * Removes every layer that no shell record, snapshot and fork capture under `stateDir`
 * references, and what a crash left half-made. Returns the ids removed.
 */
export async function sweepLayers(stateDir: string, forksDir: string): Promise<string[]> {
  const dir = layersDirOf(stateDir);
  let entries: string[];
  try {
    entries = await readdir(dir);
  } catch {
    return [];
  }
  if (entries.length === 0) return [];
  const referenced = await referencedLayers(stateDir, forksDir);
  const removed: string[] = [];
  for (const entry of entries) {
    if (LAYER_ID.test(entry) && referenced.has(entry)) continue;
    // A hidden entry is a layer being made right now or a crash's leftover: only the latter is
    // old enough to be safely removed, and recover (no fork under way) removes them all.
    if (entry.startsWith(".")) continue;
    await rm(`${dir}/${entry}`, { recursive: true, force: true });
    removed.push(entry);
  }
  return removed;
}

/** Removes half-made layers (only when no fork is under way: at recover). */
export async function removePendingLayers(stateDir: string): Promise<void> {
  const dir = layersDirOf(stateDir);
  for (const entry of await readdir(dir).catch(() => [] as string[]))
    if (entry.startsWith(".")) await rm(`${dir}/${entry}`, { recursive: true, force: true });
}

/** The ids of every layer a shell record, snapshot or capture under `stateDir` references. */
async function referencedLayers(stateDir: string, forksDir: string): Promise<Set<string>> {
  const referenced = new Set<string>();
  const add = (holder: LayerHolder | null) => {
    for (const layer of holder?.layers ?? []) referenced.add(layer.id);
  };
  const shellsDir = `${stateDir}/shells`;
  for (const shellId of await listShellIds(shellsDir)) {
    add(await readJson<LayerHolder>(`${shellsDir}/${shellId}/shell.json`));
    const snapshots = `${shellsDir}/${shellId}/snapshots`;
    for (const entry of await readdir(snapshots).catch(() => [] as string[]))
      if (entry.endsWith(".json")) add(await readJson<LayerHolder>(`${snapshots}/${entry}`));
  }
  for (const entry of await readdir(forksDir).catch(() => [] as string[]))
    add(await readJson<LayerHolder>(`${forksDir}/${entry}/capture.json`));
  return referenced;
}

/** A `makeLayer` fill that hard-links `source` (only for a disk nothing writes any more). */
export function linkTo(source: string): (target: string) => Promise<"link"> {
  return async (target) => {
    await link(source, target);
    return "link";
  };
}
