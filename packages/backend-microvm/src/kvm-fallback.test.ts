import { existsSync } from "node:fs";
import { chmod, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { onPath } from "@shells/backend-container";

/**
 * A host whose /dev/kvm starts QEMU yet boots no guest: a paravirtual KVM (`kvm_pvm`) runs only
 * guest kernels built for it. With `-cpu host` QEMU 7.2 stops at once there (it cannot set
 * IA32_ARCH_CAPABILITIES), which the backend's probe sees; where it can (or with that MSR left out,
 * as the QEMU on PATH here does), QEMU runs and the stock guest kernel hangs early in its boot,
 * which the probe cannot see. The template must then be made emulated, not wait on KVM for ever.
 *
 * Runs only on such a host (/sys/module/kvm_pvm), where the guest tests run.
 */
const pvmHost =
  process.env.SHELLS_TEST_MICROVM !== "0" &&
  existsSync("/dev/kvm") &&
  existsSync("/sys/module/kvm_pvm") &&
  process.getuid?.() === 0;

describe.runIf(pvmHost)("a microvm host whose KVM boots no stock guest", () => {
  let wrapperDir: string;
  const path = process.env.PATH;

  beforeAll(async () => {
    const qemu = await onPath("qemu-system-x86_64");
    if (!qemu) throw new Error("qemu-system-x86_64 is not installed");
    wrapperDir = await mkdtemp(`${tmpdir()}/shells-kvm-fallback-`);
    // QEMU as on a PVM host where it starts: `-cpu host` without the MSR it cannot set here.
    await writeFile(
      `${wrapperDir}/qemu-system-x86_64`,
      [
        "#!/bin/sh",
        'for a; do shift; [ "$a" = host ] && a=host,-arch-capabilities; set -- "$@" "$a"; done',
        `exec ${qemu} "$@"`,
        "",
      ].join("\n"),
    );
    await chmod(`${wrapperDir}/qemu-system-x86_64`, 0o755);
    // Before the backend's modules load: its KVM probe runs once per process.
    process.env.PATH = `${wrapperDir}:${path}`;
  });
  afterAll(async () => {
    process.env.PATH = path;
    await rm(wrapperDir, { recursive: true, force: true });
  });

  it("makes the template emulated after the guest does not boot on KVM, and says why", async () => {
    const support = await import("./internal/test-support.js");
    const { checkMicrovmHost } = await import("./internal/host-check.js");
    const { MicrovmBackend } = await import("./microvm-backend.js");
    expect(support.missingTools).toEqual([]);
    expect((await checkMicrovmHost(support.TEST_MICROVM_DIR)).accel).toBe("kvm");

    const progress: string[] = [];
    const stateDir = await mkdtemp(`${tmpdir()}/shells-kvm-fallback-state-`);
    const backend = new MicrovmBackend({
      stateDir,
      cacheDir: support.TEST_MICROVM_DIR,
      images: support.testImages,
      onProgress: (event) => progress.push(event.message),
    });
    try {
      const template = await backend.prepare("bash", support.TEST_MEMORY_MB);
      expect(template.accel).toBe("tcg");
      expect(progress.some((line) => /did not boot on KVM/.test(line))).toBe(true);

      const host = await checkMicrovmHost(support.TEST_MICROVM_DIR);
      expect(host.reason).toBe("microvm (emulated)");
      expect(host.checks.find((check) => check.name === "accelerator")?.detail).toMatch(
        /^tcg: a guest did not boot on \/dev\/kvm/,
      );
    } finally {
      await backend.close();
      await rm(stateDir, { recursive: true, force: true });
    }
  }, 90_000);
});
