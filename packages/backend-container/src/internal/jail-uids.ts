import { readFile, readdir, rename, rm, writeFile } from "node:fs/promises";
import { claimRegistryEntry } from "./state.js";

/**
 * Host uid bands for processes that run as a uid of their own per shell outside a user namespace
 * mapping (the microvm backend's QEMUs, the wasm backend's interpreter workers), so that nothing
 * the kernel keeps per uid (process counts against RLIMIT_NPROC, keyrings, inotify and
 * message-queue quotas, the rules on who may signal or trace whom) is shared between two shells,
 * and a process that got out of its mount namespace still could not open another shell's files
 * (another owner).
 *
 * Both bands lie below the container backend's uid ranges (0x70000000 and up), clear of login
 * users, /etc/subuid allocations and systemd's dynamic users; they are the top of the range
 * systemd-nspawn may draw container ranges from, so only an nspawn container on the same host
 * could overlap them. One band per backend, so two backends with registries of their own never
 * hand out the same uid.
 */
export const JAIL_UID_BANDS = {
  microvm: { first: 0x6ffe_0000, count: 0x2_0000 },
  wasm: { first: 0x6ffc_0000, count: 0x2_0000 },
} as const;

/** A band of host uids, `first` … `first + count - 1`. */
export interface JailUidBand {
  first: number;
  count: number;
}

/**
 * Claims a uid of the band no other claimant on this host holds, across state dirs and processes:
 * `<registry>/<uid>` records the owner (a directory that exists while the claim is live; a claim
 * whose owner is gone is stale and freed for a later claim).
 */
export function claimJailUid(
  registryDir: string,
  band: JailUidBand,
  ownerDir: string,
): Promise<number> {
  return claimRegistryEntry(registryDir, band, ownerDir);
}

/** Releases a uid, only if `ownerDir` holds it. */
export async function releaseJailUid(
  registryDir: string,
  uid: number,
  ownerDir: string,
): Promise<void> {
  const owner = await readFile(`${registryDir}/${uid}/owner`, "utf8").catch(() => null);
  if (owner === ownerDir) await rm(`${registryDir}/${uid}`, { recursive: true, force: true });
}

/** Releases every uid a directory holds (a record cut before it named its uid). */
export async function releaseJailUidsOf(registryDir: string, ownerDir: string): Promise<void> {
  for (const entry of await readdir(registryDir).catch(() => [] as string[]))
    if (/^\d+$/.test(entry)) await releaseJailUid(registryDir, Number(entry), ownerDir);
}

/**
 * Hands a uid `from` holds to `to` (a pooled process's uid to the shell that claims it); `to` must
 * exist first, or the claim would look stale. The owner file is replaced by a rename, so a reader
 * sees one owner or the other. Returns false when `from` does not hold it.
 */
export async function transferJailUid(
  registryDir: string,
  uid: number,
  from: string,
  to: string,
): Promise<boolean> {
  const owner = await readFile(`${registryDir}/${uid}/owner`, "utf8").catch(() => null);
  if (owner !== from) return false;
  await writeFile(`${registryDir}/${uid}/owner.tmp`, to);
  await rename(`${registryDir}/${uid}/owner.tmp`, `${registryDir}/${uid}/owner`);
  return true;
}
