import { access, constants, readFile } from "node:fs/promises";
import { release } from "node:os";
import { detectCgroups } from "./cgroups.js";

/** One requirement of the container runtime and whether this host meets it. */
export interface HostCheck {
  name: string;
  ok: boolean;
  detail: string;
  /** Debian package that provides it, when installing one fixes it. */
  aptPackage?: string;
}

/** What this host can run for the `container` class, and what is missing. */
export interface ContainerHostReport {
  available: boolean;
  /** Null when available; else what is missing, in words, with the install command. */
  reason: string | null;
  checks: HostCheck[];
  /** `apt-get install -y …` for the missing packages, or null when none is missing. */
  installCommand: string | null;
  cgroupVersion: 1 | 2 | null;
}

/** The full path of `command` on PATH, or null when it is not installed. */
export async function onPath(command: string): Promise<string | null> {
  for (const dir of (process.env.PATH ?? "/usr/sbin:/usr/bin:/sbin:/bin").split(":")) {
    try {
      await access(`${dir}/${command}`, constants.X_OK);
      return `${dir}/${command}`;
    } catch {
      // next
    }
  }
  return null;
}

async function exists(path: string): Promise<boolean> {
  try {
    await access(path);
    return true;
  } catch {
    return false;
  }
}

function kernelAtLeast(major: number, minor: number): boolean {
  const [a = 0, b = 0] = release().split(/[.-]/).map(Number);
  return a > major || (a === major && b >= minor);
}

/**
 * Checks what the container runtime needs on this host: root, a kernel with id-mapped mounts under
 * overlayfs (5.19+), user namespaces, cgroup controllers (v1 or v2), loop devices, and the tools it
 * calls (mmdebstrap, mkfs.ext4/e2fsck, tar, and gcc + libseccomp headers to compile its helper).
 * Nothing is installed here; the report names the apt command that fixes what is missing.
 */
export async function checkContainerHost(): Promise<ContainerHostReport> {
  const checks: HostCheck[] = [];
  const add = (name: string, ok: boolean, detail: string, aptPackage?: string) =>
    checks.push({ name, ok, detail, ...(aptPackage && !ok ? { aptPackage } : {}) });

  const isRoot = process.getuid?.() === 0;
  add(
    "root",
    isRoot,
    isRoot
      ? "running as root"
      : "the container runtime needs root (cgroups, loop devices, id-mapped mounts)",
  );
  add("linux", process.platform === "linux", `platform ${process.platform}`);
  const kernelOk = process.platform === "linux" && kernelAtLeast(5, 19);
  add(
    "kernel",
    kernelOk,
    `kernel ${release()}${kernelOk ? "" : ": 5.19 or newer needed (overlayfs over id-mapped layers)"}`,
  );

  const maxUserNs = await readFile("/proc/sys/user/max_user_namespaces", "utf8").catch(() => "0");
  add("user namespaces", Number(maxUserNs) > 0, `max_user_namespaces=${maxUserNs.trim()}`);

  const filesystems = await readFile("/proc/filesystems", "utf8").catch(() => "");
  const overlay =
    /\toverlay\n/.test(filesystems) ||
    (await exists(`/lib/modules/${release()}/kernel/fs/overlayfs`));
  add(
    "overlayfs",
    overlay,
    overlay ? "overlay filesystem available" : "overlayfs missing from the kernel",
  );
  const ext4 = /\text4\n/.test(filesystems);
  add("ext4", ext4, ext4 ? "ext4 available" : "ext4 missing from the kernel (per-shell disks)");
  const loop = await exists("/dev/loop-control");
  add(
    "loop devices",
    loop,
    loop ? "/dev/loop-control present" : "/dev/loop-control missing (modprobe loop)",
  );

  let cgroupVersion: 1 | 2 | null = null;
  try {
    const cgroups = detectCgroups();
    if (typeof cgroups === "string") add("cgroups", false, cgroups);
    else {
      cgroupVersion = cgroups.version;
      add("cgroups", true, `cgroup v${cgroups.version} with memory, pids and cpu controllers`);
    }
  } catch (error) {
    add("cgroups", false, `cannot read cgroup mounts: ${(error as Error).message}`);
  }

  const tools: [string, string][] = [
    ["mmdebstrap", "mmdebstrap"],
    ["mkfs.ext4", "e2fsprogs"],
    ["e2fsck", "e2fsprogs"],
    ["tar", "tar"],
    ["gcc", "gcc"],
    // `internet` shells: the egress forwarder walls the shell's network namespace with these.
    ["ip", "iproute2"],
    ["nft", "nftables"],
  ];
  for (const [command, pkg] of tools) {
    const path = await onPath(command);
    add(command, path !== null, path ?? `${command} not found`, pkg);
  }
  const seccompHeader = await exists("/usr/include/seccomp.h");
  add(
    "libseccomp",
    seccompHeader,
    seccompHeader ? "libseccomp headers present" : "seccomp.h missing (compiles the helper)",
    "libseccomp-dev",
  );

  const failed = checks.filter((c) => !c.ok);
  const packages = [
    ...new Set(failed.map((c) => c.aptPackage).filter((p): p is string => Boolean(p))),
  ];
  const installCommand = packages.length ? `apt-get install -y ${packages.join(" ")}` : null;
  const reason = failed.length
    ? `missing: ${failed.map((c) => `${c.name} (${c.detail})`).join("; ")}${installCommand ? `. Fix: ${installCommand}` : ""}`
    : null;
  return { available: failed.length === 0, reason, checks, installCommand, cgroupVersion };
}
