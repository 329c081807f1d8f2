import { createCipheriv, createDecipheriv, createHash, randomBytes } from "node:crypto";
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";

/**
 * Sealed boxes: secrets the control plane must keep (a shell's secret environment, later binding
 * secrets and webhook signing keys) are stored only as AES-256-GCM ciphertext, authenticated, so a
 * copy of the store alone reveals nothing and a tampered value fails to open.
 *
 * Keys: 32 random bytes each, kept one per line (base64) in `<data dir>/sealing-key` (mode 0600,
 * created on first use), or given by `SHELLS_SEALING_KEY` as a comma-separated list. The first key
 * seals; every listed key opens. Each sealed value names its key by id (a hash prefix of the key),
 * so rotating means putting a new key first and keeping the old ones until nothing uses them.
 *
 * Format: `sb1.<key id>.<iv>.<tag>.<ciphertext>` (base64url parts).
 */
export class SealedBox {
  readonly #keys: Map<string, Buffer>;
  readonly #current: string;

  /** A box over `keys`; the first seals, all open. */
  constructor(keys: readonly Buffer[]) {
    if (keys.length === 0) throw new Error("a sealed box needs at least one key");
    for (const key of keys)
      if (key.length !== 32) throw new Error("sealing keys are 32 bytes (base64-encoded)");
    this.#keys = new Map(keys.map((key) => [keyId(key), key]));
    this.#current = keyId(keys[0] as Buffer);
  }

  /**
   * The box for a server: keys from `envKeys` (the value of `SHELLS_SEALING_KEY`) when given,
   * otherwise from `<dataDir>/sealing-key`, which is created with one fresh key when missing.
   */
  static open(dataDir: string, envKeys?: string): SealedBox {
    if (envKeys?.trim()) return new SealedBox(parseKeys(envKeys.split(",")));
    const path = join(dataDir, "sealing-key");
    if (!existsSync(path)) {
      mkdirSync(dataDir, { recursive: true, mode: 0o700 });
      writeFileSync(path, `${randomBytes(32).toString("base64")}\n`, { mode: 0o600, flag: "wx" });
    }
    chmodSync(path, 0o600);
    return new SealedBox(parseKeys(readFileSync(path, "utf8").split("\n")));
  }

  /** Adds a fresh key in front of the file's keys (it seals from now on; old ones still open). */
  static rotate(dataDir: string): void {
    const path = join(dataDir, "sealing-key");
    const old = existsSync(path) ? readFileSync(path, "utf8") : "";
    writeFileSync(path, `${randomBytes(32).toString("base64")}\n${old}`, { mode: 0o600 });
  }

  /** Id of the key that seals new values. */
  get currentKeyId(): string {
    return this.#current;
  }

  /** `plaintext` sealed under the current key. */
  seal(plaintext: string): string {
    const iv = randomBytes(12);
    const cipher = createCipheriv("aes-256-gcm", this.#keys.get(this.#current) as Buffer, iv);
    cipher.setAAD(Buffer.from(this.#current));
    const body = Buffer.concat([cipher.update(plaintext, "utf8"), cipher.final()]);
    return ["sb1", this.#current, iv, cipher.getAuthTag(), body]
      .map((part) => (typeof part === "string" ? part : part.toString("base64url")))
      .join(".");
  }

  /** The plaintext of a sealed value. Throws when its key is unknown or the value was altered. */
  unseal(sealed: string): string {
    const [version, id, iv, tag, body] = sealed.split(".");
    if (version !== "sb1" || !id || iv === undefined || tag === undefined || body === undefined)
      throw new Error("not a sealed value");
    const key = this.#keys.get(id);
    if (!key) throw new Error(`the key ${id} that sealed this value is not configured`);
    const decipher = createDecipheriv("aes-256-gcm", key, Buffer.from(iv, "base64url"));
    decipher.setAAD(Buffer.from(id));
    decipher.setAuthTag(Buffer.from(tag, "base64url"));
    return Buffer.concat([
      decipher.update(Buffer.from(body, "base64url")),
      decipher.final(),
    ]).toString("utf8");
  }
}

function parseKeys(lines: readonly string[]): Buffer[] {
  return lines
    .map((line) => line.trim())
    .filter(Boolean)
    .map((line) => Buffer.from(line, "base64"));
}

function keyId(key: Buffer): string {
  return createHash("sha256").update(key).digest("hex").slice(0, 12);
}
