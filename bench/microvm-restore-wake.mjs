#!/usr/bin/env node
// How often a restored microvm sleeps until it is woken (QMP stop + cont), for a kernel command
// line: makes TEMPLATES templates of the bash image with that command line (one cold boot each,
// state saved while running, as the backend saves them) and restores each RESTORES times without
// any wake-up, counting restores whose agent does not answer within ASLEEP_AFTER_MS.
//
//   node bench/microvm-restore-wake.mjs                          # the backend's command line
//   node bench/microvm-restore-wake.mjs "nohz=off highres=off"   # with these words added
//
// Needs the test caches (`SHELLS_TEST_MICROVM_CACHE`, default /var/cache/shells-test/microvm) to
// hold the bash 128 MiB template the backend's suite uses: its kernel, initramfs and base disk.
import { execFileSync, spawn } from "node:child_process";
import { closeSync, mkdtempSync, openSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { AgentClient } from "../packages/backend-microvm/dist/internal/agent-client.js";
import { killAndWait, qemuArgs, qmp } from "../packages/backend-microvm/dist/internal/vm.js";

const EXTRA = process.argv[2] ?? "";
const TEMPLATES = Number(process.env.TEMPLATES ?? 6);
const RESTORES = Number(process.env.RESTORES ?? 20);
const ASLEEP_AFTER_MS = Number(process.env.ASLEEP_AFTER_MS ?? 4000);
/** `KICK_AT_ONCE=1`: pause and resume every restored guest as soon as it runs, before waiting. */
const KICK_AT_ONCE = process.env.KICK_AT_ONCE === "1";
const cache = process.env.SHELLS_TEST_MICROVM_CACHE ?? "/var/cache/shells-test/microvm";
const templateDir = readdirSync(`${cache}/templates`).find((d) => /^bash-.*-128m-tcg-/.test(d));
if (!templateDir) throw new Error(`no bash 128 MiB template in ${cache}`);
const template = JSON.parse(
  readFileSync(`${cache}/templates/${templateDir}/template.json`, "utf8"),
);
const baseDisk = `${cache}/disks/${template.imageVersion}.img`;

/** QEMU started with `config`, its kernel command line extended by EXTRA. */
function startQemu(config, incoming) {
  const args = qemuArgs(config, incoming === undefined ? undefined : 3);
  const append = args.indexOf("-append") + 1;
  if (EXTRA) args[append] = `${args[append]} ${EXTRA}`;
  const fd = incoming === undefined ? undefined : openSync(incoming, "r");
  const child = spawn("qemu-system-x86_64", args, {
    stdio: ["ignore", "ignore", "ignore", ...(fd === undefined ? [] : [fd])],
  });
  if (fd !== undefined) closeSync(fd);
  return child;
}

/** Waits for QMP to say the restored guest runs, then sends `stop` + `cont`. */
async function kickWhenRunning(socket) {
  for (;;) {
    const monitor = await qmp(socket, [{ execute: "query-status" }]).catch(() => null);
    if (!monitor) {
      await new Promise((resolve) => setTimeout(resolve, 5));
      continue;
    }
    const status = monitor.results[0]?.return?.status;
    if (status === "running") {
      await monitor.call("stop");
      await monitor.call("cont");
      monitor.close();
      return;
    }
    monitor.close();
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

const work = mkdtempSync(join(tmpdir(), "shells-restore-wake-"));
const config = (name, disk) => ({
  accel: template.accel,
  vmlinuz: template.vmlinuz,
  initrd: template.initrd,
  memoryMb: template.memoryMb,
  disk,
  agentSocket: `${work}/${name}.agent`,
  qmpSocket: `${work}/${name}.qmp`,
  consoleLog: null,
  allowSpawn: true,
});
const qcow2 = (path, backing, format) =>
  execFileSync("qemu-img", ["create", "-q", "-f", "qcow2", "-b", backing, "-F", format, path]);

let asleep = 0;
let total = 0;
const answered = [];
try {
  for (let t = 0; t < TEMPLATES; t += 1) {
    const disk = `${work}/t${t}.qcow2`;
    qcow2(disk, baseDisk, "raw");
    const made = config(`t${t}`, disk);
    const vm = startQemu(made);
    const agent = await AgentClient.connect(made.agentSocket, 180_000);
    await agent.ready(180_000);
    for (const command of [
      ["sh", "-c", "true"],
      ["sh", "-c", "ls / >/dev/null"],
    ])
      await agent.exec({
        command,
        env: {},
        cwd: "/",
        stdin: undefined,
        timeoutMs: 60_000,
        maxOutputBytes: 1 << 20,
      });
    agent.close();
    const state = `${work}/t${t}.state`;
    const monitor = await qmp(made.qmpSocket, [
      { execute: "migrate", arguments: { uri: `exec:cat > ${state}` } },
    ]);
    for (;;) {
      const status = await monitor.call("query-migrate");
      if (status.return?.status === "completed") break;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    monitor.close();
    await killAndWait(vm.pid);
    let sleptHere = 0;
    for (let r = 0; r < RESTORES; r += 1) {
      const overlay = `${work}/t${t}-r${r}.qcow2`;
      qcow2(overlay, disk, "qcow2");
      const restored = config(`t${t}-r${r}`, overlay);
      const started = performance.now();
      const child = startQemu(restored, state);
      if (KICK_AT_ONCE) await kickWhenRunning(restored.qmpSocket);
      const ok = await AgentClient.connect(restored.agentSocket, ASLEEP_AFTER_MS)
        .then((a) => a.ready(ASLEEP_AFTER_MS).finally(() => a.close()))
        .then(
          () => true,
          () => false,
        );
      total += 1;
      if (ok) answered.push(performance.now() - started);
      else sleptHere += 1;
      await killAndWait(child.pid);
      rmSync(overlay, { force: true });
    }
    asleep += sleptHere;
    process.stdout.write(`template ${t}: ${sleptHere} of ${RESTORES} restores slept\n`);
  }
} finally {
  rmSync(work, { recursive: true, force: true });
}
answered.sort((a, b) => a - b);
const p50 = answered[Math.ceil(answered.length / 2) - 1] ?? NaN;
process.stdout.write(
  `command line +"${EXTRA}"${KICK_AT_ONCE ? ", kicked at once" : ""}: ${asleep} of ${total} restores slept (no answer within ${ASLEEP_AFTER_MS} ms); answered p50 ${p50.toFixed(0)} ms\n`,
);
