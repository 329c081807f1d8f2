import { hash, randomBytes } from "node:crypto";

const ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz";

/** A random lowercase id of `length` characters with a prefix: `newId("sh", 10)` → `sh-k3x9…`. */
export function newId(prefix: string, length = 12): string {
  const bytes = randomBytes(length);
  let out = "";
  for (const byte of bytes) out += ALPHABET[byte % 36];
  return `${prefix}-${out}`;
}

/** Hex SHA-256 (one-shot: a third of `createHash().update().digest()`'s cost on short inputs). */
export function sha256Hex(data: string | Buffer): string {
  return hash("sha256", data, "hex");
}

/** The current time as an ISO 8601 string with milliseconds. */
export function nowIso(): string {
  return new Date().toISOString();
}
