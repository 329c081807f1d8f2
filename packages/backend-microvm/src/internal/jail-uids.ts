import { randomInt } from "node:crypto";
import { mkdir, readFile, rm, stat, writeFile } from "node:fs/promises";

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
 * Claims a uid no other VM on this host holds, across state dirs and processes: a uid is taken by
 * creating `<registry>/<uid>` (atomic), which records the owning shell dir. Drawn at random, so a
 * claim leaked by a crash costs one uid, never a collision; a claim whose shell dir is gone is
 * stale and freed.
 */
export async function claimJailUid(registryDir: string, ownerShellDir: string): Promise<number> {
  await mkdir(registryDir, { recursive: true, mode: 0o700 });
  for (let attempt = 0; attempt < 1000; attempt++) {
    const uid = JAIL_UID_BASE + randomInt(0, JAIL_UIDS);
    try {
      await mkdir(`${registryDir}/${uid}`);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "EEXIST") throw error;
      const owner = await readFile(`${registryDir}/${uid}/owner`, "utf8").catch(() => null);
      if (owner && !(await stat(owner).then(Boolean, () => false)))
        await rm(`${registryDir}/${uid}`, { recursive: true, force: true });
      continue;
    }
    await writeFile(`${registryDir}/${uid}/owner`, ownerShellDir);
    return uid;
  }
  throw new Error("no free uid for a microvm jail");
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
