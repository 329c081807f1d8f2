import { chown, mkdir, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { describe, expect, it } from "vitest";
import {
  claimJailUid,
  detectCgroups,
  JAIL_UID_BANDS,
  releaseJailUid,
  shellCgroupName,
  ShellCgroup,
} from "@shells/backend-container";
import type { SandboxSpec } from "@shells/sandbox";
import {
  makeTestBackend,
  missingTools,
  request,
  TEST_MEMORY_MB,
  testImages,
  TEST_MICROVM_DIR,
} from "./internal/test-support.js";
import { createLayer, ensureTemplate } from "./internal/template.js";
import { killAndWait, startVm, TCG_CACHE_MB, type VmConfig } from "./internal/vm.js";

/**
 * Measurements, opt-in (`SHELLS_BENCH_MICROVM=1` beside `SHELLS_TEST_MICROVM=1`): create → first
 * exec and the exec round trip through the backend, next to the raw baseline measured in the same
 * run — a bare QEMU restore of the same saved state to the agent's first answer — and the same
 * restore in QEMU's jail (bwrap, setpriv, a host cgroup), the two taking turns.
 */
const enabled = missingTools.length === 0 && process.env.SHELLS_BENCH_MICROVM === "1";
const RUNS = Number(process.env.SHELLS_BENCH_MICROVM_RUNS ?? 10);

function p50(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.ceil(sorted.length / 2) - 1]!;
}

const spec = (shellId: string): SandboxSpec => ({
  shellId,
  language: "bash",
  runtime: "microvm",
  network: "sealed",
  resources: { cpu: 1, memoryMb: TEST_MEMORY_MB, pids: 64, diskMb: 64 },
  env: {},
});

describe.skipIf(!enabled)("microvm measurements", () => {
  it("restore → first exec and exec round trip, beside a bare QEMU restore", async () => {
    const template = await ensureTemplate(TEST_MICROVM_DIR, "bash", TEST_MEMORY_MB, testImages);
    const bare: number[] = [];
    const jailed: number[] = [];
    // Restores whose guest never answered (the backend retries those; a bare restore does not).
    let unanswered = 0;
    const work = await mkdtemp(`${tmpdir()}/shells-microvm-bench-`);
    const cgroups = detectCgroups();
    if (typeof cgroups === "string") throw new Error(cgroups);
    const registry = `${work}/uids`;
    try {
      for (let i = 0; i < RUNS * 2; i++) {
        const jail = i % 2 === 1;
        const dir = `${work}/vm-${i}`;
        await mkdir(`${dir}/run`, { recursive: true });
        const disk = `${dir}/disk.qcow2`;
        await createLayer(disk, template.disk);
        const config: VmConfig = {
          accel: template.accel,
          vmlinuz: template.vmlinuz,
          initrd: template.initrd,
          memoryMb: template.memoryMb,
          disk,
          agentSocket: `${dir}/run/agent.sock`,
          qmpSocket: `${dir}/run/qmp.sock`,
          consoleLog: null,
          incomingState: template.state,
        };
        const cgroup = new ShellCgroup(cgroups, "shells-microvm", shellCgroupName(work, `${i}`));
        const uid = jail ? await claimJailUid(registry, JAIL_UID_BANDS.microvm, dir) : 0;
        if (jail) {
          await chown(disk, uid, uid);
          await chown(`${dir}/run`, uid, uid);
          await cgroup.create({
            cpu: 1,
            memoryMb: template.memoryMb + 192 + TCG_CACHE_MB,
            pids: 256,
            diskMb: 0,
          });
          config.jail = {
            spec: {
              uid,
              cgroupProcs: cgroup.procsFiles,
              readOnly: [template.vmlinuz, template.initrd, template.disk, template.baseDisk!],
              layer: disk,
              socketDir: `${dir}/run`,
              maxFileBytes: 2 * template.diskBytes!,
              kvm: template.accel === "kvm",
            },
            killAll: () => cgroup.killAll(),
          };
        }
        const started = performance.now();
        const vm = await startVm(config, 10_000).catch(() => null);
        if (vm) {
          (jail ? jailed : bare).push(performance.now() - started);
          vm.agent.close();
          await killAndWait(vm.pid);
        } else unanswered += 1;
        if (jail) {
          await cgroup.killAll();
          await cgroup.remove();
          await releaseJailUid(registry, uid, dir);
        }
      }
    } finally {
      await rm(work, { recursive: true, force: true });
    }

    const { backend, cleanup } = await makeTestBackend();
    const createToExec: number[] = [];
    const roundTrip: number[] = [];
    try {
      for (let i = 0; i < RUNS; i++) {
        const id = `bench-${process.pid.toString(36)}-${i}`;
        const started = performance.now();
        await backend.create(spec(id));
        const result = await backend.exec(id, request(["true"]));
        createToExec.push(performance.now() - started);
        expect(result.exitCode).toBe(0);
        if (i === 0)
          for (let j = 0; j < RUNS * 2; j++) {
            const t0 = performance.now();
            await backend.exec(id, request(["true"]));
            roundTrip.push(performance.now() - t0);
          }
        await backend.destroy(id);
      }
    } finally {
      await backend.close();
      await cleanup();
    }
    const line = (name: string, values: number[]) =>
      `${name}: p50 ${p50(values).toFixed(0)} ms, max ${Math.max(...values).toFixed(0)} ms (n=${values.length})`;
    console.log(
      [
        `microvm (${template.accel}), template cold boot ${template.coldBootMs} ms`,
        line("bare QEMU restore → agent answer", bare),
        line("jailed QEMU restore → agent answer", jailed),
        `restores that never answered: ${unanswered} of ${RUNS * 2}`,
        line("create → first exec", createToExec),
        line("exec round trip (true)", roundTrip),
      ].join("\n"),
    );
  }, 600_000);
});
