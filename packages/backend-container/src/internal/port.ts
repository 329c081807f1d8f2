import { spawn } from "node:child_process";
import { Duplex } from "node:stream";
import { ShellNotRunningError } from "./exec.js";

/** Thrown when nothing listens on the port inside the shell. */
export class PortRefusedError extends Error {
  override readonly name = "PortRefusedError";
}

/** How long the helper may take to join the shell's network and connect. */
const CONNECT_TIMEOUT_MS = 10_000;

/**
 * One TCP connection to `port` on a shell's loopback, through the helper's `connect` mode (it joins
 * only the shell's network namespace, dials 127.0.0.1 or ::1 and relays on its stdin/stdout). The
 * stream is the connection: writing sends to the server, reading gets its answer, destroying it
 * ends the helper.
 */
export async function connectInShell(
  target: { helper: string; initPid: number; initStart: string },
  port: number,
): Promise<Duplex> {
  const child = spawn(
    target.helper,
    [
      "connect",
      "--init-pid",
      String(target.initPid),
      "--init-start",
      target.initStart,
      "--port",
      String(port),
    ],
    { stdio: ["pipe", "pipe", "ignore", "pipe"], env: {} },
  );
  const { stdout, stdin } = child;
  const status = child.stdio[3] as NodeJS.ReadableStream | null;
  if (!stdout || !stdin || !status) throw new Error("the port relay has no pipes");
  // The two directions end on their own: the server may close after its answer while the caller
  // is still writing (what it writes then is dropped), or the caller may finish first.
  stdin.on("error", () => undefined);
  const stream = new Duplex({
    read: () => stdout.resume(),
    write: (chunk: Buffer, _encoding, done) => {
      if (stdin.destroyed || !stdin.writable) return done();
      stdin.write(chunk, () => done());
    },
    final: (done) => {
      stdin.end();
      done();
    },
    // The stream is the only handle: when it goes, so does the helper (and the connection).
    destroy: (error, done) => {
      child.kill("SIGKILL");
      done(error);
    },
  });
  // Wired before anything is awaited: a server that answers and closes at once can make the helper
  // exit before the status is read, and Node drains an exited child's unread output.
  stdout.on("data", (chunk: Buffer) => {
    if (!stream.push(chunk)) stdout.pause();
  });
  stdout.on("end", () => stream.push(null));
  const answer = await new Promise<string>((resolve, reject) => {
    let text = "";
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`connecting to port ${port} took over ${CONNECT_TIMEOUT_MS} ms`));
    }, CONNECT_TIMEOUT_MS);
    const settle = () => {
      clearTimeout(timer);
      resolve(text.trim());
    };
    status.setEncoding("utf8");
    status.on("data", (chunk: string) => {
      text += chunk;
      if (text.includes("\n")) settle();
    });
    status.on("end", settle);
    child.on("error", (error) => {
      clearTimeout(timer);
      reject(error);
    });
  }).catch((error: unknown) => {
    stream.destroy();
    throw error;
  });
  if (answer !== "ok") {
    stream.destroy();
    if (answer === "not_running") throw new ShellNotRunningError("the shell is not running");
    if (answer === "refused" || answer === "unreachable")
      throw new PortRefusedError(`nothing listens on port ${port} in the shell`);
    throw new Error(`the port relay failed to start${answer ? `: ${answer}` : ""}`);
  }
  return stream;
}
