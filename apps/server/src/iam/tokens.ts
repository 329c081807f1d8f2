import { randomBytes, timingSafeEqual } from "node:crypto";
import { newId, sha256Hex } from "../ids.js";

/**
 * Every secret token the control plane issues is minted, parsed and matched here, and the pattern
 * that keeps them out of logs and stored output is generated from the same table, so a new kind of
 * token cannot be issued without also being redacted.
 *
 * Each token is a prefix naming its kind, (for tokens that locate a stored row) the row's id, and
 * 32 random bytes in base64url. Only the SHA-256 of the whole token is stored; a fast hash suffices
 * because the secret has 256 bits of entropy (there is nothing to brute-force).
 *
 * - API keys: `shk_<key id>_<secret>` (the id finds the `api_keys` row without a scan).
 * - Terminal credentials: `sht_<credential id>_<secret>` (one attach, short-lived).
 * - Port URLs: `shp_<port url id>_<secret>` (in the path of an exposed port's URL, short-lived).
 * - Console session ids: `shs_<secret>` (the cookie; the `sessions` row is found by its hash). The
 *   login-in-progress cookie has the same shape.
 */
const TOKEN_KINDS = {
  apiKey: { prefix: "shk", idPrefix: "key" },
  term: { prefix: "sht", idPrefix: "term" },
  port: { prefix: "shp", idPrefix: "port" },
  session: { prefix: "shs", idPrefix: null },
} as const;

type TokenKind = keyof typeof TOKEN_KINDS;

/** 32 random bytes, base64url without padding. */
const SECRET = "[A-Za-z0-9_-]{43}";
/** The random part of a row id (`newId`'s alphabet and default length). */
const ROW_ID = "[0-9a-z]{12}";
/** Characters that may continue a token: a match must not be the middle of a longer word. */
const TOKEN_CHAR = "[A-Za-z0-9_-]";

function tokenSource(kind: TokenKind): string {
  const { prefix, idPrefix } = TOKEN_KINDS[kind];
  return idPrefix === null ? `${prefix}_${SECRET}` : `${prefix}_(${ROW_ID})_${SECRET}`;
}

const EXACT: Record<TokenKind, RegExp> = {
  apiKey: new RegExp(`^${tokenSource("apiKey")}$`),
  term: new RegExp(`^${tokenSource("term")}$`),
  port: new RegExp(`^${tokenSource("port")}$`),
  session: new RegExp(`^${tokenSource("session")}$`),
};

/**
 * Matches any token this server issues, anywhere in a text. Bounded by non-token characters on both
 * sides (not `\b`: a secret may end in `-`, which `\b` would not treat as a word end).
 */
export const ISSUED_TOKEN_PATTERN = new RegExp(
  `(?<!${TOKEN_CHAR})(?:${(Object.keys(TOKEN_KINDS) as TokenKind[])
    .map((kind) => tokenSource(kind).replace(/\(|\)/g, ""))
    .join("|")})(?!${TOKEN_CHAR})`,
  "g",
);

/** A freshly minted token: shown to its holder once; only `tokenHash` is stored. */
export interface MintedToken {
  token: string;
  tokenHash: string;
}

function mint(kind: TokenKind): MintedToken & { id: string } {
  const { prefix, idPrefix } = TOKEN_KINDS[kind];
  const secret = randomBytes(32).toString("base64url");
  if (idPrefix === null) {
    const token = `${prefix}_${secret}`;
    return { id: "", token, tokenHash: tokenHash(token) };
  }
  const id = newId(idPrefix);
  const token = `${prefix}_${id.slice(idPrefix.length + 1)}_${secret}`;
  return { id, token, tokenHash: tokenHash(token) };
}

function rowIdOf(kind: TokenKind, token: string): string | null {
  const { idPrefix } = TOKEN_KINDS[kind];
  const match = EXACT[kind].exec(token);
  return match?.[1] && idPrefix ? `${idPrefix}-${match[1]}` : null;
}

/** The stored form of a token: hex SHA-256. */
export function tokenHash(token: string): string {
  return sha256Hex(token);
}

/** Constant-time comparison of a presented token with a stored hash. */
export function tokenMatches(token: string, storedHash: string): boolean {
  const presented = Buffer.from(tokenHash(token), "hex");
  const stored = Buffer.from(storedHash, "hex");
  return presented.length === stored.length && timingSafeEqual(presented, stored);
}

/** A freshly minted API key. */
export interface MintedApiKey {
  keyId: string;
  token: string;
  keyHash: string;
}

/** Mints a new API key (`shk_…`). */
export function mintApiKey(): MintedApiKey {
  const { id, token, tokenHash: keyHash } = mint("apiKey");
  return { keyId: id, token, keyHash };
}

/** The key id an API key claims, or null when the text is not shaped like one. */
export function parseApiKey(token: string): { keyId: string } | null {
  const keyId = rowIdOf("apiKey", token);
  return keyId ? { keyId } : null;
}

/** A freshly minted terminal credential: the id names its `term_credentials` row. */
export interface MintedTermToken {
  credentialId: string;
  token: string;
  tokenHash: string;
}

/** Mints a terminal credential (`sht_…`). */
export function mintTermToken(): MintedTermToken {
  const { id, token, tokenHash: hash } = mint("term");
  return { credentialId: id, token, tokenHash: hash };
}

/** The credential id a terminal token claims, or null when the text is not shaped like one. */
export function parseTermToken(token: string): { credentialId: string } | null {
  const credentialId = rowIdOf("term", token);
  return credentialId ? { credentialId } : null;
}

/** A freshly minted port URL token: the id names its `port_urls` row. */
export interface MintedPortToken {
  portUrlId: string;
  token: string;
  tokenHash: string;
}

/** Mints a port URL token (`shp_…`). */
export function mintPortToken(): MintedPortToken {
  const { id, token, tokenHash: hash } = mint("port");
  return { portUrlId: id, token, tokenHash: hash };
}

/** The port URL id a token claims, or null when the text is not shaped like one. */
export function parsePortToken(token: string): { portUrlId: string } | null {
  const portUrlId = rowIdOf("port", token);
  return portUrlId ? { portUrlId } : null;
}

/** Mints a console session id (`shs_…`), also used for the login-in-progress cookie. */
export function mintSessionId(): MintedToken {
  const { token, tokenHash: hash } = mint("session");
  return { token, tokenHash: hash };
}
