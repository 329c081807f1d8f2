import { mkdtemp, readFile, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import type { ResolvedResources } from "@shells/contract";
import type { SandboxBackend, SandboxExecRequest, SandboxSpec } from "@shells/sandbox";
import type { BackendCapabilities } from "@shells/sandbox/conformance";
import { ContainerBackend, type ContainerBackendOptions } from "../container-backend.js";
import { listShellCgroups, type CgroupHost, type ShellCgroup } from "./cgroups.js";
import { checkContainerHost } from "./host-check.js";
import { ensureImage } from "./images.js";
import { NATIVE_DIR } from "./native.js";
import { runChecked } from "./proc.js";

/**
 * Base images are slow to build (about a minute each), so tests share one images dir across runs:
 * `SHELLS_TEST_IMAGE_CACHE`, else /var/cache/shells-test/images. Everything else a test makes lives
 * in a fresh temporary state dir that `cleanup` destroys.
 */
export const TEST_IMAGES_DIR =
  process.env.SHELLS_TEST_IMAGE_CACHE ?? "/var/cache/shells-test/images";

/** Whether this host can run the container backend at all (tests are skipped otherwise, loudly). */
export const hostReport = await checkContainerHost();
if (!hostReport.available) console.warn(`container backend tests skipped: ${hostReport.reason}`);

/**
 * What the container backend claims in the conformance suite: every capability, and every
 * network mode. A shell claimed from the warm pool claims the same as one started on its own.
 */
export const CONTAINER_CAPABILITIES: BackendCapabilities = {
  posixShell: true,
  pidsLimit: true,
  memoryLimit: true,
  diskLimit: true,
  binaryStdin: true,
  files: true,
  spawn: true,
  pty: true,
  snapshots: true,
  reinstallOs: true,
  cpuUsage: true,
  networkModes: ["sealed", "localhost", "internet"],
  pause: true,
  fork: true,
};

/** Limits small enough for fast exhaustion tests. */
export const SMALL: ResolvedResources = { cpu: 1, memoryMb: 128, pids: 64, diskMb: 64 };

/** A sealed bash shell with the SMALL limits and no env, changed by `extra`. */
export function bashSpec(shellId: string, extra: Partial<SandboxSpec> = {}): SandboxSpec {
  return {
    shellId,
    language: "bash",
    runtime: "container",
    network: "sealed",
    resources: SMALL,
    env: {},
    ...extra,
  };
}

/**
 * A backend on a fresh state dir (a temporary one, or `options.stateDir`); `cleanup` destroys every
 * shell it made and removes the dir. Builds the bash image first when the cache has none (call it
 * from a beforeAll: hooks may take two minutes, a test only thirty seconds).
 */
export async function makeTestBackend(options: Partial<ContainerBackendOptions> = {}): Promise<{
  backend: ContainerBackend;
  stateDir: string;
  options: ContainerBackendOptions;
  cleanup: () => Promise<void>;
}> {
  const stateDir = options.stateDir ?? (await mkdtemp(`${tmpdir()}/shells-container-test-`));
  const backendOptions: ContainerBackendOptions = {
    imagesDir: TEST_IMAGES_DIR,
    ...options,
    stateDir,
  };
  const backend = new ContainerBackend(backendOptions);
  if (hostReport.available) await ensureImage(backendOptions.imagesDir ?? TEST_IMAGES_DIR, "bash");
  return {
    backend,
    stateDir,
    options: backendOptions,
    cleanup: async () => {
      const survivor = new ContainerBackend(backendOptions);
      // Pooled sandboxes no shell claimed go with it.
      await survivor.recover();
      for (const shell of await survivor.list()) await survivor.destroy(shell.shellId);
      await rm(stateDir, { recursive: true, force: true });
    },
  };
}

/** An exec request with the defaults tests use. */
export function request(
  command: string[],
  extra: Partial<SandboxExecRequest> = {},
): SandboxExecRequest {
  return {
    command,
    env: {},
    cwd: "/workspace",
    stdin: undefined,
    timeoutMs: 20_000,
    maxOutputBytes: 1 << 20,
    ...extra,
  };
}

let probe: Promise<string> | null = null;

/**
 * The test probe (native/test-probe.c), compiled static so it runs in any image, as base64 for
 * copying into a shell through an exec's stdin.
 */
export function probeBase64(): Promise<string> {
  probe ??= (async () => {
    const dir = await mkdtemp(`${tmpdir()}/shells-probe-`);
    try {
      await runChecked("gcc", [
        "-static",
        "-Os",
        "-o",
        `${dir}/probe`,
        `${NATIVE_DIR}test-probe.c`,
      ]);
      return (await readFile(`${dir}/probe`)).toString("base64");
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  })();
  return probe;
}

/** Copies the test probe to /workspace/probe in a running shell. */
export async function installProbe(backend: SandboxBackend, shellId: string): Promise<void> {
  const result = await backend.exec(
    shellId,
    request(["sh", "-c", "base64 -d > /workspace/probe && chmod 755 /workspace/probe"], {
      stdin: await probeBase64(),
    }),
  );
  if (result.exitCode !== 0) throw new Error(`installing the probe failed: ${result.stderr}`);
}

/** Everything on the host a shell could leave behind, as comparable text. */
export async function hostObjects(
  cgroups: CgroupHost,
  cgroupParent: string,
  stateDir: string,
  registryDir: string,
) {
  const processes: string[] = [];
  for (const entry of await readdir("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    const [cmdline, cgroup, status] = await Promise.all([
      readFile(`/proc/${entry}/cmdline`, "utf8").catch(() => ""),
      readFile(`/proc/${entry}/cgroup`, "utf8").catch(() => ""),
      readFile(`/proc/${entry}/status`, "utf8").catch(() => ""),
    ]);
    // Ours: anything in our cgroups, anything naming our state dir, any shell keeper/init/drainer
    // whose cgroup is ours, and zombies count (an unreaped process is a leftover too).
    if (cgroup.includes(`/${cgroupParent}/`) || cmdline.includes(stateDir)) {
      processes.push(
        `${entry} ${/Name:\t(.*)/.exec(status)?.[1]} ${/State:\t(.*)/.exec(status)?.[1]}`,
      );
    }
  }
  const loops: string[] = [];
  for (const entry of await readdir("/sys/block")) {
    const backing = await readFile(`/sys/block/${entry}/loop/backing_file`, "utf8").catch(() => "");
    if (backing.includes(stateDir)) loops.push(`${entry} ${backing.trim()}`);
  }
  const registry = await readdir(registryDir).catch(() => [] as string[]);
  const claimed: string[] = [];
  for (const slot of registry) {
    const owner = await readFile(`${registryDir}/${slot}/owner`, "utf8").catch(() => "");
    if (owner.includes(stateDir)) claimed.push(slot);
  }
  return {
    processes,
    cgroups: await listShellCgroups(cgroups, cgroupParent),
    // The host's whole mount table: a shell's mounts live only in its private namespaces.
    mounts: (await readFile("/proc/self/mountinfo", "utf8"))
      .split("\n")
      .map((line) => line.split(" ").slice(4, 5).join())
      .sort(),
    loops,
    uidSlots: claimed,
    shellDirs: await readdir(`${stateDir}/shells`).catch(() => [] as string[]),
  };
}

/**
 * The ready exec helpers (native/exec.c, `--wait-request`) waiting in a shell's cgroups: the
 * shell's cgroup tells them from those of other backends running beside the test.
 */
export async function readyHelperPids(shell: ShellCgroup): Promise<number[]> {
  const found: number[] = [];
  for (const pid of await shell.members()) {
    const cmdline = await readFile(`/proc/${pid}/cmdline`, "latin1").catch(() => "");
    if (cmdline.includes("exec\0--wait-request\0")) found.push(pid);
  }
  return found;
}
