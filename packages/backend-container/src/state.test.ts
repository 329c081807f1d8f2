import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ContainerBackend } from "./container-backend.js";
import { newestImage } from "./internal/images.js";
import { isAlive, runChecked } from "./internal/proc.js";
import type { HolderRecord, ShellRecord } from "./internal/state.js";
import {
  bashSpec,
  hostReport,
  installProbe,
  makeTestBackend,
  request,
  TEST_IMAGES_DIR,
} from "./internal/test-support.js";

describe.runIf(hostReport.available)("state of a container shell", () => {
  let backend: ContainerBackend;
  let stateDir: string;
  let cleanup: () => Promise<void>;

  beforeAll(async () => {
    ({ backend, stateDir, cleanup } = await makeTestBackend());
  });
  afterAll(() => cleanup());

  const create = (shellId: string, network: "sealed" | "localhost" = "sealed") =>
    backend.create(bashSpec(shellId, { network }));
  const sh = (shellId: string, script: string, on: ContainerBackend = backend) =>
    on.exec(shellId, request(["sh", "-c", script]));
  const fetchPong = (shellId: string, on: ContainerBackend = backend) =>
    on.exec(shellId, request(["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/8000 && cat <&3"]));

  it("keeps a background server from one exec answering later execs in localhost mode, until restart", async () => {
    await create("server", "localhost");
    await installProbe(backend, "server");
    // Started without redirecting its output: it keeps logging after the exec that started it ended.
    const started = await sh("server", "/workspace/probe serve 8000 & sleep 0.2; echo started");
    expect(started.stdout).toBe("started\n");
    for (let i = 0; i < 3; i++) expect((await fetchPong("server")).stdout).toBe("pong\n");
    await backend.restart("server");
    const after = await fetchPong("server");
    expect(after.exitCode).not.toBe(0);
    expect(after.stderr).toMatch(/Connection refused/);
  });

  it("snapshots keep deletions of image files, and restore works on a stopped shell", async () => {
    await create("snap");
    await sh(
      "snap",
      "rm /etc/hostname && mkdir -p /opt/app && echo one > /opt/app/v && echo w > /workspace/w",
    );
    await backend.snapshot("snap", "gone-hostname");
    await sh("snap", "echo back > /etc/hostname && echo two > /opt/app/v && rm -r /workspace/w");
    await backend.stop("snap");
    expect(await backend.restore("snap", "gone-hostname")).toMatchObject({ name: "gone-hostname" });
    expect((await backend.list()).find((s) => s.shellId === "snap")?.state).toBe("stopped");
    await backend.start("snap");
    expect((await sh("snap", "test -e /etc/hostname")).exitCode).not.toBe(0);
    expect((await sh("snap", "cat /opt/app/v /workspace/w")).stdout).toBe("one\nw\n");
    const [snapshot] = await backend.listSnapshots("snap");
    expect(snapshot?.sizeBytes).toBeGreaterThan(0);
  });

  it("wipe_state on a stopped shell leaves it stopped and empty", async () => {
    await create("wipe");
    await sh("wipe", "echo x > /workspace/x && echo wiped-marker >> /etc/motd");
    await backend.stop("wipe");
    expect(await backend.wipeState("wipe")).toMatchObject({ state: "stopped" });
    await backend.start("wipe");
    expect(
      (await sh("wipe", "ls -A /workspace; grep -c wiped-marker /etc/motd || true")).stdout,
    ).toBe("0\n");
  });

  it("lets root change any file of its own filesystem, and the change survives a restart", async () => {
    await create("root-writes");
    const result = await sh(
      "root-writes",
      "echo 'custom' > /etc/motd && mkdir /srv/data && chmod 700 /srv/data && touch /usr/local/bin/tool && echo done",
    );
    expect(result).toMatchObject({ exitCode: 0, stdout: "done\n" });
    await backend.restart("root-writes");
    expect((await sh("root-writes", "cat /etc/motd; stat -c %a /srv/data")).stdout).toBe(
      "custom\n700\n",
    );
  });

  it("ends running execs with the reason of what ended them: destroy, or an abort", async () => {
    await create("ended");
    const controller = new AbortController();
    const aborted = backend.exec("ended", request(["sleep", "30"]), { signal: controller.signal });
    setTimeout(() => controller.abort("wall_clock"), 200);
    expect(await aborted).toMatchObject({ killReason: "wall_clock", exitCode: 137 });
    const pending = backend.exec("ended", request(["sleep", "30"]));
    await new Promise((resolve) => setTimeout(resolve, 200));
    await backend.destroy("ended");
    expect(await pending).toMatchObject({ killReason: "deleted", exitCode: 137 });
  });

  it("is re-adopted by a new backend on the same state dir: running, exec works, background processes alive", async () => {
    await create("adopted", "localhost");
    await installProbe(backend, "adopted");
    await sh("adopted", "/workspace/probe serve 8000 > /dev/null 2>&1 &");
    await backend.close();
    const successor = new ContainerBackend({ stateDir, imagesDir: TEST_IMAGES_DIR });
    expect((await successor.list()).find((s) => s.shellId === "adopted")).toMatchObject({
      state: "running",
    });
    expect((await fetchPong("adopted", successor)).stdout).toBe("pong\n");
    await successor.destroy("adopted");
    expect((await successor.list()).map((s) => s.shellId)).not.toContain("adopted");
  });

  it("recognises shells left half-made or half-destroyed by a crashed control plane and reclaims them", async () => {
    for (const [shellId, phase] of [
      ["crash-create", "creating"],
      ["crash-destroy", "destroying"],
    ] as const) {
      await create(shellId);
      await sh(shellId, "sleep 300 > /dev/null 2>&1 &");
      // What a kill -9 between two steps leaves on disk: the record's phase says the operation
      // did not finish, while the shell's processes, cgroups and disk all still exist.
      const file = `${stateDir}/shells/${shellId}/shell.json`;
      const record = JSON.parse(await readFile(file, "utf8")) as ShellRecord;
      await writeFile(file, JSON.stringify({ ...record, phase }));
      const holder = JSON.parse(
        await readFile(`${stateDir}/shells/${shellId}/holder.json`, "utf8"),
      ) as HolderRecord;

      const restarted = new ContainerBackend({ stateDir, imagesDir: TEST_IMAGES_DIR });
      const listed = (await restarted.list()).find((s) => s.shellId === shellId);
      expect(listed, `${shellId} is listed for reconciliation`).toMatchObject({ state: "stopped" });
      await restarted.destroy(shellId);
      expect(await isAlive(holder.initPid, holder.initStart)).toBe(false);
      expect(await isAlive(holder.keeperPid, holder.keeperStart)).toBe(false);
      expect((await restarted.list()).map((s) => s.shellId)).not.toContain(shellId);
    }
  });
});

