import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { describe, expect, it } from "vitest";
import type { SandboxSpec } from "@shells/sandbox";
import { runChecked } from "./internal/host.js";
import {
  makeTestBackend,
  missingTools,
  request,
  TEST_MEMORY_MB,
  testImages,
  TEST_MICROVM_DIR,
} from "./internal/test-support.js";
import { ensureTemplate } from "./internal/template.js";
import { killAndWait, startVm } from "./internal/vm.js";

/**
 * Measurements, opt-in (`SHELLS_BENCH_MICROVM=1` beside `SHELLS_TEST_MICROVM=1`): create → first
 * exec and the exec round trip through the backend, next to the raw baseline measured in the same
 * run — a bare QEMU restore of the same saved state to the agent's first answer.
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
    // Restores whose guest never answered (the backend retries those; a bare restore does not).
    let unanswered = 0;
    const work = await mkdtemp(`${tmpdir()}/shells-microvm-bench-`);
    try {
      for (let i = 0; i < RUNS; i++) {
        const disk = `${work}/disk-${i}.qcow2`;
        await runChecked("qemu-img", [
          "create",
          "-q",
          "-f",
          "qcow2",
          "-b",
          template.disk,
          "-F",
          "qcow2",
          disk,
        ]);
        const started = performance.now();
        const vm = await startVm(
          {
            accel: template.accel,
            vmlinuz: template.vmlinuz,
            initrd: template.initrd,
            memoryMb: template.memoryMb,
            disk,
            agentSocket: `${work}/agent-${i}.sock`,
            consoleLog: null,
            incomingState: template.state,
          },
          10_000,
        ).catch(() => null);
        if (!vm) {
          unanswered += 1;
          continue;
        }
        bare.push(performance.now() - started);
        vm.agent.close();
        await killAndWait(vm.pid);
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
        `bare restores that never answered: ${unanswered} of ${RUNS}`,
        line("create → first exec", createToExec),
        line("exec round trip (true)", roundTrip),
      ].join("\n"),
    );
  }, 600_000);
});
