import { spawn } from "node:child_process";
import { open } from "node:fs/promises";
import type { NetworkMode } from "@shells/contract";
import type { HolderRecord } from "./state.js";
import { readJson } from "./state.js";

/** Everything the keeper needs to raise one shell. */
export interface HolderLaunch {
  helper: string;
  shellDir: string;
  imageRootfs: string;
  disk: string;
  uidBase: number;
  /** Host uid of root in the files on the disk, when it differs from `uidBase` (a fork). */
  diskUidBase?: number;
  /** Shared read-only layers under the disk, top first: each image and the host uid of its root. */
  layers?: { disk: string; uidBase: number }[];
  network: NetworkMode;
  /** The egress proxy's socket and the shell-side port its forwarder listens on (any mode). */
  egress?: { socketPath: string; port: number };
  hostname: string;
  shmMb: number;
  cgroupProcs: string[];
  timeoutMs?: number;
}

/**
 * Starts a shell's keeper and waits until the shell's init is up. The keeper runs detached (own
 * session, stdio to `<shellDir>/holder.log`, not a child the control plane must keep): the shell
 * outlives the control plane and a restarted one re-adopts it from holder.json.
 */
export async function launchHolder(launch: HolderLaunch): Promise<HolderRecord> {
  const log = await open(`${launch.shellDir}/holder.log`, "a", 0o600);
  const args = [
    "start",
    "--shell-dir",
    launch.shellDir,
    "--image",
    launch.imageRootfs,
    "--disk",
    launch.disk,
    "--uid-base",
    String(launch.uidBase),
    ...(launch.diskUidBase !== undefined && launch.diskUidBase !== launch.uidBase
      ? ["--disk-uid-base", String(launch.diskUidBase)]
      : []),
    ...(launch.layers ?? []).flatMap((layer) => [
      "--layer",
      layer.disk,
      "--layer-uid-base",
      String(layer.uidBase),
    ]),
    "--network",
    launch.network,
    "--hostname",
    launch.hostname,
    ...(launch.egress
      ? ["--egress-socket", launch.egress.socketPath, "--egress-port", String(launch.egress.port)]
      : []),
    "--shm-mb",
    String(launch.shmMb),
    ...launch.cgroupProcs.flatMap((file) => ["--cgroup-procs", file]),
  ];
  try {
    const child = spawn(launch.helper, args, {
      detached: true,
      stdio: ["ignore", log.fd, log.fd, "pipe"],
      env: { PATH: "/usr/sbin:/usr/bin:/sbin:/bin" },
    });
    const ready = child.stdio[3] as NodeJS.ReadableStream | null;
    const reply = await new Promise<string>((resolve, reject) => {
      let text = "";
      const timer = setTimeout(() => {
        child.kill("SIGKILL");
        reject(new Error(`shell did not start within ${launch.timeoutMs ?? 30_000} ms`));
      }, launch.timeoutMs ?? 30_000);
      child.on("error", (error) => {
        clearTimeout(timer);
        reject(error);
      });
      ready?.setEncoding("utf8");
      ready?.on("data", (chunk: string) => {
        text += chunk;
        if (text.includes("\n")) {
          clearTimeout(timer);
          resolve(text.trim());
        }
      });
      ready?.on("end", () => {
        clearTimeout(timer);
        resolve(text.trim());
      });
    });
    child.unref();
    (ready as unknown as { destroy?: () => void } | null)?.destroy?.();
    if (reply !== "ok")
      throw new Error(reply.replace(/^error /, "") || "the shell's keeper exited without a word");
    const holder = await readJson<HolderRecord>(`${launch.shellDir}/holder.json`);
    if (!holder) throw new Error("the shell's keeper did not record itself");
    return holder;
  } finally {
    await log.close();
  }
}
