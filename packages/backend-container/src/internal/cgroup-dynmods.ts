import { readFileSync } from "node:fs";
import { mkdir, rmdir } from "node:fs/promises";
import type { CgroupHost } from "./cgroups.js";
import { run } from "./proc.js";

/**
 * Moving a process into a cgroup (every exec helper and every sandbox start does, in each
 * hierarchy) takes the kernel's cgroup_threadgroup_rwsem for writing. In the kernel's default mode
 * that waits for an RCU grace period, unless another migration happened just before: 12–15 ms for
 * the first write to `cgroup.procs` on this project's 2-core test host, more than the rest of an
 * exec. The kernel's `favordynmods` mode (Linux 6.0 and later) keeps the lock ready for writers, at
 * a small cost to every fork and exit on the host. It is one mode for the whole kernel: a cgroup
 * mount with the option (any v1 hierarchy, or cgroup2), or the boot parameter
 * `cgroup_favordynmods=true`, turns it on.
 */

/** Where the mode is on already: a cgroup mount with the option, or the boot parameter. */
export function favorsDynmods(
  mountinfo = readFileSync("/proc/self/mountinfo", "utf8"),
  cmdline = readFileSync("/proc/cmdline", "utf8"),
): boolean {
  if (/(^|\s)cgroup_favordynmods=(1|true|y)(\s|$)/i.test(cmdline)) return true;
  return mountinfo.split("\n").some((line) => {
    const [, right] = line.split(" - ");
    const [fsType, , superOptions = ""] = (right ?? "").split(" ");
    return (
      (fsType === "cgroup" || fsType === "cgroup2") &&
      superOptions.split(",").includes("favordynmods")
    );
  });
}

export type DynmodsState =
  /** The host had the mode on (a mount of someone else's, or the boot parameter). */
  | { state: "already" }
  /** Turned on by mounting a named cgroup v1 hierarchy, with no controller, at `mountPoint`. */
  | { state: "mounted"; mountPoint: string }
  /** Not turned on: why (cgroup v2, where the host's own mount decides; a kernel without it). */
  | { state: "off"; reason: string };

/**
 * Turns the kernel's `favordynmods` mode on where it is off, on a cgroup v1 host, by mounting a
 * hierarchy of no controller with the option at `mountPoint`. The mode is the host's, not one
 * server's: the mount stays when the server stops (other servers may rely on it; `umount` ends it,
 * though the kernel may keep the mode until the hierarchy's last reference goes). On cgroup v2 the
 * host's cgroup2 mount decides (`mount -o remount,favordynmods /sys/fs/cgroup`, or the boot
 * parameter): this never remounts the host's own hierarchy.
 */
export async function favorDynmods(
  host: CgroupHost,
  mountPoint: string,
  already = favorsDynmods(),
): Promise<DynmodsState> {
  if (already) return { state: "already" };
  if (host.version === 2)
    return {
      state: "off",
      reason:
        "cgroup v2: remount it with favordynmods (mount -o remount,favordynmods /sys/fs/cgroup) or boot with cgroup_favordynmods=true",
    };
  await mkdir(mountPoint, { recursive: true, mode: 0o700 });
  const mounted = await run("mount", [
    "-t",
    "cgroup",
    "-o",
    "none,name=shells-favordynmods,favordynmods",
    "shells-favordynmods",
    mountPoint,
  ]);
  if (mounted.code !== 0) {
    await rmdir(mountPoint).catch(() => undefined);
    return { state: "off", reason: mounted.stderr.trim() || `mount exited ${mounted.code}` };
  }
  return { state: "mounted", mountPoint };
}
