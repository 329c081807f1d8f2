import { execFileSync } from "node:child_process";
import { existsSync, realpathSync } from "node:fs";
import { basename, dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import type { WasmLanguage } from "./worker-process.js";

/** Where the worker and its packages appear inside the jail. */
const JAIL_ROOT = "/opt/shells";

/** The packages the worker imports, each bound read-only at `/opt/shells/node_modules/<name>`. */
const WORKER_PACKAGES = [
  "pyodide",
  "quickjs-emscripten-core",
  "@jitl/quickjs-ffi-types",
  "@jitl/quickjs-wasmfile-release-sync",
] as const;

/** The worker script's directory in this package. */
export const WORKER_DIR = join(dirname(fileURLToPath(import.meta.url)), "../../worker");

/**
 * Host directories of the worker's packages: the first `node_modules/<name>` up from this package,
 * as Node's own resolution would find them (their `exports` do not all expose `package.json`).
 */
function packageDirs(): Record<string, string> {
  const dirs: Record<string, string> = {};
  for (const name of WORKER_PACKAGES) {
    let dir = dirname(fileURLToPath(import.meta.url));
    for (;;) {
      const candidate = join(dir, "node_modules", name);
      if (existsSync(join(candidate, "package.json"))) {
        dirs[name] = realpathSync(candidate);
        break;
      }
      const parent = dirname(dir);
      if (parent === dir) throw new Error(`the package ${name} is not installed`);
      dir = parent;
    }
  }
  return dirs;
}

/** The host directory of the `pyodide` package the worker loads. */
export function pyodidePackageDir(): string {
  return packageDirs().pyodide as string;
}

/** The node binary and the shared libraries it loads, to bind read-only into the jail. */
function nodeRuntimePaths(): string[] {
  const node = realpathSync(process.execPath);
  const paths = new Set<string>([node]);
  try {
    const ldd = execFileSync("ldd", [node], { encoding: "utf8" });
    // Both the path the loader asks for (`/lib64/ld-linux-x86-64.so.2`) and the file it names.
    for (const match of ldd.matchAll(/(\/\S+)/g))
      if (match[1]) paths.add(match[1]).add(realpathSync(match[1]));
  } catch {
    // A static node: the binary alone is enough.
  }
  return [...paths];
}

/** What a jailed worker is started with. */
export interface JailSpec {
  language: WasmLanguage;
  /** Host directory bound read-write as `/workspace`. */
  workspace: string;
  /** Unprivileged host uid/gid the worker runs as: the shell's own, shared with no other shell. */
  uid: number;
  gid: number;
  /** `cgroup.procs` files the worker joins before it drops privileges. */
  cgroupProcs: string[];
  /**
   * The seccomp policy as a raw BPF program (`ensureSeccompProgram` of the container backend: the
   * same policy its sandboxes run under), loaded by bwrap just before it runs the worker.
   */
  seccompProgram: string;
  /**
   * A Pyodide memory snapshot for a Python worker to start from (see `PythonSnapshots`); its
   * directory is bound read-only into the jail.
   */
  pythonSnapshot?: string | null;
  /**
   * What the jail runs instead of the worker, for tests of the jail itself (a probe binary in the
   * workspace); the worker when absent.
   */
  program?: string[];
}

/**
 * Root-side preparation, run in a private mount namespace: a fresh tmpfs over STAGE_DIR (in this
 * namespace only) gets a bind of each host directory the jail needs, at `STAGE_DIR/<index>`. The
 * unprivileged worker can then reach them whatever the modes of their host ancestors (the
 * server's data directory stays 0700), and sees nothing else under those ancestors.
 */
const STAGE_BINDS =
  'set -e; s=$1; shift; mount -t tmpfs -o mode=0755,size=64k shells-wasm "$s"; i=0; while [ "$1" != "--" ]; do mkdir "$s/$i"; mount --bind "$1" "$s/$i"; i=$((i+1)); shift; done; shift; exec "$@"';

/** An empty host directory the staging tmpfs covers; `/run` is traversable on every host. */
export const STAGE_DIR = "/run/shells-wasm-stage";

/**
 * Opens the seccomp program (first argument) on fd 9, where bwrap's `--seccomp 9` reads it (the
 * file lies in the server's 0700 state dir: root opens it before the privileges are dropped);
 * joins the cgroups named by the next arguments; then runs the rest.
 */
const JOIN_CGROUPS =
  'exec 9<"$1" || exit 72; shift; n=$1; shift; while [ "$n" -gt 0 ]; do echo $$ > "$1" || exit 71; shift; n=$((n-1)); done; exec "$@"';

/**
 * Builds the command line of a jailed worker. A root `sh` joins the worker's cgroups (so the limits
 * hold from the first instruction) and stages the directories the jail binds (see STAGE_BINDS);
 * then `setpriv` drops to the shell's own unprivileged uid with no groups and no capabilities; then
 * `bwrap` unshares every namespace (no network: only a loopback device; its own pid, ipc, uts,
 * cgroup and mount namespaces), builds a root holding nothing but the node binary and its
 * libraries, the worker and its packages (read-only), a private `/tmp`, and the shell's own state
 * as `/workspace`, sets no_new_privs and loads the container sandboxes' seccomp policy (no
 * keyrings, bpf, perf events, userfaultfd, io_uring, mount API, nested user namespaces...) last,
 * just before it runs the worker. The host's files, other shells' state, the server's environment
 * and its sockets are not there.
 */
export class Jail {
  private readonly node = realpathSync(process.execPath);
  private readonly runtimePaths = nodeRuntimePaths();
  private readonly packages = packageDirs();

  command(spec: JailSpec): string[] {
    const staged: string[] = [];
    const stage = (hostPath: string) => {
      staged.push(hostPath);
      return `${STAGE_DIR}/${staged.length - 1}`;
    };
    const binds: string[] = [];
    for (const path of this.runtimePaths) binds.push("--ro-bind", path, path);
    for (const [name, dir] of Object.entries(this.packages))
      binds.push("--ro-bind", stage(dir), `${JAIL_ROOT}/node_modules/${name}`);
    binds.push("--ro-bind", stage(WORKER_DIR), `${JAIL_ROOT}/worker`);
    const snapshot = spec.pythonSnapshot
      ? [`${JAIL_ROOT}/snapshots/${basename(spec.pythonSnapshot)}`]
      : [];
    if (spec.pythonSnapshot)
      binds.push("--ro-bind", stage(dirname(spec.pythonSnapshot)), `${JAIL_ROOT}/snapshots`);
    binds.push("--bind", stage(spec.workspace), "/workspace");
    return [
      "/bin/sh",
      "-c",
      JOIN_CGROUPS,
      "sh",
      spec.seccompProgram,
      String(spec.cgroupProcs.length),
      ...spec.cgroupProcs,
      "unshare",
      "--mount",
      "--propagation",
      "private",
      "/bin/sh",
      "-c",
      STAGE_BINDS,
      "sh",
      STAGE_DIR,
      ...staged,
      "--",
      "setpriv",
      `--reuid=${spec.uid}`,
      `--regid=${spec.gid}`,
      "--clear-groups",
      "--inh-caps=-all",
      "--",
      "bwrap",
      "--unshare-all",
      "--die-with-parent",
      "--new-session",
      "--clearenv",
      "--seccomp",
      "9",
      "--setenv",
      "PATH",
      "/usr/bin",
      ...binds,
      "--proc",
      "/proc",
      "--dev",
      "/dev",
      "--tmpfs",
      "/tmp",
      "--chdir",
      "/workspace",
      ...(spec.program ?? [
        this.node,
        // The worker collects once after loading Pyodide from a snapshot, so the image's ~30 MB
        // are freed at once rather than whenever V8 next feels memory pressure.
        "--expose-gc",
        `${JAIL_ROOT}/worker/interpreter-worker.mjs`,
        spec.language,
        `${JAIL_ROOT}/node_modules`,
        ...snapshot,
      ]),
    ];
  }
}

/** What this host lacks to jail workers, or null when it has everything. */
export function missingForJail(): string | null {
  if (typeof process.getuid === "function" && process.getuid() !== 0)
    return "the wasm backend runs as root to place each worker in a cgroup and drop it to an unprivileged uid";
  for (const tool of ["/usr/bin/bwrap", "/usr/bin/setpriv", "/usr/bin/unshare"])
    if (!existsSync(tool)) return `${tool} is missing (apt-get install bubblewrap util-linux)`;
  if (!existsSync(join(WORKER_DIR, "interpreter-worker.mjs")))
    return "the interpreter worker script is missing";
  return null;
}