describe.runIf(hostReport.available)("reinstall_os", () => {
  let imagesDir: string;
  let backend: ContainerBackend;
  let cleanup: () => Promise<void>;

  beforeAll(async () => {
    // A private images dir with the cached bash image, so a "newer" image can be added to it.
    imagesDir = await mkdtemp(`${tmpdir()}/shells-images-`);
    const base = await newestImage(TEST_IMAGES_DIR, "bash");
    if (!base) throw new Error("the bash image is not built");
    await mkdir(`${imagesDir}/bash`, { recursive: true });
    await runChecked("cp", ["-a", `${TEST_IMAGES_DIR}/bash/${base.version}`, `${imagesDir}/bash/`]);
    ({ backend, cleanup } = await makeTestBackend({ imagesDir }));
  }, 300_000);
  afterAll(async () => {
    await cleanup();
    await rm(imagesDir, { recursive: true, force: true });
  });

  it("puts the newest image under the shell and keeps /workspace", async () => {
    const created = await backend.create(bashSpec("reinstall"));
    await backend.exec(
      "reinstall",
      request([
        "sh",
        "-c",
        "echo mine > /workspace/keep.txt; echo junk > /root/junk.txt; rm /etc/hostname",
      ]),
    );

    // Publish a newer version of the bash image (a copy with a marker file).
    const current = await newestImage(imagesDir, "bash");
    const newer = "bash-99990101t000000z";
    await runChecked("cp", [
      "-a",
      `${imagesDir}/bash/${current?.version}`,
      `${imagesDir}/bash/${newer}`,
    ]);
    await writeFile(`${imagesDir}/bash/${newer}/rootfs/etc/image-marker`, "newer\n");
    await writeFile(
      `${imagesDir}/bash/${newer}/image.json`,
      JSON.stringify({ ...current, version: newer, rootfs: "" }),
    );

    const info = await backend.reinstallOs("reinstall");
    expect(info).toMatchObject({ state: "running", imageVersion: newer });
    expect(created.imageVersion).not.toBe(newer);
    const after = await backend.exec(
      "reinstall",
      request([
        "sh",
        "-c",
        "cat /workspace/keep.txt /etc/image-marker /etc/hostname; test -e /root/junk.txt || echo no-junk",
      ]),
    );
    expect(after.stdout).toBe("mine\nnewer\nshell\nno-junk\n");
    expect((await backend.list()).find((s) => s.shellId === "reinstall")?.imageVersion).toBe(newer);
  });
});
