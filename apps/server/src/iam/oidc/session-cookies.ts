import {
  createCipheriv,
  createDecipheriv,
  createHash,
  hkdfSync,
  randomBytes,
  timingSafeEqual,
} from "node:crypto";

/** The console session cookie. Its value is a session id from `iam/tokens.ts`; the store keeps only its SHA-256. */
export const SESSION_COOKIE = "shells_session";
/** Binds a login in flight to the browser that started it (login CSRF); lives 10 minutes. */
export const LOGIN_COOKIE = "shells_login";

/** A fresh 256-bit random secret, base64url (cookie-safe). */
export function randomSecret(): string {
  return randomBytes(32).toString("base64url");
}

/** The value of cookie `name` in a `Cookie` header (the first, if the browser sent several). */
export function readCookie(header: string | undefined, name: string): string | undefined {
  if (!header) return undefined;
  for (const part of header.split(";")) {
    const eq = part.indexOf("=");
    if (eq < 0 || part.slice(0, eq).trim() !== name) continue;
    const value = part.slice(eq + 1).trim();
    return /^[A-Za-z0-9_-]{1,128}$/.test(value) ? value : undefined;
  }
  return undefined;
}

/** What a `Set-Cookie` carries besides name and value. */
export interface CookieOptions {
  path: string;
  /** 0 deletes the cookie. */
  maxAgeSeconds: number;
  /** Set when the public URL is https, so the cookie never travels in clear. */
  secure: boolean;
}

/**
 * A `Set-Cookie` value: always HttpOnly (no script reads it) and SameSite=Lax (not sent on
 * cross-site subrequests or form posts, still sent when the IdP redirects the browser back).
 */
export function serializeCookie(name: string, value: string, options: CookieOptions): string {
  return [
    `${name}=${value}`,
    `Path=${options.path}`,
    `Max-Age=${options.maxAgeSeconds}`,
    "HttpOnly",
    "SameSite=Lax",
    ...(options.secure ? ["Secure"] : []),
  ].join("; ");
}

/** Constant-time comparison of a presented secret with the expected one. */
export function secretsEqual(presented: string | undefined, expected: string): boolean {
  if (presented === undefined) return false;
  const a = createHash("sha256").update(presented).digest();
  const b = createHash("sha256").update(expected).digest();
  return timingSafeEqual(a, b);
}

/** The AES-256-GCM key for a session's IdP tokens: derived from the cookie, which is never stored. */
function sealingKey(cookieValue: string): Buffer {
  return Buffer.from(hkdfSync("sha256", cookieValue, "shells-session", "idp-tokens", 32));
}

/**
 * Encrypts a session's IdP tokens under a key derived from its cookie. A copy of the store alone
 * does not reveal them; they can be read only while serving a request that carries the cookie.
 */
export function sealTokens(cookieValue: string, tokens: object): string {
  const iv = randomBytes(12);
  const cipher = createCipheriv("aes-256-gcm", sealingKey(cookieValue), iv);
  const body = Buffer.concat([cipher.update(JSON.stringify(tokens), "utf8"), cipher.final()]);
  return Buffer.concat([iv, cipher.getAuthTag(), body]).toString("base64url");
}

/** Decrypts what `sealTokens` made; null when it was not sealed for this cookie. */
export function openTokens<T>(cookieValue: string, sealed: string): T | null {
  try {
    const raw = Buffer.from(sealed, "base64url");
    const decipher = createDecipheriv("aes-256-gcm", sealingKey(cookieValue), raw.subarray(0, 12));
    decipher.setAuthTag(raw.subarray(12, 28));
    const body = Buffer.concat([decipher.update(raw.subarray(28)), decipher.final()]);
    return JSON.parse(body.toString("utf8")) as T;
  } catch {
    return null;
  }
}
