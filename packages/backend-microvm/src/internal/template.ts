import { existsSync } from "node:fs";
import { mkdir, readFile, rename, rm, stat, writeFile } from "node:fs/promises";
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
): Promise<Template> {
  const key = `${cacheDir}\0${language}\0${memoryMb}`;
  let task = inProcess.get(key);
  if (!task) {
    task = build(cacheDir, language, memoryMb, images, onProgress);
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
    await runChecked("qemu-img", [
      "create",
      "-q",
      "-f",
      "qcow2",
      "-b",
      base,
      "-F",
      "raw",
      `${work}/disk.qcow2`,
    ]);
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
    // Saved while running (QEMU pauses the guest for the last pass itself): the state then says
    // "running", and a QEMU restoring it starts the guest as soon as it is loaded. A state saved
    // after `stop` would restore paused.
    const monitor = await qmp(config.qmpSocket!, [
      { execute: "migrate", arguments: { uri: `exec:cat > ${work}/state.bin` } },
    ]);
    for (;;) {
      const status = (await monitor.call("query-migrate")) as { return?: { status?: string } };
      if (status.return?.status === "completed") break;
      if (status.return?.status === "failed" || status.return?.status === "cancelled")
        throw new Error("saving the template's VM state failed");
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    await monitor.call("quit").catch(() => undefined);
    monitor.close();
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
