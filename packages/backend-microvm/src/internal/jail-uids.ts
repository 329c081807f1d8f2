import { claimRegistryEntry } from "@shells/backend-container";
import { readFile, readdir, rm } from "node:fs/promises";

/**
 * Each VM's QEMU runs as a uid of its own, so that nothing the kernel keeps per uid (process and
 * thread counts against RLIMIT_NPROC, keyrings, inotify and message-queue quotas, the rules on who
 * may signal or trace whom) is shared between two shells' QEMUs, and a QEMU that got out of its
 * mount namespace still could not open another VM's disk (0600, another owner).
 *
 * The band 0x6FFE0000–0x6FFFFFFF: below the container backend's uid ranges (0x70000000 and up),
 * clear of login users, /etc/subuid allocations and systemd's dynamic users; it is the top of the
 * range systemd-nspawn may draw container ranges from, so only an nspawn container on the same
 * host could overlap it.
 */
export const JAIL_UID_BASE = 0x6ffe_0000;
export const JAIL_UIDS = 0x2_0000;

/**
 * Claims a uid no other VM on this host holds, across state dirs and processes: `<registry>/<uid>`, claimed
 * the way the container backend claims its uid slots.
 */
export function claimJailUid(registryDir: string, ownerShellDir: string): Promise<number> {
  return claimRegistryEntry(registryDir, { first: JAIL_UID_BASE, count: JAIL_UIDS }, ownerShellDir);
}

/** Releases a uid, only if this shell holds it. */
export async function releaseJailUid(
  registryDir: string,
  uid: number,
  ownerShellDir: string,
): Promise<void> {
  const owner = await readFile(`${registryDir}/${uid}/owner`, "utf8").catch(() => null);
  if (owner === ownerShellDir) await rm(`${registryDir}/${uid}`, { recursive: true, force: true });
}

/** Releases every uid a shell directory holds (a record cut before it named its uid). */
export async function releaseJailUidsOf(registryDir: string, ownerShellDir: string): Promise<void> {
  for (const entry of await readdir(registryDir).catch(() => [] as string[]))
    if (/^\d+$/.test(entry)) await releaseJailUid(registryDir, Number(entry), ownerShellDir);
}
