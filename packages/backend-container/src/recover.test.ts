import { readdir, rm, rmdir, writeFile } from "node:fs/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ContainerBackend, type ContainerBackendOptions } from "./container-backend.js";
import { detectCgroups, type CgroupHost } from "./internal/cgroups.js";
import { isAlive, sleep } from "./internal/proc.js";
import { readJson, writeJson, type HolderRecord, type ShellRecord } from "./internal/state.js";
import {
  bashSpec,
  hostObjects,
  hostReport,
  makeTestBackend,
  request,
} from "./internal/test-support.js";

// Each test leaves a shell as a crash of the control plane at some step would, then a new backend
// over the same state dir (the next process) recovers it.
describe.runIf(hostReport.available)("recovery of container shells after a crash", () => {
  const cgroupParent = `shells-recovertest-${process.pid}`;
  const registryDir = `/tmp/shells-recovertest-uid-slots-${process.pid}`;
  let backend: ContainerBackend;
  let options: ContainerBackendOptions;
  let stateDir: string;
  let cleanup: () => Promise<void>;
  let cgroups: CgroupHost;

  beforeAll(async () => {
    ({ backend, stateDir, options, cleanup } = await makeTestBackend({
      cgroupParent,
      uidRegistryDir: registryDir,
    }));
    const detected = detectCgroups();
    if (typeof detected === "string") throw new Error(detected);
    cgroups = detected;
  });
  afterAll(async () => {
    await cleanup();
    const roots =
      cgroups.version === 2 ? [cgroups.root] : [cgroups.memory, cgroups.pids, cgroups.cpu];
    for (const root of roots) await rmdir(`${root}/${cgroupParent}`).catch(() => undefined);
    await rm(registryDir, { recursive: true, force: true });
  });

  const create = (shellId: string) => backend.create(bashSpec(shellId));
  const dir = (shellId: string) => `${stateDir}/shells/${shellId}`;
  /** Changes a shell's record as the step a crash cut had left it. */
  const leaveRecord = async (shellId: string, change: (record: ShellRecord) => void) => {
    const record = (await readJson<ShellRecord>(`${dir(shellId)}/shell.json`))!;
    change(record);
    await writeJson(`${dir(shellId)}/shell.json`, record);
  };
  /** The backend of the next control-plane process, recovered. */
  const recovered = async () => {
    const next = new ContainerBackend(options);
    await next.recover();
    return next;
  };
  const census = () => hostObjects(cgroups, cgroupParent, stateDir, registryDir);

  it.each([
    ["create", "creating"],
    ["destroy", "destroying"],
  ] as const)(
    "reclaims every host object of a shell whose %s was cut while it ran",
    async (step, phase) => {
      const shellId = `cut-${step}`;
      await create(shellId);
      await leaveRecord(shellId, (record) => (record.phase = phase));
      expect((await census()).loops).toHaveLength(1);
      const next = await recovered();
      expect(await next.list()).toEqual([]);
      expect(await census()).toMatchObject({
        processes: [],
        cgroups: [],
        loops: [],
        uidSlots: [],
        shellDirs: [],
      });
    },
  );

  it("finishes a wipe cut after the shell stopped: the shell starts, on an empty disk", async () => {
    await create("cut-wipe");
    await backend.exec("cut-wipe", request(["sh", "-c", "echo old > /workspace/old"]));
    await backend.stop("cut-wipe");
    await leaveRecord("cut-wipe", (record) => (record.intent = { kind: "wipe" }));
    await writeFile(`${dir("cut-wipe")}/disk.wipe.img`, "the first bytes of a fresh disk");
    const next = await recovered();
    expect((await next.list()).find((s) => s.shellId === "cut-wipe")?.state).toBe("stopped");
    await next.start("cut-wipe");
    expect((await next.exec("cut-wipe", request(["ls", "-A", "/workspace"]))).stdout).toBe("");
    expect(await readdir(dir("cut-wipe"))).not.toContain("disk.wipe.img");
    expect((await readJson<ShellRecord>(`${dir("cut-wipe")}/shell.json`))?.intent).toBeUndefined();
    await next.destroy("cut-wipe");
  });

  it("thaws a shell a snapshot held still, and removes the archives no snapshot names", async () => {
    await create("cut-snap");
    await backend.exec("cut-snap", request(["sh", "-c", "echo kept > /workspace/kept"]));
    await backend.snapshot("cut-snap", "kept");
    // Frozen for a second snapshot, which the crash cut before its metadata was written.
    await backend.pause("cut-snap");
    await leaveRecord("cut-snap", (record) => (record.intent = { kind: "hold" }));
    const snapshots = `${dir("cut-snap")}/snapshots`;
    await writeFile(`${snapshots}/next.3.tar.tmp`, "half an archive");
    await writeFile(`${snapshots}/next.3.tar`, "an archive no snapshot names");
    const next = await recovered();
    expect((await next.list()).find((s) => s.shellId === "cut-snap")?.state).toBe("running");
    expect((await next.exec("cut-snap", request(["true"]))).exitCode).toBe(0);
    expect((await readdir(snapshots)).sort()).toEqual(["kept.1.tar", "kept.json"]);
    await next.exec("cut-snap", request(["rm", "/workspace/kept"]));
    await next.restore("cut-snap", "kept");
    expect((await next.exec("cut-snap", request(["cat", "/workspace/kept"]))).stdout).toBe(
      "kept\n",
    );
    await next.destroy("cut-snap");
  });

  it("releases the keeper, cgroups and loop device of a shell whose stop was cut after its init died", async () => {
    await create("cut-stop");
    const holder = (await readJson<HolderRecord>(`${dir("cut-stop")}/holder.json`))!;
    process.kill(holder.initPid, "SIGKILL");
    while (await isAlive(holder.initPid, holder.initStart)) await sleep(5);
    const next = await recovered();
    expect((await next.list()).find((s) => s.shellId === "cut-stop")?.state).toBe("stopped");
    expect(await census()).toMatchObject({ processes: [], cgroups: [], loops: [] });
    await next.start("cut-stop");
    expect((await next.exec("cut-stop", request(["true"]))).exitCode).toBe(0);
    await next.destroy("cut-stop");
  });
});
