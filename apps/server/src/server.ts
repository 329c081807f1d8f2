#!/usr/bin/env node
import { closeSync, readdirSync, readFileSync, readlinkSync } from "node:fs";
import { loadConfig } from "./config.js";
import { runIssueKeyCommand } from "./iam/operator-keys.js";
import { startServer } from "./start-server.js";

/**
 * Closes the descriptors this process inherited and did not open (a supervisor's or a shell's
 * directory, a file, a socket): every child the server starts would inherit them, and a sandbox
 * helper started with a directory of the host open is one step from the host's files. Node's and
 * libuv's own descriptors are close-on-exec and are event polls, eventfds, pipes or `/dev/null`; at
 * start-up Node also marks inherited descriptors close-on-exec up to the first gap
 * (`uv_disable_stdio_inheritance`), so an inherited one is either not close-on-exec or names a file,
 * a directory or a socket. The IPC channel of a parent Node process (NODE_CHANNEL_FD) stays.
 */
function closeInheritedDescriptors(): void {
  const O_CLOEXEC = 0o2000000;
  const keep = Number(process.env.NODE_CHANNEL_FD ?? -1);
  let fds: number[];
  try {
    fds = readdirSync("/proc/self/fd").map(Number);
  } catch {
    return; // no /proc: nothing to tell inherited descriptors by
  }
  for (const fd of fds) {
    if (!(fd > 2) || fd === keep) continue;
    try {
      const flags = /^flags:\s*([0-7]+)/m.exec(readFileSync(`/proc/self/fdinfo/${fd}`, "utf8"));
      const target = readlinkSync(`/proc/self/fd/${fd}`);
      const inheritable = flags !== null && (parseInt(flags[1] as string, 8) & O_CLOEXEC) === 0;
      const notNodes =
        (target.startsWith("/") && target !== "/dev/null") || target.startsWith("socket:");
      if (inheritable || notNodes) closeSync(fd);
    } catch {
      // closed meanwhile (the directory listing's own descriptor)
    }
  }
}

/** How long past the shutdown grace the process may take to close before it exits anyway. */
const SHUTDOWN_MARGIN_SECONDS = 20;

// The process entry: drop inherited descriptors; `issue-key` runs the operator's command over the
// store and exits without listening; otherwise parse configuration once, listen, and close cleanly
// on SIGINT/SIGTERM.
closeInheritedDescriptors();
if (process.argv[2] === "issue-key") process.exit(await runIssueKeyCommand(process.argv.slice(3)));
try {
  const config = loadConfig(process.argv.slice(2));
  const server = await startServer(config);
  let closing = false;
  const shutdown = (signal: string) => {
    if (closing) return;
    closing = true;
    server.app.log.info(
      { signal, graceSeconds: config.shutdownGraceSeconds },
      "shutting down; sandboxes keep running and are re-adopted at next start",
    );
    // The last bound: whatever still holds the process this long after the grace is cut, as a
    // crash would cut it (the next start recovers from that too).
    setTimeout(
      () => {
        server.app.log.error("shutdown did not finish in time; exiting");
        process.exit(1);
      },
      (config.shutdownGraceSeconds + SHUTDOWN_MARGIN_SECONDS) * 1000,
    ).unref();
    server.close().then(
      () => process.exit(0),
      () => process.exit(1),
    );
  };
  process.on("SIGINT", () => shutdown("SIGINT"));
  process.on("SIGTERM", () => shutdown("SIGTERM"));
} catch (error) {
  console.error(`shells server: ${error instanceof Error ? error.message : String(error)}`);
  process.exit(1);
}
