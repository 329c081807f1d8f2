/**
 * Most characters of one output stream (an exec's stdout or stderr, a shell's log) shown to a
 * model. An exec may print up to 10 MiB; a model's context is the scarce resource, and the start
 * (what ran) and the end (how it failed) of an output are what it needs.
 */
export const OUTPUT_LIMIT_CHARS = 8000;

/** Share of the kept characters taken from the start of a cut output; the rest is its end. */
const HEAD_SHARE = 0.75;

const numberFormat = new Intl.NumberFormat("en-US");

/** The size of `text` encoded as UTF-8, in bytes. */
export function utf8Bytes(text: string): number {
  return Buffer.byteLength(text, "utf8");
}

/**
 * Cuts `text` to about `limitChars` characters when it is longer: keeps its start and its end and
 * puts a marker in between that says how many bytes were cut out of how many in total. Shorter text
 * is returned unchanged. Never splits a UTF-16 surrogate pair.
 *
 * ```ts
 * boundOutput("x".repeat(100_000)); // "xxx…\n[… 92,000 of 100,000 bytes cut …]\nxxx…"
 * ```
 */
export function boundOutput(text: string, limitChars = OUTPUT_LIMIT_CHARS): string {
  if (text.length <= limitChars) return text;
  let headEnd = Math.floor(limitChars * HEAD_SHARE);
  let tailStart = text.length - (limitChars - headEnd);
  if (isHighSurrogate(text.charCodeAt(headEnd - 1))) headEnd -= 1;
  if (isLowSurrogate(text.charCodeAt(tailStart))) tailStart += 1;
  const head = text.slice(0, headEnd);
  const tail = text.slice(tailStart);
  const totalBytes = utf8Bytes(text);
  const cutBytes = totalBytes - utf8Bytes(head) - utf8Bytes(tail);
  return `${head}\n[… ${numberFormat.format(cutBytes)} of ${numberFormat.format(totalBytes)} bytes cut …]\n${tail}`;
}

function isHighSurrogate(code: number): boolean {
  return code >= 0xd800 && code <= 0xdbff;
}

function isLowSurrogate(code: number): boolean {
  return code >= 0xdc00 && code <= 0xdfff;
}
