/*
 * The jail every shell's QEMU runs in. SECURITY BOUNDARY: a QEMU escape (a bug in a device model
 * the guest drives) lands here, so this file is kept short enough to review in one sitting.
 *
 * Walls, from the outside in:
 * - cgroup: a root `sh` joins the VM's host cgroup (memory, pids, cpu: `ShellCgroup` of the
 *   container backend) before anything else runs, so the limits hold from QEMU's first instruction
 *   and killing the cgroup reclaims every process of the VM.
 * - namespaces: `bwrap`, started as root without a user namespace, gives QEMU its own mount, pid,
 *   net, ipc, uts and cgroup namespaces. The net namespace has only a loopback device that is down:
 *   QEMU has no network. Its pid namespace holds QEMU alone (pid 1). Its mount namespace is a fresh
 *   tmpfs holding QEMU, `setpriv` and the shared libraries they load, QEMU's firmware and modules,
 *   a private /proc and a minimal /dev (plus /dev/kvm where KVM is used), the guest kernel, initrd
 *   and disk layers read-only, and read-write only the shell's own disk layer and the directory
 *   its sockets live in — each at its host path, so the backing chain written in the layers
 *   resolves. No other shell's files, no state directory, no host configuration.
 * - files: RLIMIT_FSIZE (`ulimit -f` in the same shell) caps every file QEMU writes at a bit over the disk's size, so
 *   even a subverted QEMU cannot grow the shell's layer past its disk and fill the host's.
 * - sockets: once QEMU has bound its agent and QMP sockets (before the guest runs at all), their
 *   directory is handed to root (`sealSockets`): QEMU keeps listening, but can no longer swap a
 *   socket for a link to another VM's, which the control plane would then connect to.
 * - user: `setpriv` drops to the VM's own unprivileged uid and gid (no supplementary groups but
 *   the group of /dev/kvm where KVM is used), clears every capability set and sets no_new_privs;
 *   no user namespace is made, so QEMU holds no capability in any namespace.
 * - seccomp: QEMU's own filter (`-sandbox on,…` in vm.ts): no obsolete calls, no privilege
 *   changes, no fork or exec, no resource-control calls.
 *
 * bwrap's outer process stays behind as QEMU's parent in the host's namespaces (it holds no
 * capability and only waits for its child); nothing of it is visible from inside.
 */
import { execFile } from "node:child_process";
import { existsSync, realpathSync } from "node:fs";
import { chmod, chown, lstat, stat } from "node:fs/promises";
import { dirname } from "node:path";
import { promisify } from "node:util";

const execFileP = promisify(execFile);

/** What one jailed QEMU may touch. */
export interface JailSpec {
  /** The VM's own unprivileged host uid; it is also its gid. */
  uid: number;
  /** `cgroup.procs` files of the VM's host cgroup, joined before anything runs. */
  cgroupProcs: string[];
  /** Host files bound read-only at their own paths (kernel, initrd, the frozen disk layers). */
  readOnly: string[];
  /** The shell's disk layer, bound read-write at its own path (owned by `uid`). */
  layer: string;
  /** The directory QEMU makes its sockets in, bound read-write (owned by `uid` until sealed). */
  socketDir: string;
  /** The largest file QEMU may write, bytes (its layer: the disk's size and qcow2's metadata). */
  maxFileBytes: number;
  /** Bind /dev/kvm and keep its group. */
  kvm: boolean;
}

/** Where Debian and other distributions keep QEMU's loadable modules (TCG itself is one). */
const QEMU_MODULE_DIRS = ["/usr/lib/x86_64-linux-gnu/qemu", "/usr/lib64/qemu", "/usr/lib/qemu"];
/** QEMU's firmware (the microvm machine loads qboot from here even with -kernel). */
const QEMU_DATA_DIRS = ["/usr/share/qemu", "/usr/share/seabios"];

/**
 * Joins the cgroups named by the first arguments, sets the file size limit that follows them (in
 * POSIX `ulimit`'s 512-byte blocks, soft and hard), then runs the rest: one shell, no process
 * between it and bwrap.
 */
const JOIN_CGROUPS =
  'n=$1; shift; while [ "$n" -gt 0 ]; do echo $$ > "$1" || exit 71; shift; n=$((n-1)); done; ulimit -f "$1" || exit 71; shift; exec "$@"';

