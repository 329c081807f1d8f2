import { mkdir, readdir, stat } from "node:fs/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ContainerBackend } from "./container-backend.js";
import { createDisk } from "./internal/disk.js";
import { linkTo, makeLayer } from "./internal/layers.js";
import { readJson, uidBaseOf, writeJson, type ShellRecord } from "./internal/state.js";
import { bashSpec, hostReport, makeTestBackend, request, SMALL } from "./internal/test-support.js";

describe.runIf(hostReport.available)("forks stacked on shared layers", () => {
  let backend: ContainerBackend;
  let stateDir: string;
  let options: ConstructorParameters<typeof ContainerBackend>[0];
  let cleanup: () => Promise<void>;

  beforeAll(async () => {
    ({ backend, stateDir, options, cleanup } = await makeTestBackend());
  });
  afterAll(async () => {
    await cleanup();
  });

  const sh = async (shellId: string, script: string, on = backend) => {
    const result = await on.exec(shellId, request(["sh", "-c", script]));
    expect(result.exitCode, result.stderr).toBe(0);
    return result.stdout;
  };
  const forkOf = async (parent: string, children: string[]) => {
    const capture = await backend.captureFork(parent);
    try {
      for (const child of children)
        await backend.create(bashSpec(child, { from: { captureId: capture.captureId } }));
    } finally {
      await backend.releaseFork(capture.captureId);
    }
    return capture;
  };
  const layers = async () =>
    (await readdir(`${stateDir}/layers`).catch(() => [] as string[])).filter((name) =>
      name.startsWith("layer-"),
    );
  const SEED =
    "mkdir -p /workspace/d /opt/tool && echo one > /workspace/a && echo two > /workspace/d/b && echo t > /opt/tool/x && rm -f /etc/motd";
  const LOOK =
    'for f in /workspace/a /workspace/d/b /workspace/c /opt/tool/x /etc/motd; do if [ -e $f ]; then echo "$f=$(cat $f)"; else echo "$f-"; fi; done';

  it("forks a stopped parent with no copy: the parent and its children stack on one layer, each independent", async () => {
    await backend.create(bashSpec("lay-s"));
    await sh("lay-s", SEED);
    await backend.stop("lay-s");
    const before = await layers();
    const capture = await forkOf("lay-s", ["lay-s1", "lay-s2"]);
    expect(capture.method).toBe("layered");
    expect(capture.frozenMs).toBe(0);
    const made = (await layers()).filter((id) => !before.includes(id));
    expect(made).toHaveLength(1);
    // Forked again before it ran: the same layer is still all of the parent's state.
    expect((await forkOf("lay-s", ["lay-s3"])).method).toBe("layered");
    expect((await layers()).filter((id) => !before.includes(id))).toEqual(made);
    expect(await sh("lay-s3", "cat /workspace/a")).toBe("one\n");
    await backend.destroy("lay-s3");

    // Children change inherited files in place, delete them (whiteouts), replace a directory
    // (an opaque dir) and add files: none of it reaches a sibling or the parent.
    await sh(
      "lay-s1",
      "echo changed >> /workspace/a && rm /opt/tool/x && rm -r /workspace/d && mkdir /workspace/d && echo new > /workspace/c",
    );
    await sh("lay-s2", "echo mine > /workspace/d/b && echo motd > /etc/motd");
    await backend.start("lay-s");
    await sh("lay-s", "echo parent > /workspace/c");
    expect(await sh("lay-s1", LOOK)).toBe(
      "/workspace/a=one\nchanged\n/workspace/d/b-\n/workspace/c=new\n/opt/tool/x-\n/etc/motd-\n",
    );
    expect(await sh("lay-s2", LOOK)).toBe(
      "/workspace/a=one\n/workspace/d/b=mine\n/workspace/c-\n/opt/tool/x=t\n/etc/motd=motd\n",
    );
    expect(await sh("lay-s", LOOK)).toBe(
      "/workspace/a=one\n/workspace/d/b=two\n/workspace/c=parent\n/opt/tool/x=t\n/etc/motd-\n",
    );
    // Inherited files belong to each shell's own root, and so do the files they write.
    expect(await sh("lay-s2", "stat -c %u /workspace/a /workspace/d/b")).toBe("0\n0\n");

    // The layer is kept while anyone stacks on it and goes with the last of them.
    await backend.destroy("lay-s1");
    await backend.destroy("lay-s2");
    expect(await layers()).toContain(made[0]);
    await backend.destroy("lay-s");
    expect(await layers()).not.toContain(made[0]);
  }, 120_000);

  it("copies a running parent once for all its children, and the parent's later writes stay its own", async () => {
    await backend.create(bashSpec("lay-r"));
    await sh("lay-r", SEED);
    const before = await layers();
    const capture = await forkOf("lay-r", ["lay-r1", "lay-r2", "lay-r3"]);
    expect(capture.method).toBe("layered_copy_once");
    const made = (await layers()).filter((id) => !before.includes(id));
    expect(made).toHaveLength(1);
    // An in-place write of the parent's (no copy-up: the file is in its own upper) after the fork.
    await sh("lay-r", "echo later >> /workspace/a && rm /workspace/d/b");
    for (const child of ["lay-r1", "lay-r2", "lay-r3"])
      expect(await sh(child, "cat /workspace/a /workspace/d/b")).toBe("one\ntwo\n");
    await sh("lay-r1", "echo r1 > /workspace/a");
    expect(await sh("lay-r2", "cat /workspace/a")).toBe("one\n");
    expect(await sh("lay-r", "cat /workspace/a")).toBe("one\nlater\n");
    // The running parent does not stack on its own copy: the layer goes with its last child.
    for (const child of ["lay-r1", "lay-r2"]) await backend.destroy(child);
    expect(await layers()).toContain(made[0]);
    await backend.destroy("lay-r3");
    expect(await layers()).not.toContain(made[0]);
  }, 120_000);

  it("keeps layers in use across a restart of the control plane, and recover removes only unused ones", async () => {
    await backend.create(bashSpec("lay-c"));
    await sh("lay-c", "echo kept > /workspace/k");
    await forkOf("lay-c", ["lay-c1"]);
    const inUse = await layers();
    // A capture nobody took (a crash between capture and create) leaves a layer only it held.
    const orphan = await backend.captureFork("lay-c");
    expect((await layers()).length).toBe(inUse.length + 1);

    const next = new ContainerBackend(options);
    await next.recover();
    expect((await layers()).sort()).toEqual(inUse.sort());
    expect(await sh("lay-c1", "cat /workspace/k", next)).toBe("kept\n");
    await next.restart("lay-c1");
    expect(await sh("lay-c1", "cat /workspace/k", next)).toBe("kept\n");
    await next.releaseFork(orphan.captureId);
    await next.destroy("lay-c1");
    await next.destroy("lay-c");
    expect(
      (await layers()).filter((id) => inUse.includes(id)),
      "the fork's layer goes with its last shell",
    ).toEqual([]);
  }, 120_000);

  it("finishes a stopped parent's cut stack at recover and removes half-made layers", async () => {
    await backend.create(bashSpec("lay-x"));
    await sh("lay-x", "echo mine > /workspace/m");
    await backend.stop("lay-x");
    // A fork of the stopped shell cut after the layer was made and the intent recorded, before the
    // fresh disk went in; and a layer cut while it was being made.
    const shellDir = `${stateDir}/shells/lay-x`;
    const record = (await readJson<ShellRecord>(`${shellDir}/shell.json`))!;
    await createDisk(`${shellDir}/disk.stack.img`, SMALL.diskMb);
    const { ref } = await makeLayer(
      stateDir,
      uidBaseOf(record.uidSlot!),
      linkTo(`${shellDir}/disk.img`),
    );
    await writeJson(`${shellDir}/shell.json`, { ...record, intent: { kind: "stack", layer: ref } });
    await mkdir(`${stateDir}/layers/.layer-0123456789abcdef`);

    const next = new ContainerBackend(options);
    await next.recover();
    const after = (await readJson<ShellRecord>(`${shellDir}/shell.json`))!;
    expect(after.intent).toBeUndefined();
    expect(after.layers).toEqual([ref]);
    await expect(stat(`${shellDir}/disk.stack.img`)).rejects.toThrow();
    await expect(stat(`${stateDir}/layers/.layer-0123456789abcdef`)).rejects.toThrow();
    await next.start("lay-x");
    expect(
      await sh("lay-x", "cat /workspace/m; echo more >> /workspace/m; cat /workspace/m", next),
    ).toBe("mine\nmine\nmore\n");
    await next.destroy("lay-x");
    expect(await layers()).not.toContain(ref.id);
  }, 120_000);

  it("snapshots a child as its whole state and restores it, and wipe drops inherited layers (kept by the snapshot)", async () => {
    await backend.create(bashSpec("lay-p"));
    await sh("lay-p", SEED);
    const before = await layers();
    await forkOf("lay-p", ["lay-p1"]);
    const made = (await layers()).filter((id) => !before.includes(id));
    expect(made).toHaveLength(1);
    await sh("lay-p1", "echo snap >> /workspace/a && rm /workspace/d/b");
    await backend.snapshot("lay-p1", "one");
    await sh("lay-p1", "echo after > /workspace/a && echo x > /workspace/d/b && rm /opt/tool/x");
    await backend.restore("lay-p1", "one");
    expect(await sh("lay-p1", LOOK)).toBe(
      "/workspace/a=one\nsnap\n/workspace/d/b-\n/workspace/c-\n/opt/tool/x=t\n/etc/motd-\n",
    );

    await backend.wipeState("lay-p1");
    expect(await sh("lay-p1", "ls -A /workspace; test -e /opt/tool || echo no-tool")).toBe(
      "no-tool\n",
    );
    // The snapshot still stands on the inherited layer, even with the parent gone.
    await backend.destroy("lay-p");
    await backend.restore("lay-p1", "one");
    expect(await sh("lay-p1", "cat /workspace/a; stat -c %u /workspace/a")).toBe("one\nsnap\n0\n");
    // Only the snapshot stands on the layer now; it goes with the shell and its snapshots.
    await backend.wipeState("lay-p1");
    expect(await layers()).toContain(made[0]);
    await backend.destroy("lay-p1");
    expect(await layers()).not.toContain(made[0]);
  }, 120_000);

  it("reinstalls a child's system and keeps its /workspace, the inherited part included", async () => {
    await backend.create(bashSpec("lay-o"));
    await sh("lay-o", SEED);
    await forkOf("lay-o", ["lay-o1"]);
    await sh("lay-o1", "rm /workspace/d/b && echo own > /workspace/c");
    await backend.reinstallOs("lay-o1");
    // /workspace as the child saw it (inherited, deleted, its own); the rest of the system is the
    // image's again: the inherited /opt/tool is gone and the parent's deleted /etc/motd is back.
    expect(
      await sh(
        "lay-o1",
        "cat /workspace/a /workspace/c; test -e /workspace/d/b || echo b-gone; test -e /opt/tool || echo tool-gone; test -e /etc/motd && echo motd-back",
      ),
    ).toBe("one\nown\nb-gone\ntool-gone\nmotd-back\n");
    await backend.destroy("lay-o");
    await backend.destroy("lay-o1");
  }, 120_000);

  it("bounds a child's own writes by its disk limit, not what it inherits", async () => {
    // SMALL.diskMb is 64: the parent fills 40 MiB, each child may still write 40 MiB of its own.
    await backend.create(bashSpec("lay-l"));
    await sh("lay-l", "head -c 41943040 /dev/zero > /workspace/big");
    await backend.stop("lay-l");
    await forkOf("lay-l", ["lay-l1"]);
    expect(
      await sh(
        "lay-l1",
        "head -c 41943040 /dev/zero > /workspace/own && du -cm /workspace | tail -1",
      ),
    ).toMatch(/^8\d\ttotal\n$/);
    const full = await backend.exec(
      "lay-l1",
      request(["sh", "-c", "head -c 41943040 /dev/zero > /workspace/more"]),
    );
    expect(full.exitCode).not.toBe(0);
    expect(full.killReason).toBe("disk");
    await backend.destroy("lay-l1");
    await backend.destroy("lay-l");
  }, 120_000);

  it("stacks no deeper than the limit: a fork past it copies the parent's disk instead", async () => {
    await backend.create(bashSpec("lay-d"));
    await backend.stop("lay-d");
    let method = "";
    for (let depth = 0; depth <= 8; depth++) {
      await backend.start("lay-d");
      await sh("lay-d", `echo ${depth} >> /workspace/gen`);
      await backend.stop("lay-d");
      const capture = await forkOf("lay-d", depth === 8 ? ["lay-d1"] : []);
      method = capture.method;
      if (depth < 8) expect(method).toBe("layered");
    }
    expect(method).toMatch(/^(copy|reflink)$/);
    expect(await sh("lay-d1", "cat /workspace/gen | tr '\\n' ' '")).toBe("0 1 2 3 4 5 6 7 8 ");
    await backend.start("lay-d");
    expect(await sh("lay-d", "cat /workspace/gen | wc -l")).toBe("9\n");
    await backend.destroy("lay-d1");
    await backend.destroy("lay-d");
    expect(await layers()).toEqual([]);
  }, 180_000);
});
