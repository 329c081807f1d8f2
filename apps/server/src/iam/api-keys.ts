import { randomBytes, timingSafeEqual } from "node:crypto";
import { newId, sha256Hex } from "../ids.js";

/**
 * API keys look like `shk_<key id>_<secret>`: the id locates the stored row without a scan, the
 * secret is 32 random bytes. Only the SHA-256 of the whole key is stored; a fast hash suffices
 * because the secret has 256 bits of entropy (there is nothing to brute-force).
 */
const KEY_PATTERN = /^shk_([0-9a-z]{12})_([A-Za-z0-9_-]{43})$/;

/** A freshly minted key: the token is shown once and never stored. */
export interface MintedApiKey {
  keyId: string;
  token: string;
  keyHash: string;
}

/** Mints a new API key. */
export function mintApiKey(): MintedApiKey {
  const keyId = newId("key");
  const token = `shk_${keyId.slice(4)}_${randomBytes(32).toString("base64url")}`;
  return { keyId, token, keyHash: sha256Hex(token) };
}

/** The key id a token claims, or null when it is not shaped like one of our keys. */
export function parseApiKey(token: string): { keyId: string } | null {
  const match = KEY_PATTERN.exec(token);
  return match ? { keyId: `key-${match[1]}` } : null;
}

/** Constant-time comparison of a presented token with a stored hash. */
export function apiKeyMatches(token: string, keyHash: string): boolean {
  const presented = Buffer.from(sha256Hex(token), "hex");
  const stored = Buffer.from(keyHash, "hex");
  return presented.length === stored.length && timingSafeEqual(presented, stored);
}