/** What QEMU and setpriv need to run: files and directories to bind, links to make. */
interface Runtime {
  qemu: string;
  setpriv: string;
  /** Real files and directories, bound read-only at their own paths. */
  paths: string[];
  /** [path, target]: the names the loader asks for (`/lib64/ld-linux-x86-64.so.2`), as links. */
  links: [string, string][];
}

let runtime: Promise<Runtime> | null = null;

/**
 * The binaries, the libraries `ldd` names (each real file bound once, the names that lead to it
 * made links: a link costs bwrap nothing, a bind a mount), QEMU's modules and firmware.
 */
function runtimePaths(): Promise<Runtime> {
  runtime ??= (async () => {
    const which = async (name: string) =>
      realpathSync((await execFileP("sh", ["-c", `command -v ${name}`])).stdout.trim());
    const qemu = await which("qemu-system-x86_64");
    const setpriv = await which("setpriv");
    const paths = new Set<string>([qemu, setpriv]);
    const links = new Map<string, string>();
    for (const binary of [qemu, setpriv]) {
      const { stdout } = await execFileP("ldd", [binary]);
      for (const match of stdout.matchAll(/(\/\S+)/g)) {
        const path = match[1]!;
        const real = realpathSync(path);
        paths.add(real);
        if (real !== path) links.set(path, real);
      }
    }
    for (const dir of [...QEMU_MODULE_DIRS, ...QEMU_DATA_DIRS]) if (existsSync(dir)) paths.add(dir);
    return { qemu, setpriv, paths: [...paths], links: [...links] };
  })();
  runtime.catch(() => (runtime = null));
  return runtime;
}

/**
 * The command line that runs QEMU (`qemuArgs`, without the program) in the jail: file first.
 * Inherited file descriptors (the saved state QEMU restores from) pass through every step.
 */
export async function jailedQemu(spec: JailSpec, qemuArgs: string[]): Promise<string[]> {
  const { qemu, setpriv, paths, links } = await runtimePaths();
  const binds: [flag: string, path: string][] = [
    ...paths.map((path): [string, string] => ["--ro-bind", path]),
    ...spec.readOnly.map((path): [string, string] => ["--ro-bind", path]),
    ["--bind", spec.layer],
    ["--bind", spec.socketDir],
    ...(spec.kvm ? [["--dev-bind", "/dev/kvm"] as [string, string]] : []),
  ];
  // bwrap makes missing parents of a bind mode 0700 and root's: made here first, they are 0755,
  // which the unprivileged uid can traverse.
  const parents = new Set<string>();
  for (const path of [...binds.map(([, path]) => path), ...links.map(([path]) => path)])
    for (let dir = dirname(path); dir !== "/" && dir !== "/dev"; dir = dirname(dir))
      parents.add(dir);
  const groups = spec.kvm ? `--groups=${(await stat("/dev/kvm")).gid}` : "--clear-groups";
  return [
    "/bin/sh",
    "-c",
    JOIN_CGROUPS,
    "sh",
    String(spec.cgroupProcs.length),
    ...spec.cgroupProcs,
    String(Math.floor(spec.maxFileBytes / 512)),
    "bwrap",
    "--unshare-pid",
    "--unshare-net",
    "--unshare-ipc",
    "--unshare-uts",
    "--unshare-cgroup-try",
    "--as-pid-1",
    "--new-session",
    "--clearenv",
    "--proc",
    "/proc",
    "--dev",
    "/dev",
    ...[...parents].sort().flatMap((dir) => ["--dir", dir]),
    ...binds.flatMap(([flag, path]) => [flag, path, path]),
    ...links.flatMap(([path, target]) => ["--symlink", target, path]),
    "--",
    setpriv,
    `--reuid=${spec.uid}`,
    `--regid=${spec.uid}`,
    groups,
    "--inh-caps=-all",
    "--bounding-set=-all",
    "--no-new-privs",
    "--",
    qemu,
    ...qemuArgs,
  ];
}

/**
 * Hands the socket directory to root once QEMU has bound its sockets, and checks that each is a
 * socket of the VM's uid (not a link QEMU planted). QEMU keeps accepting on the sockets it holds.
 */
export async function sealSockets(spec: JailSpec, sockets: string[]): Promise<void> {
  await chown(spec.socketDir, 0, 0);
  await chmod(spec.socketDir, 0o700);
  for (const socket of sockets) {
    const info = await lstat(socket);
    if (!info.isSocket() || info.uid !== spec.uid)
      throw new Error(`${socket} is not the jailed QEMU's socket`);
  }
}
