/**
 * The first line an agent container sends on each connection to the control plane's egress
 * bridge: which shell it speaks for, and that shell's egress credential. Everything after the
 * newline is the shell's own traffic for its egress proxy.
 */
export const PREAMBLE_PREFIX = "SHELLS-EGRESS/1";
/** Longest preamble the bridge reads before it gives up on a connection. */
export const MAX_PREAMBLE_BYTES = 512;

/** The preamble line for a shell. */
export function encodePreamble(shellId: string, token: string): string {
  return `${PREAMBLE_PREFIX} ${shellId} ${token}\n`;
}

/** Reads a preamble line (without its newline); null when it is not one. */
export function decodePreamble(line: string): { shellId: string; token: string } | null {
  const parts = line.split(" ");
  if (parts.length !== 3 || parts[0] !== PREAMBLE_PREFIX) return null;
  const [, shellId = "", token = ""] = parts;
  if (!/^[a-z0-9-]{1,63}$/.test(shellId) || !/^[A-Za-z0-9_-]{16,128}$/.test(token)) return null;
  return { shellId, token };
}
