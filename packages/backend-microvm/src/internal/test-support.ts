import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
// The source, not the package entry: the test global setup loads this without the `source` condition.
import { ensureImage } from "../../../backend-container/src/internal/images.js";
import type { SandboxExecRequest } from "@shells/sandbox";
import { MicrovmBackend } from "../microvm-backend.js";
import { checkMicrovmHost } from "./host-check.js";
import type { ImageSource } from "./template.js";

/** The container tests' shared image cache: the microvm disks are made from the same rootfs. */
export const TEST_IMAGES_DIR =
  process.env.SHELLS_TEST_IMAGE_CACHE ?? "/var/cache/shells-test/images";

/** Kernel, base disks and templates shared across runs (a template takes a cold boot to make). */
export const TEST_MICROVM_DIR =
  process.env.SHELLS_TEST_MICROVM_CACHE ?? "/var/cache/shells-test/microvm";

/** The memory size tests (and the conformance suite) use: the one template the tests restore from. */
export const TEST_MEMORY_MB = 128;

/** Images from the shared cache (built by the test global setup). */
export const testImages: ImageSource = (language, onProgress) =>
  ensureImage(TEST_IMAGES_DIR, language, onProgress ? { onProgress } : {});

/**
 * The microvm tests run wherever this host can run microvms (QEMU and the build tools installed,
 * the guest kernel fetched or known to apt, and root to build the base images they are made from);
 * `SHELLS_TEST_MICROVM=0` turns them off.
 */
export const missingTools: string[] = await (async () => {
  if (process.env.SHELLS_TEST_MICROVM === "0") return ["SHELLS_TEST_MICROVM=0 (turned off)"];
  const host = await checkMicrovmHost(TEST_MICROVM_DIR);
  const missing = host.checks.filter((c) => !c.ok).map((c) => `${c.name} (${c.detail})`);
  if (process.getuid?.() !== 0) missing.push("root (the base images are built with mmdebstrap)");
  return missing;
})();
if (missingTools.length) console.warn(`microvm tests skipped: missing ${missingTools.join(", ")}`);

/**
 * A backend whose shells live in a fresh temporary dir and whose kernel, disks and templates come
 * from the shared cache. `cleanup` destroys every shell it made.
 */
export async function makeTestBackend(): Promise<{
  backend: MicrovmBackend;
  cleanup: () => Promise<void>;
}> {
  const shellsRoot = await mkdtemp(`${tmpdir()}/shells-microvm-test-`);
  const backend = new MicrovmBackend({
    stateDir: shellsRoot,
    cacheDir: TEST_MICROVM_DIR,
    images: testImages,
    grownDiskMb: [TEST_GROWN_DISK_MB],
  });
  return {
    backend,
    cleanup: async () => {
      const survivor = new MicrovmBackend({
        stateDir: shellsRoot,
        cacheDir: TEST_MICROVM_DIR,
        images: testImages,
      });
      for (const shell of await survivor.list()) await survivor.destroy(shell.shellId);
      await rm(shellsRoot, { recursive: true, force: true });
    },
  };
}

/**
 * The disk size (`diskMb`) the tests' shells mostly get: the test backend restores them from the
 * template's state grown for it (the conformance suite's other sizes grow online).
 */
export const TEST_GROWN_DISK_MB = 64;

/** An exec request with the defaults tests use. */
export function request(
  command: string[],
  extra: Partial<SandboxExecRequest> = {},
): SandboxExecRequest {
  return {
    command,
    env: {},
    cwd: "/",
    stdin: undefined,
    timeoutMs: 20_000,
    maxOutputBytes: 1 << 20,
    ...extra,
  };
}

/** The pid of a running shell's QEMU, as its record holds it. */
export async function qemuPidOf(backend: MicrovmBackend, shellId: string): Promise<number> {
  const record = JSON.parse(
    await readFile(`${backend.shellDirOf(shellId)}/shell.json`, "utf8"),
  ) as {
    pid: number | null;
  };
  if (!record.pid) throw new Error(`shell ${shellId} has no QEMU running`);
  return record.pid;
}
