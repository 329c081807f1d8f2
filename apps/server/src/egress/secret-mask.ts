import { Transform, type TransformCallback } from "node:stream";

/** What a masked secret reads as. */
export const SECRET_MASK = "[redacted]";

/**
 * A stream that replaces every occurrence of any of `forms` with `[redacted]`, across chunk
 * boundaries: it holds back the last (longest form − 1) bytes of what it has seen until the next
 * chunk shows whether they start a match. Memory stays bounded by the chunk size plus that tail.
 */
export class SecretMask extends Transform {
  readonly #forms: Buffer[];
  readonly #keep: number;
  #carry = Buffer.alloc(0);
  /** Occurrences masked so far. */
  masked = 0;

  constructor(forms: readonly string[]) {
    super();
    // Longest first: where two forms match at one place, the longer one is masked whole.
    this.#forms = forms
      .filter((f) => f.length > 0)
      .map((f) => Buffer.from(f))
      .sort((a, b) => b.length - a.length);
    this.#keep = Math.max(0, ...this.#forms.map((f) => f.length - 1));
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, done: TransformCallback): void {
    const data = this.#carry.length > 0 ? Buffer.concat([this.#carry, chunk]) : chunk;
    const rest = this.#maskInto(data);
    const hold = Math.min(rest.length, this.#keep);
    if (rest.length > hold) this.push(rest.subarray(0, rest.length - hold));
    this.#carry = Buffer.from(rest.subarray(rest.length - hold));
    done();
  }

  override _flush(done: TransformCallback): void {
    if (this.#carry.length > 0) this.push(this.#carry);
    this.#carry = Buffer.alloc(0);
    done();
  }

  /** Pushes `data` with every whole match masked, up to its last match; returns what follows. */
  #maskInto(data: Buffer): Buffer {
    let from = 0;
    for (;;) {
      let at = -1;
      let length = 0;
      for (const form of this.#forms) {
        const found = data.indexOf(form, from);
        if (found >= 0 && (at < 0 || found < at)) {
          at = found;
          length = form.length;
        }
      }
      if (at < 0) return data.subarray(from);
      if (at > from) this.push(data.subarray(from, at));
      this.push(Buffer.from(SECRET_MASK));
      this.masked += 1;
      from = at + length;
    }
  }
}

/** `text` with every occurrence of any of `forms` replaced by `[redacted]`. */
export function maskText(text: string, forms: readonly string[]): string {
  let out = text;
  for (const form of forms) if (form) out = out.split(form).join(SECRET_MASK);
  return out;
}
