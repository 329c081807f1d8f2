import type { SandboxExecOptions } from "@shells/sandbox";

const REDACTED = Buffer.from("[redacted]");

/**
 * Wraps an exec's output hook so every streamed chunk has the given secret values replaced by
 * `[redacted]` before anyone sees it: streamed output is stored (run frames) and relayed
 * (event streams), so it is masked at the source. A secret split across two chunks is caught by
 * holding back a chunk's tail while it could be the start of a secret, until the next chunk (or
 * `flush`) shows whether it is.
 */
export function redactingOutput(
  hooks: SandboxExecOptions,
  secrets: readonly string[],
): { hooks: SandboxExecOptions; flush: () => Promise<void> } {
  const onOutput = hooks.onOutput;
  const needles = [...new Set(secrets)]
    .map((s) => Buffer.from(s))
    .sort((a, b) => b.length - a.length);
  if (!onOutput || needles.length === 0) return { hooks, flush: async () => undefined };
  const holdBack = (needles[0] as Buffer).length - 1;
  const pending: Record<"stdout" | "stderr", Buffer> = {
    stdout: Buffer.alloc(0),
    stderr: Buffer.alloc(0),
  };
  const emit = async (stream: "stdout" | "stderr", final: boolean) => {
    const masked = mask(pending[stream], needles);
    const cut = final ? masked.length : masked.length - partialTail(masked, needles, holdBack);
    pending[stream] = masked.subarray(cut);
    if (cut > 0) await onOutput(stream, masked.subarray(0, cut));
  };
  return {
    hooks: {
      ...hooks,
      onOutput: async (stream, chunk) => {
        pending[stream] = Buffer.concat([pending[stream], chunk]);
        await emit(stream, false);
      },
    },
    flush: async () => {
      await emit("stdout", true);
      await emit("stderr", true);
    },
  };
}

/** How many trailing bytes of `bytes` (at most `max`) are the beginning of some needle. */
function partialTail(bytes: Buffer, needles: readonly Buffer[], max: number): number {
  for (let k = Math.min(max, bytes.length); k > 0; k--) {
    const tail = bytes.subarray(bytes.length - k);
    if (needles.some((n) => n.subarray(0, k).equals(tail))) return k;
  }
  return 0;
}

/**
 * `bytes` with every needle replaced. A replacement is never followed by bytes that could complete
 * a needle started before it, because needles are masked longest first over the whole buffer.
 */
function mask(bytes: Buffer, needles: readonly Buffer[]): Buffer {
  let out = bytes;
  for (const needle of needles) {
    let at = out.indexOf(needle);
    if (at < 0) continue;
    const parts: Buffer[] = [];
    let from = 0;
    while (at >= 0) {
      parts.push(out.subarray(from, at), REDACTED);
      from = at + needle.length;
      at = out.indexOf(needle, from);
    }
    parts.push(out.subarray(from));
    out = Buffer.concat(parts);
  }
  return out;
}
