import { RUN_OUTPUT_TAIL_BYTES, type RunOutput } from "@shells/contract";

type OutputStream = "stdout" | "stderr";

/**
 * The end of a run's output, bounded: the last `limitBytes` of stdout and of stderr and how many
 * bytes each stream carried in all. Fed with the chunks a run streams (already redacted at the
 * source), so it holds nothing a stream frame would not show; memory stays at two tails whatever
 * the run prints.
 */
export class RunOutputTail {
  readonly #tails: Record<OutputStream, Buffer> = {
    stdout: Buffer.alloc(0),
    stderr: Buffer.alloc(0),
  };
  readonly #bytes: Record<OutputStream, number> = { stdout: 0, stderr: 0 };

  constructor(private readonly limitBytes = RUN_OUTPUT_TAIL_BYTES) {}

  /** Adds a chunk of one stream; only its last `limitBytes` (with what came before) are kept. */
  push(stream: OutputStream, chunk: Uint8Array): void {
    this.#bytes[stream] += chunk.length;
    const joined = Buffer.concat([
      this.#tails[stream],
      chunk.length > this.limitBytes ? chunk.subarray(chunk.length - this.limitBytes) : chunk,
    ]);
    // A copy, so a cut tail does not pin the larger buffer it was cut from.
    this.#tails[stream] =
      joined.length > this.limitBytes
        ? Buffer.from(joined.subarray(joined.length - this.limitBytes))
        : joined;
  }

  /** The tails as text. */
  snapshot(): RunOutput {
    return {
      stdout: textOf(this.#tails.stdout, this.#bytes.stdout > this.#tails.stdout.length),
      stderr: textOf(this.#tails.stderr, this.#bytes.stderr > this.#tails.stderr.length),
      stdoutBytes: this.#bytes.stdout,
      stderrBytes: this.#bytes.stderr,
    };
  }
}

/**
 * A tail as UTF-8 text. The cut of a tail whose start was cut can fall inside a character: its
 * continuation bytes (at most three) at the start are dropped rather than shown as replacement
 * characters.
 */
function textOf(tail: Buffer, cut: boolean): string {
  let start = 0;
  while (cut && start < 3 && start < tail.length && ((tail[start] as number) & 0xc0) === 0x80)
    start += 1;
  return tail.subarray(start).toString("utf8");
}
