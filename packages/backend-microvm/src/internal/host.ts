import { execFile, spawn } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import {
  access,
  copyFile,
  mkdir,
  readFile,
  readdir,
  rename,
  rm,
  truncate,
  writeFile,
} from "node:fs/promises";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";

const execFileP = promisify(execFile);

/** native/ of this package (the agent's C source). */
export const NATIVE_DIR = fileURLToPath(new URL("../../native/", import.meta.url));

/**
 * Modules the guest loads before it can see its disk and its agent port, in load order.
 * `shells_mmio` is built here (native/shells-mmio.c): it registers the virtio-mmio devices QEMU
 * names on the kernel command line, which Debian's virtio_mmio module cannot read itself.
 */
export const GUEST_MODULES = [
  "virtio_ring",
  "virtio",
  "virtio_mmio",
  "shells_mmio",
  "virtio_blk",
  "virtio_console",
];
const MODULE_DIRS: Record<string, string> = {
  virtio_ring: "drivers/virtio",
  virtio: "drivers/virtio",
  virtio_mmio: "drivers/virtio",
  virtio_blk: "drivers/block",
  virtio_console: "drivers/char",
};

/** A step of a build, for progress output. */
export interface BuildProgress {
  phase: string;
  message: string;
  percent?: number;
}

/** Runs a program; throws with its stderr when it fails. */
export async function runChecked(file: string, args: string[], cwd?: string): Promise<string> {
  try {
    const { stdout } = await execFileP(file, args, {
      cwd,
      maxBuffer: 64 * 1024 * 1024,
      env: { ...process.env, LC_ALL: "C" },
    });
    return stdout;
  } catch (error) {
    const e = error as { stderr?: string; message: string };
    throw new Error(
      `${file} ${args.join(" ")} failed: ${(e.stderr ?? e.message).trim().slice(-2000)}`,
      { cause: error },
    );
  }
}

/** The guest kernel: Debian's cloud kernel, unpacked from its package (never installed on the host). */
export interface GuestKernel {
  release: string;
  vmlinuz: string;
  /** Directory holding GUEST_MODULES as `<name>.ko`. */
  modulesDir: string;
}

/** Where the guest kernel lives: keyed by the module's source, so a changed module is built again. */
async function kernelDir(cacheDir: string): Promise<string> {
  const mmioSource = await readFile(`${NATIVE_DIR}shells-mmio.c`);
  return `${cacheDir}/kernel-${createHash("sha256").update(mmioSource).digest("hex").slice(0, 12)}`;
}

/** Whether the guest kernel has been fetched (and its module built) into `cacheDir`. */
export async function kernelCached(cacheDir: string): Promise<boolean> {
  return existsSync(`${await kernelDir(cacheDir)}/kernel.json`);
}

/**
 * Fetches and unpacks the Debian cloud kernel into `<cacheDir>/kernel-<key>` (once), and builds
 * native/shells-mmio.c against its headers (also fetched, never installed). The cloud kernel has
 * ext4 built in but virtio as modules and no virtio-mmio command-line devices; the guest boots
 * without ACPI and its init loads the modules, shells_mmio registering the devices.
 */
