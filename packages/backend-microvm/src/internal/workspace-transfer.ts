import { open } from "node:fs/promises";
import type { AgentClient } from "./agent-client.js";

/**
 * Moving `/workspace` from one guest disk to the next (reinstall_os) through the guest agent, as a
 * tar stream spooled to a host file. The host never mounts or parses a guest's filesystem: what
 * the guest wrote is only ever read by the guest's own kernel.
 */

/** Environment of the transfer's commands (the shell's env plays no part). */
const ENV = { PATH: "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", LANG: "C" };
/** How long one command of the transfer may take. */
const STEP_TIMEOUT_MS = 10 * 60_000;
/** Bytes one exec carries to the guest (the agent holds them until the reader takes them). */
const CHUNK_BYTES = 4 << 20;
/** The FIFO the chunks pass through, on the guest's tmpfs. */
const FIFO = "/run/shells-workspace-import";

/**
 * Writes `/workspace` as a tar archive to `archive` on the host. The archive is written as it
 * streams (the agent stops reading tar's output while the file write is pending), so neither side
 * holds it in memory.
 */
export async function exportWorkspace(agent: AgentClient, archive: string): Promise<void> {
  const file = await open(archive, "w", 0o600);
  const stderr: Buffer[] = [];
  try {
    const tar = agent.spawn(
      { command: ["tar", "-C", "/workspace", "-cpf", "-", "."], env: ENV, cwd: "/" },
      async (stream, chunk) => {
        if (stream === "stderr") stderr.push(Buffer.from(chunk));
        else await file.write(chunk);
      },
    );
    tar.closeStdin();
    const result = await tar.exit;
    if (result.exitCode !== 0)
      throw new Error(
        `reading /workspace failed (exit ${result.exitCode}${result.killReason ? `, ${result.killReason}` : ""}): ${Buffer.concat(stderr).toString().trim().slice(-500)}`,
      );
  } finally {
    await file.close();
  }
}

/**
 * Unpacks the host's `archive` into `/workspace`. A spawned `tar` reads the archive from a FIFO
 * (held open by its shell, so the writers below closing it is not an end of file; `head -c`
 * ends the stream at the archive's size); each chunk is one exec writing into the FIFO, which ends
 * only once tar has taken it. So at most one chunk is in the guest at a time: the agent's stdin
 * buffers stay bounded however large the workspace is.
 */
export async function importWorkspace(agent: AgentClient, archive: string): Promise<void> {
  const file = await open(archive, "r");
  try {
    const size = (await file.stat()).size;
    const step = (command: string[], stdin?: Uint8Array) =>
      agent.exec({
        command,
        env: ENV,
        cwd: "/",
        stdin,
        timeoutMs: STEP_TIMEOUT_MS,
        maxOutputBytes: 64 * 1024,
      });
    const made = await step(["sh", "-c", 'rm -f "$1" && mkfifo -m 600 "$1"', "sh", FIFO]);
    if (made.exitCode !== 0) throw new Error(`mkfifo failed: ${made.stderr.trim()}`);
    const stderr: Buffer[] = [];
    const tar = agent.spawn(
      {
        command: [
          "sh",
          "-c",
          'exec 3<>"$1"; head -c "$2" <&3 | tar -C /workspace -xpf -',
          "sh",
          FIFO,
          String(size),
        ],
        env: ENV,
        cwd: "/",
      },
      (stream, chunk) => void (stream === "stderr" && stderr.push(Buffer.from(chunk))),
    );
    tar.closeStdin();
    // tar ending early (a broken archive, a full disk) must not leave the next chunk waiting.
    let tarEnded = false;
    const ended = tar.exit.then((result) => {
      tarEnded = true;
      return result;
    });
    const buffer = Buffer.alloc(CHUNK_BYTES);
    for (let offset = 0; offset < size && !tarEnded;) {
      const { bytesRead } = await file.read(buffer, 0, CHUNK_BYTES, offset);
      if (bytesRead === 0) break;
      const written = await Promise.race([
        step(["sh", "-c", 'cat > "$1"', "sh", FIFO], buffer.subarray(0, bytesRead)),
        ended.then(() => null),
      ]);
      if (written && written.exitCode !== 0)
        throw new Error(`writing to /workspace failed: ${written.stderr.trim()}`);
      offset += bytesRead;
    }
    const result = await ended;
    await step(["rm", "-f", FIFO]);
    if (result.exitCode !== 0)
      throw new Error(
        `unpacking /workspace failed (exit ${result.exitCode}${result.killReason ? `, ${result.killReason}` : ""}): ${Buffer.concat(stderr).toString().trim().slice(-500)}`,
      );
  } finally {
    await file.close();
  }
}
