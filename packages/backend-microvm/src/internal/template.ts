import { existsSync } from "node:fs";
import { mkdir, mkdtemp, readFile, rename, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { randomBytes } from "node:crypto";
import type { Language } from "@shells/contract";
import {
  ensureBaseDisk,
  ensureInitrd,
  ensureKernel,
  kvmUsable,
  refuseKvm,
  runChecked,
  type BuildProgress,
} from "./host.js";
import { MACHINE_KEY, qmp, startVm, killAndWait, type VmConfig } from "./vm.js";

/**
 * A new qcow2 layer at `path` whose reads fall through to `backing` (of `backingFormat`): empty,
 * the size of the backing disk or `bytes`.
 */
export async function createLayer(
  path: string,
  backing: string,
  options: { backingFormat?: "qcow2" | "raw"; bytes?: number } = {},
): Promise<void> {
  const format = options.backingFormat ?? "qcow2";
  const size = options.bytes === undefined ? [] : [String(options.bytes)];
  await runChecked("qemu-img", [
    "create",
    "-q",
    "-f",
    "qcow2",
    "-b",
    backing,
    "-F",
    format,
    path,
    ...size,
  ]);
}

/** A saved VM state to restore shells from, with the disk chain it was saved on. */
export interface Template {
  dir: string;
  language: Language;
  imageVersion: string;
  memoryMb: number;
  accel: "kvm" | "tcg";
  vmlinuz: string;
  initrd: string;
  /** The template's own qcow2 layer (over the base disk); frozen once saved. Shell overlays back onto it. */
  disk: string;
  /**
   * The read-only base disk under `disk` (absent in templates made before it was recorded: read
   * from the template's layer then). Both are bound read-only into each shell's jail.
   */
  baseDisk?: string;
  /** The disk's size the template was saved with, bytes (absent in older templates). */
  diskBytes?: number;
  /** The saved VM state (QEMU migration stream). */
  state: string;
  /** Cold boot to the agent's first answer while the template was made, ms. */
  coldBootMs: number;
  /**
   * The same guest with its root filesystem already grown for the disk sizes most shells get: per
   * size a layer over `disk` and the state saved on it. A create of such a size restores that
   * state, so its guest grows nothing online (see `ensureGrownState`).
   */
  grown?: GrownState[];
}

/** A template's state with the root filesystem grown by `diskMb`. */
export interface GrownState {
  /** What the shell's disk adds to the template's: the shell's `diskMb`. */
  diskMb: number;
  /** Its frozen layer, over the template's `disk`, of the grown size. */
  disk: string;
  /** The state saved on it. */
  state: string;
}

/** Where an image's rootfs comes from: the container backend's recipes, one recipe, two formats. */
export type ImageSource = (
  language: Language,
  onProgress?: (event: BuildProgress) => void,
) => Promise<{ version: string; rootfs: string }>;

const inProcess = new Map<string, Promise<Template>>();

/** A cold boot's wait for the agent under emulation (a loaded 2-core host takes seconds). */
const TCG_COLD_BOOT_MS = 180_000;
/**
 * Under KVM a guest reaches its agent in about a second; one that has not in this long will not
 * (see `refuseKvm`), and the template is made emulated instead.
 */
const KVM_COLD_BOOT_MS = 20_000;

/**
 * The template of a language at a memory size: booted once until its agent answers, its page
 * cache warmed with a few execs, then paused and saved. Each create restores it with the shell's
 * own empty overlay over the template's frozen layer, so the guest's page cache and its disk agree.
 */
export function ensureTemplate(
  cacheDir: string,
  language: Language,
  memoryMb: number,
  images: ImageSource,
  onProgress: (event: BuildProgress) => void = () => undefined,
  grownDiskMb: number[] = [],
): Promise<Template> {
  const key = `${cacheDir}\0${language}\0${memoryMb}\0${grownDiskMb.join(",")}`;
  let task = inProcess.get(key);
  if (!task) {
    task = build(cacheDir, language, memoryMb, images, onProgress).then(async (template) => {
      // Templates made before their disk's size was recorded are never grown.
      if (template.diskBytes === undefined) return template;
      for (const diskMb of grownDiskMb)
        template = await ensureGrownState(template, diskMb, onProgress);
      return template;
    });
    inProcess.set(key, task);
    task.catch(() => inProcess.delete(key));
  }
  return task;
}

async function build(
  cacheDir: string,
  language: Language,
  memoryMb: number,
  images: ImageSource,
  onProgress: (event: BuildProgress) => void,
): Promise<Template> {
  const report = (message: string, percent?: number) =>
    onProgress({ phase: "microvm", message, ...(percent === undefined ? {} : { percent }) });
  const image = await images(language, onProgress);
  const kernel = await ensureKernel(cacheDir, report);
  const initrd = await ensureInitrd(cacheDir, kernel);
  const accel = (await kvmUsable()) ? "kvm" : "tcg";
  // "min": made on a base disk shrunk to its contents (see ensureBaseDisk).
  const dir = `${cacheDir}/templates/${image.version}-${memoryMb}m-${accel}-${initrd.key}-${MACHINE_KEY}-min`;
  try {
    const existing = JSON.parse(await readFile(`${dir}/template.json`, "utf8")) as Template;
    if (existsSync(existing.state)) return existing;
  } catch {
    // not made yet
  }
  report(`making the ${language} microvm base disk from ${image.version}`, 10);
  const base = await ensureBaseDisk(cacheDir, image.version, image.rootfs);
  const work = `${cacheDir}/templates/.build-${randomBytes(4).toString("hex")}`;
  await mkdir(work, { recursive: true, mode: 0o700 });
  const template: Template = {
    dir,
    language,
    imageVersion: image.version,
    memoryMb,
    accel,
    vmlinuz: kernel.vmlinuz,
    initrd: initrd.path,
    disk: `${dir}/disk.qcow2`,
    baseDisk: base,
    diskBytes: (await stat(base)).size,
    state: `${dir}/state.bin`,
    coldBootMs: 0,
  };
  let pid = 0;
  let booting = false;
  try {
    await createLayer(`${work}/disk.qcow2`, base, { backingFormat: "raw" });
    const config: VmConfig = {
      accel,
      vmlinuz: kernel.vmlinuz,
      initrd: initrd.path,
      memoryMb,
      disk: `${work}/disk.qcow2`,
      agentSocket: `${work}/agent.sock`,
      consoleLog: `${work}/console.log`,
      qmpSocket: `${work}/qmp.sock`,
      allowSpawn: true,
    };
    report(`booting the ${language} template microvm (${accel})`, 40);
    const started = Date.now();
    booting = true;
    const vm = await startVm(config, accel === "kvm" ? KVM_COLD_BOOT_MS : TCG_COLD_BOOT_MS);
    booting = false;
    pid = vm.pid;
    template.coldBootMs = Date.now() - started;
    // Warm the guest's page cache with what most execs touch, so restored shells start warm.
    for (const command of [
      ["sh", "-c", "true"],
      ["sh", "-c", "ls / >/dev/null; cat /etc/os-release >/dev/null"],
    ])
      await vm.agent.exec({
        command,
        env: {},
        cwd: "/",
        stdin: undefined,
        timeoutMs: 60_000,
        maxOutputBytes: 1 << 20,
      });
    vm.agent.close();
    report(`saving the ${language} template's state`, 80);
    await saveState(config.qmpSocket!, `${work}/state.bin`);
    await killAndWait(pid);
    await rm(`${work}/agent.sock`, { force: true });
    await rm(`${work}/qmp.sock`, { force: true });
    await writeFile(`${work}/template.json`, JSON.stringify(template, null, 2));
    await mkdir(`${cacheDir}/templates`, { recursive: true });
    await rm(dir, { recursive: true, force: true });
    await rename(work, dir);
    report(`the ${language} microvm template is ready (cold boot ${template.coldBootMs} ms)`, 100);
    return template;
  } catch (error) {
    if (pid) await killAndWait(pid);
    await rm(work, { recursive: true, force: true });
    if (!booting || accel !== "kvm") throw error;
    const reason = (error as Error).message;
    refuseKvm(reason);
    report(`the ${language} guest did not boot on KVM (${reason}): emulating it instead`, 40);
    return build(cacheDir, language, memoryMb, images, onProgress);
  }
}

/**
 * Adds to a template a second saved state whose root filesystem already fills a disk of the
 * template's size plus `diskMb`, made once: the template's state restored on a layer of that size,
 * the disk grown by its agent (the `LIMITS` a shell's create would send, with the limits left
 * open), saved again. Growing ext4 online costs a restored guest ~70-100 ms under emulation; a
 * shell of the usual disk size then pays nothing for it. Kept in a directory of its own, named in
 * `template.json` last, so two builders at once each leave a whole one.
 */
async function ensureGrownState(
  template: Template,
  diskMb: number,
  onProgress: (event: BuildProgress) => void,
): Promise<Template> {
  if (template.grown?.some((grown) => grown.diskMb === diskMb && existsSync(grown.state)))
    return template;
  onProgress({
    phase: "microvm",
    message: `growing the ${template.language} template's disk by ${diskMb} MiB`,
  });
  const work = `${template.dir}/grown-${diskMb}m-${randomBytes(4).toString("hex")}`;
  await mkdir(work, { mode: 0o700 });
  const grown: GrownState = { diskMb, disk: `${work}/disk.qcow2`, state: `${work}/state.bin` };
  const bytes = template.diskBytes! + diskMb * 1024 * 1024;
  // The sockets live apart: the template's path is too long for a unix socket's name.
  const sockets = await mkdtemp(`${tmpdir()}/shells-grow-`);
  let pid = 0;
  try {
    await createLayer(grown.disk, template.disk, { bytes });
    const qmpSocket = `${sockets}/qmp.sock`;
    const vm = await startVm(
      {
        accel: template.accel,
        vmlinuz: template.vmlinuz,
        initrd: template.initrd,
        memoryMb: template.memoryMb,
        disk: grown.disk,
        agentSocket: `${sockets}/agent.sock`,
        consoleLog: null,
        qmpSocket,
        incomingState: template.state,
        allowSpawn: true,
      },
      TCG_COLD_BOOT_MS,
    );
    pid = vm.pid;
    await qmp(qmpSocket, [
      { execute: "block_resize", arguments: { device: "root", size: bytes } },
    ]).then((monitor) => monitor.close());
    // Limits as open as the guest allows (a shell's own replace them), the template's loopback.
    await vm.agent.setLimits(
      {
        memoryBytes: Number.MAX_SAFE_INTEGER,
        pids: 4_194_304,
        diskBytes: bytes,
        diskFullBytes: 0,
        loopback: true,
        egress: 0,
      },
      60_000,
    );
    vm.agent.close();
    await saveState(qmpSocket, grown.state);
    await killAndWait(pid);
    // Read again: another process may have added a size meanwhile.
    const current = JSON.parse(await readFile(`${template.dir}/template.json`, "utf8")) as Template;
    const updated: Template = {
      ...template,
      grown: [...(current.grown ?? []).filter((other) => other.diskMb !== diskMb), grown],
    };
    await writeFile(`${template.dir}/template.json.tmp`, JSON.stringify(updated, null, 2));
    await rename(`${template.dir}/template.json.tmp`, `${template.dir}/template.json`);
    return updated;
  } catch (error) {
    if (pid) await killAndWait(pid);
    await rm(work, { recursive: true, force: true });
    throw error;
  } finally {
    await rm(sockets, { recursive: true, force: true });
  }
}

/**
 * Saves a running guest's state to `path` while it runs (QEMU pauses it for the last pass
 * itself): the state then says "running", and a QEMU restoring it starts the guest as soon as it
 * is loaded. A state saved after `stop` would restore paused.
 */
async function saveState(qmpSocket: string, path: string): Promise<void> {
  const monitor = await qmp(qmpSocket, [
    { execute: "migrate", arguments: { uri: `exec:cat > ${path}` } },
  ]);
  try {
    for (;;) {
      const status = (await monitor.call("query-migrate")) as { return?: { status?: string } };
      if (status.return?.status === "completed") break;
      if (status.return?.status === "failed" || status.return?.status === "cancelled")
        throw new Error("saving the template's VM state failed");
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    await monitor.call("quit").catch(() => undefined);
  } finally {
    monitor.close();
  }
}