export async function ensureKernel(
  cacheDir: string,
  report: (message: string) => void = () => undefined,
): Promise<GuestKernel> {
  const dir = await kernelDir(cacheDir);
  try {
    return JSON.parse(await readFile(`${dir}/kernel.json`, "utf8")) as GuestKernel;
  } catch {
    // not fetched yet
  }
  report("fetching the Debian cloud kernel (apt-get download linux-image-cloud-amd64)");
  const pkg = dependsOf(
    await runChecked("apt-cache", ["depends", "linux-image-cloud-amd64"]),
    /^linux-image-[\w.+-]+-cloud-amd64$/,
  );
  if (!pkg)
    throw new Error("apt knows no linux-image-cloud-amd64 (is this Debian with apt lists?)");
  const release = pkg.replace(/^linux-image-/, "");
  const headers = `linux-headers-${release}`;
  const headerDepends = await runChecked("apt-cache", ["depends", headers]);
  const work = `${cacheDir}/.kernel-${randomBytes(4).toString("hex")}`;
  await mkdir(`${work}/x`, { recursive: true });
  try {
    const packages = [
      pkg,
      headers,
      dependsOf(headerDepends, /^linux-headers-[\w.+-]+-common$/),
      dependsOf(headerDepends, /^linux-kbuild-[\d.]+$/),
    ];
    if (packages.some((name) => !name)) throw new Error(`apt knows no complete ${headers}`);
    await runChecked("apt-get", ["download", ...(packages as string[])], work);
    for (const deb of (await readdir(work)).filter((name) => name.endsWith(".deb")))
      await runChecked("dpkg-deb", ["-x", `${work}/${deb}`, `${work}/x`]);
    const config = await readFile(`${work}/x/boot/config-${release}`, "utf8");
    for (const option of [
      "EXT4_FS=y",
      "VIRTIO_MMIO=[ym]",
      "VIRTIO_BLK=[ym]",
      "VIRTIO_CONSOLE=[ym]",
    ])
      if (!new RegExp(`^CONFIG_${option}$`, "m").test(config))
        throw new Error(`the ${release} kernel lacks CONFIG_${option}`);
    const out = `${work}/kernel`;
    await mkdir(`${out}/modules`, { recursive: true });
    await copyFile(`${work}/x/boot/vmlinuz-${release}`, `${out}/vmlinuz`);
    for (const name of GUEST_MODULES.filter((module) => MODULE_DIRS[module]))
      await copyFile(
        `${work}/x/lib/modules/${release}/kernel/${MODULE_DIRS[name]}/${name}.ko`,
        `${out}/modules/${name}.ko`,
      );
    report(`building shells_mmio for ${release}`);
    await buildMmioModule(`${work}/x`, headers, `${out}/modules/shells_mmio.ko`);
    const kernel: GuestKernel = {
      release,
      vmlinuz: `${dir}/vmlinuz`,
      modulesDir: `${dir}/modules`,
    };
    await writeFile(`${out}/kernel.json`, JSON.stringify(kernel, null, 2));
    await rename(out, dir).catch(async (error: NodeJS.ErrnoException) => {
      if (!existsSync(`${dir}/kernel.json`)) throw error; // another process won the race
    });
    report(`kernel ${release} ready`);
    return kernel;
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

/** The one `Depends:` of an `apt-cache depends` answer that matches. */
function dependsOf(answer: string, name: RegExp): string | undefined {
  return [...answer.matchAll(/Depends:\s+(\S+)/g)].map((m) => m[1]!).find((dep) => name.test(dep));
}

/**
 * Builds native/shells-mmio.c as a module against headers unpacked under `root` (the packages'
 * own paths are absolute; the arch Makefile is pointed at the unpacked common tree).
 */
async function buildMmioModule(root: string, headers: string, into: string): Promise<void> {
  const tree = `${root}/usr/src/${headers}`;
  const makefile = await readFile(`${tree}/Makefile`, "utf8");
  await writeFile(`${tree}/Makefile`, makefile.replaceAll("/usr/src/", `${root}/usr/src/`));
  const build = `${root}/shells-mmio`;
  await mkdir(build);
  await copyFile(`${NATIVE_DIR}shells-mmio.c`, `${build}/shells_mmio.c`);
  await writeFile(`${build}/Kbuild`, "obj-m := shells_mmio.o\n");
  await runChecked("make", ["-s", "-C", tree, `M=${build}`, "modules"]);
  await runChecked("strip", ["--strip-debug", `${build}/shells_mmio.ko`]);
  await copyFile(`${build}/shells_mmio.ko`, into);
}

/**
 * The initramfs: the static guest agent as `/shells-agent` (the guest's init) and the virtio
 * modules. Keyed by the agent's source and the kernel, so a changed agent gets a new one (and new
 * templates, which are keyed by it).
 */
export async function ensureInitrd(
  cacheDir: string,
  kernel: GuestKernel,
): Promise<{ path: string; key: string }> {
  const source = await readFile(`${NATIVE_DIR}shells-agent.c`);
  const header = await readFile(`${NATIVE_DIR}agent-protocol.h`);
  const mmio = await readFile(`${kernel.modulesDir}/shells_mmio.ko`);
  const key = createHash("sha256")
    .update(source)
    .update(header)
    .update(mmio)
    .update(kernel.release)
    .digest("hex")
    .slice(0, 12);
  const path = `${cacheDir}/initrd/${key}.cpio`;
  if (existsSync(path)) return { path, key };
  const work = `${cacheDir}/.initrd-${randomBytes(4).toString("hex")}`;
  await mkdir(`${work}/root/modules`, { recursive: true });
  try {
    await runChecked("gcc", [
      "-static",
      "-O2",
      "-Wall",
      "-o",
      `${work}/root/shells-agent`,
      `${NATIVE_DIR}shells-agent.c`,
    ]);
    for (const name of GUEST_MODULES)
      await copyFile(`${kernel.modulesDir}/${name}.ko`, `${work}/root/modules/${name}.ko`);
    await runChecked(
      "sh",
      ["-c", "find . | cpio -o -H newc --quiet > ../initrd.cpio"],
      `${work}/root`,
    );
    await mkdir(`${cacheDir}/initrd`, { recursive: true });
    await rename(`${work}/initrd.cpio`, path);
    return { path, key };
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

/**
 * The read-only base disk of an image: an ext4 filesystem made from the container image's rootfs
 * directory (`mkfs.ext4 -d`, no mount needed), then shrunk to (nearly) its minimum with
 * `resize2fs -M` and the file cut to it: a few MiB stay free. Each shell's disk is this size plus
 * its `diskMb`, and the guest grows the filesystem to fill it (`grow_root` in the agent), so what
 * a shell can write is its `diskMb` and not whatever room the base happened to have. No blocks
 * are reserved for root (every exec runs as root; the limit is the whole `diskMb`).
 */
export async function ensureBaseDisk(
  cacheDir: string,
  imageVersion: string,
  rootfs: string,
): Promise<string> {
  const path = `${cacheDir}/disks/${imageVersion}.min.img`;
  if (existsSync(path)) return path;
  await mkdir(`${cacheDir}/disks`, { recursive: true });
  const used = Number((await runChecked("du", ["-sb", rootfs])).split(/\s/)[0]);
  const sizeMb = Math.ceil((used * 1.3) / 2 ** 20) + 256;
  const work = `${path}.${randomBytes(4).toString("hex")}`;
  try {
    await runChecked("mkfs.ext4", [
      "-q",
      "-F",
      "-b",
      "4096",
      "-m",
      "0",
      "-L",
      "shell",
      "-d",
      rootfs,
      work,
      `${sizeMb}M`,
    ]);
    // resize2fs -M estimates its minimum with room to spare; a second pass takes most of it back.
    let blocks = Infinity;
    for (let pass = 0; pass < 4; pass++) {
      // e2fsck answers 1 when it tidied something up, which is fine here.
      await runChecked("sh", ["-c", 'e2fsck -f -y "$1" >/dev/null; [ $? -le 1 ]', "sh", work]);
      await runChecked("resize2fs", ["-M", work]);
      const now = blockCount(await runChecked("dumpe2fs", ["-h", work]));
      if (now >= blocks) break;
      blocks = now;
    }
    await truncate(work, blocks * 4096);
    await rename(work, path);
  } finally {
    await rm(work, { force: true });
  }
  return path;
}

/** The `Block count:` of a `dumpe2fs -h` answer. */
function blockCount(superblock: string): number {
  const count = Number(/^Block count:\s+(\d+)$/m.exec(superblock)?.[1]);
  if (!Number.isFinite(count) || count <= 0) throw new Error("dumpe2fs named no block count");
  return count;
}

let kvmProbe: Promise<boolean> | null = null;
/** Why KVM was given up in this process after a guest did not boot on it; null while it was not. */
let kvmRefusal: string | null = null;

/**
 * Whether QEMU can use KVM here: /dev/kvm must open read-write and a microvm must start on it (a
 * nested host can expose /dev/kvm yet fail on the first vCPU reset).
 */
export function kvmUsable(): Promise<boolean> {
  kvmProbe ??= (async () => {
    try {
      await access("/dev/kvm", 6);
    } catch {
      return false;
    }
    return new Promise<boolean>((resolve) => {
      const child = spawn(
        "qemu-system-x86_64",
        [
          "-M",
          "microvm",
          "-accel",
          "kvm",
          "-cpu",
          "host",
          "-nodefaults",
          "-display",
          "none",
          "-monitor",
          "none",
          "-serial",
          "none",
          "-m",
          "64",
          "-S",
        ],
        { stdio: "ignore" },
      );
      const timer = setTimeout(() => {
        child.kill("SIGKILL");
        resolve(true);
      }, 1500);
      child.on("exit", () => {
        clearTimeout(timer);
        resolve(false);
      });
      child.on("error", () => {
        clearTimeout(timer);
        resolve(false);
      });
    });
  })();
  return kvmProbe;
}

/**
 * Gives up KVM for the rest of this process: QEMU started on /dev/kvm (so `kvmUsable` said yes) but
 * a guest did not boot on it. A paravirtual KVM (PVM, `kvm_pvm`, as in some nested hosts) does
 * that: it runs only guest kernels built for it, and a stock kernel hangs early in its boot.
 * Templates are then made, and shells run, emulated.
 */
export function refuseKvm(reason: string): void {
  kvmProbe = Promise.resolve(false);
  kvmRefusal = reason;
}

/** Why KVM was given up (`refuseKvm`), or null. */
export function kvmRefused(): string | null {
  return kvmRefusal;
}
