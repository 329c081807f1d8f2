import { detectCgroups, onPath, type HostCheck } from "@shells/backend-container";
import { access } from "node:fs/promises";
import { kernelCached, kvmRefused, kvmUsable, runChecked } from "./host.js";

/** What this host can run for the `microvm` class, and what is missing. */
export interface MicrovmHostReport {
  available: boolean;
  /**
   * `microvm (kvm)` or `microvm (emulated)` when available; else what is missing, in words, with
   * the commands that fix it.
   */
  reason: string;
  checks: HostCheck[];
  /** `apt-get install -y …` for the missing packages, or null when none is missing. */
  installCommand: string | null;
  /** The accelerator shells would run on: KVM where /dev/kvm works, else TCG emulation. */
  accel: "kvm" | "tcg";
}

/** The programs a template build and a VM start call, with the Debian package of each. */
const TOOLS: [command: string, aptPackage: string][] = [
  ["qemu-system-x86_64", "qemu-system-x86"],
  ["qemu-img", "qemu-utils"],
  ["mkfs.ext4", "e2fsprogs"],
  // Base disks are shrunk to their contents (resize2fs -M after e2fsck, dumpe2fs reads the size).
  ["resize2fs", "e2fsprogs"],
  ["e2fsck", "e2fsprogs"],
  ["dumpe2fs", "e2fsprogs"],
  // QEMU's jail (jail.ts): namespaces and binds, then the drop to the VM's own uid.
  ["bwrap", "bubblewrap"],
  ["setpriv", "util-linux"],
  ["cpio", "cpio"],
  // The guest agent is linked statically; the shells_mmio module is built against the guest
  // kernel's own headers (fetched, never installed) with make, gcc and strip.
  ["gcc", "gcc"],
  ["make", "make"],
  ["strip", "binutils"],
  ["apt-get", "apt"],
  ["dpkg-deb", "dpkg"],
];

/** Where glibc's static archive lives on Debian (libc6-dev): the agent is a static binary. */
const STATIC_LIBC = "/usr/lib/x86_64-linux-gnu/libc.a";

/** Whether apt's lists know the cloud kernel, remembered once it is known (it stays known). */
let aptKnowsKernel = false;

/**
 * Checks what the microvm class needs here: an x86-64 Linux host, QEMU and the build tools, and a
 * guest kernel (already fetched into `cacheDir`, or known to apt so the first template build can
 * fetch it). KVM is used where /dev/kvm works; without it QEMU emulates (TCG), slower but real.
 * Nothing is installed here; the report names the commands that fix what is missing.
 */
export async function checkMicrovmHost(cacheDir: string): Promise<MicrovmHostReport> {
  const checks: HostCheck[] = [];
  const add = (name: string, ok: boolean, detail: string, aptPackage?: string) =>
    checks.push({ name, ok, detail, ...(aptPackage && !ok ? { aptPackage } : {}) });

  const platformOk = process.platform === "linux" && process.arch === "x64";
  add("x86-64 linux", platformOk, `${process.platform}/${process.arch}`);
  for (const [command, pkg] of TOOLS) {
    const path = await onPath(command);
    add(command, path !== null, path ?? `${command} not found`, pkg);
  }
  const staticLibc = await access(STATIC_LIBC).then(
    () => true,
    () => false,
  );
  add(
    "static libc",
    staticLibc,
    staticLibc ? STATIC_LIBC : `${STATIC_LIBC} missing (links the guest agent)`,
    "libc6-dev",
  );

  // The jail puts QEMU in a host cgroup and drops it to a uid of its own: both need root.
  const root = process.getuid?.() === 0;
  add(
    "root",
    root,
    root ? "root" : "the microvm class runs as root (each QEMU gets a host cgroup and its own uid)",
  );
  const cgroups = detectCgroups();
  add(
    "cgroups",
    typeof cgroups !== "string",
    typeof cgroups === "string" ? cgroups : `v${cgroups.version}`,
  );

  const cached = await kernelCached(cacheDir);
  if (!cached && !aptKnowsKernel)
    aptKnowsKernel = await runChecked("apt-cache", ["depends", "linux-image-cloud-amd64"]).then(
      (answer) => /Depends:\s+linux-image-\S+-cloud-amd64/.test(answer),
      () => false,
    );
  add(
    "guest kernel",
    cached || aptKnowsKernel,
    cached
      ? "fetched"
      : aptKnowsKernel
        ? "linux-image-cloud-amd64 is fetched by the first template build"
        : "apt knows no linux-image-cloud-amd64: run apt-get update (Debian's main archive must be in apt's sources)",
  );

  const kvm = platformOk && (await onPath("qemu-system-x86_64")) !== null && (await kvmUsable());
  const refused = kvmRefused();
  add(
    "accelerator",
    true,
    kvm
      ? "kvm"
      : refused
        ? `tcg: a guest did not boot on /dev/kvm (${refused}), QEMU emulates the guest (slower, still a VM)`
        : "tcg: no usable /dev/kvm, QEMU emulates the guest (slower, still a VM)",
  );

  const failed = checks.filter((c) => !c.ok);
  const packages = [
    ...new Set(failed.map((c) => c.aptPackage).filter((p): p is string => Boolean(p))),
  ];
  const installCommand = packages.length ? `apt-get install -y ${packages.join(" ")}` : null;
  const reason = failed.length
    ? `missing: ${failed.map((c) => `${c.name} (${c.detail})`).join("; ")}${installCommand ? `. Fix, as root: ${installCommand}` : ""}`
    : isolationOf(kvm ? "kvm" : "tcg");
  return {
    available: failed.length === 0,
    reason,
    checks,
    installCommand,
    accel: kvm ? "kvm" : "tcg",
  };
}

/** How a shell's isolation reads on its record and in `/readyz`. */
export function isolationOf(accel: "kvm" | "tcg"): string {
  return accel === "kvm" ? "microvm (kvm)" : "microvm (emulated)";
}
