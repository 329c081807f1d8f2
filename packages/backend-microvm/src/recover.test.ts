import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { SandboxSpec } from "@shells/sandbox";
import { claimJailUid, JAIL_UID_BANDS } from "@shells/backend-container";
import {
  makeTestBackend,
  missingTools,
  request,
  TEST_MEMORY_MB,
  TEST_MICROVM_DIR,
  testImages,
} from "./internal/test-support.js";
import { createLayer } from "./internal/template.js";
import { qmp } from "./internal/vm.js";
import { MicrovmBackend } from "./microvm-backend.js";

/** The registry every backend here claims its jail uids in (the default). */
const UID_REGISTRY = "/var/lib/shells/microvm-uids";

/**
 * What a crash of the control plane leaves in the middle of a step, settled by `recover` in a
 * new backend on the same state dir: each case is made on the host as the cut step leaves it.
 *
 * Slow part: one microvm restored from the bash template and one cold boot (seconds under
 * emulation).
 */
describe.skipIf(missingTools.length > 0)("recovering microvms after a crash", () => {
  let backend: MicrovmBackend;
  let cleanup: () => Promise<void>;
  let stateDir = "";
  const id = `mvr-${process.pid.toString(36)}`;
  const spec: SandboxSpec = {
    shellId: id,
    language: "bash",
    runtime: "microvm",
    network: "sealed",
    resources: { cpu: 1, memoryMb: TEST_MEMORY_MB, pids: 64, diskMb: 64 },
    env: {},
  };
  /** A backend as a restarted control plane makes it. */
  const restarted = () =>
    new MicrovmBackend({ stateDir, cacheDir: TEST_MICROVM_DIR, images: testImages });
  const dir = () => backend.shellDirOf(id);
  const record = () =>
    JSON.parse(readFileSync(`${dir()}/shell.json`, "utf8")) as Record<string, unknown>;

  beforeAll(async () => {
    ({ backend, cleanup } = await makeTestBackend());
    stateDir = backend.shellDirOf(id).replace(/\/shells\/[^/]+$/, "");
    await backend.create(spec);
    const wrote = await backend.exec(id, request(["sh", "-c", "echo kept > /workspace/mark"]));
    expect(wrote.exitCode).toBe(0);
  }, 120_000);
  afterAll(async () => {
    await backend?.close();
    await cleanup?.();
  }, 60_000);

  it("resumes a VM a cut snapshot left paused and removes the snapshot's leftovers", async () => {
    const monitor = await qmp(`${dir()}/run/qmp.sock`, [{ execute: "stop" }]);
    monitor.close();
    mkdirSync(`${dir()}/snapshots`, { recursive: true });
    writeFileSync(`${dir()}/snapshots/cut.qcow2.tmp`, "partial copy");
    writeFileSync(`${dir()}/snapshots/orphan.qcow2`, "renamed, metadata never written");
    writeFileSync(`${dir()}/disk.new.qcow2`, "a wipe's layer, never renamed");
    await backend.close();

    backend = restarted();
    await backend.recover();
    const status = await qmp(`${dir()}/run/qmp.sock`, [{ execute: "query-status" }]);
    status.close();
    expect(status.results[0]).toMatchObject({ return: { status: "running" } });
    const read = await backend.exec(id, request(["cat", "/workspace/mark"]));
    expect(read.stdout).toBe("kept\n");
    for (const leftover of ["snapshots/cut.qcow2.tmp", "snapshots/orphan.qcow2", "disk.new.qcow2"])
      expect(existsSync(`${dir()}/${leftover}`), leftover).toBe(false);
    expect(await backend.listSnapshots(id)).toEqual([]);
  }, 60_000);

  it("rolls a cut reinstall_os back to the old layer and template", async () => {
    await backend.stop(id);
    // reinstall_os cut after it set the old layer aside and made the new one.
    const cut = record();
    const template = cut["template"] as { disk: string; imageVersion: string };
    writeFileSync(
      `${dir()}/shell.json`,
      JSON.stringify({
        ...cut,
        reinstallFrom: template,
        template: { ...template, imageVersion: "newer" },
      }),
    );
    renameSync(`${dir()}/disk.qcow2`, `${dir()}/disk.previous.qcow2`);
    await createLayer(`${dir()}/disk.qcow2`, template.disk);
    writeFileSync(`${dir()}/workspace.tar`, "the spooled workspace");
    await backend.close();

    backend = restarted();
    await backend.recover();
    expect(record()["reinstallFrom"]).toBeUndefined();
    expect(record()["template"]).toEqual(template);
    expect(existsSync(`${dir()}/disk.previous.qcow2`)).toBe(false);
    expect(existsSync(`${dir()}/workspace.tar`)).toBe(false);
    await backend.start(id);
    const read = await backend.exec(id, request(["cat", "/workspace/mark"]));
    expect(read.stdout).toBe("kept\n");
  }, 240_000);

  it("reclaims a shell directory without a record, and the uid it claimed", async () => {
    const orphan = `${stateDir}/shells/${id}-orphan`;
    mkdirSync(orphan, { recursive: true });
    writeFileSync(`${orphan}/disk.qcow2`, "a create cut before its first save");
    const uid = await claimJailUid(UID_REGISTRY, JAIL_UID_BANDS.microvm, orphan);
    expect(readFileSync(`${UID_REGISTRY}/${uid}/owner`, "utf8")).toBe(orphan);

    await restarted().recover();
    expect(existsSync(orphan)).toBe(false);
    expect(existsSync(`${UID_REGISTRY}/${uid}`)).toBe(false);
    // The whole shell next to it is left as it was.
    expect((await backend.list()).map((s) => [s.shellId, s.state])).toEqual([[id, "running"]]);
  }, 60_000);
});
