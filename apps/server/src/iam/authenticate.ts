import type { Scope } from "@shells/contract";
import type { Kysely } from "kysely";
import { AppError } from "../errors.js";
import { nowIso } from "../ids.js";
import { SYSTEM_ORG } from "../services/activity-service.js";
import type { Database } from "../store/schema.js";
import type { AuthFailureLog } from "./auth-failure-log.js";
import type { CallerCache } from "./caller-cache.js";
import { parseApiKey, tokenMatches } from "./tokens.js";
import { SESSION_COOKIE, readCookie } from "./oidc/session-cookies.js";
import { keyLapse, lapseText, resolveCaller, type Caller } from "./principal.js";

export type { Caller };

/** Where a request came from, for the activity record of a failed attempt. */
export interface RequestOrigin {
  method: string;
  route: string;
  ip: string;
}

/** The credentials a request may carry. */
export interface RequestCredentials {
  /** The `Authorization` header: `Bearer <API key>` or `Bearer <JWT>`. */
  authorization: string | undefined;
  /** The `Cookie` header (a console session), used only when there is no `Authorization`. */
  cookie: string | undefined;
  /** The `x-csrf-token` header, required with a session cookie on mutating requests. */
  csrfToken: string | undefined;
}

/** The credentials of an HTTP request: the one place that reads them from headers. */
export function requestCredentials(request: {
  headers: Record<string, string | string[] | undefined>;
}): RequestCredentials {
  const { authorization, cookie } = request.headers;
  const csrfToken = request.headers["x-csrf-token"];
  return {
    authorization: typeof authorization === "string" ? authorization : undefined,
    cookie: typeof cookie === "string" ? cookie : undefined,
    csrfToken: typeof csrfToken === "string" ? csrfToken : undefined,
  };
}

/** Verifies the credentials only an OIDC setup can vouch for (bearer JWTs and console sessions). */
export interface OidcAuthenticator {
  authenticateBearer(token: string, origin: RequestOrigin): Promise<Caller>;
  authenticateSession(
    cookieValue: string,
    csrfToken: string | undefined,
    origin: RequestOrigin,
  ): Promise<Caller>;
}

const LAST_USED_RESOLUTION_MS = 60_000;
/** Three base64url parts: a JWS compact serialization (the signature part is empty for `alg: none`). */
const JWT_SHAPE = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/;

/**
 * Records a failed authentication in the bounded failure log (as `auth.failed` in `orgId`'s chain
 * when the attempt is attributable to an org, else the system chain) and throws `unauthenticated`.
 * `reason` must never contain credential material.
 */
export async function refuseAuthentication(
  failures: AuthFailureLog,
  origin: RequestOrigin,
  reason: string,
  orgId = SYSTEM_ORG,
  keyId?: string,
): Promise<never> {
  await failures.record({ orgId, keyId, origin, reason });
  throw new AppError("unauthenticated", `Authentication failed: ${reason}.`, {
    hint: "Send `Authorization: Bearer <API key or JWT>`, or log in at /auth/login when OIDC is configured. The local profile writes an admin key to <data dir>/admin-token.",
  });
}

/**
 * Resolves a request's credentials to a caller, or throws `unauthenticated`: an API key (`shk_…`),
 * a bearer JWT from the OIDC issuer, or — with no `Authorization` header — a console session
 * cookie. Every failure is recorded (aggregated by the failure log): in the key's org when the token
 * names a key we know, otherwise in the system chain.
 */
export async function authenticate(
  db: Kysely<Database>,
  failures: AuthFailureLog,
  credentials: RequestCredentials,
  origin: RequestOrigin,
  oidc: OidcAuthenticator | null = null,
  cache?: CallerCache,
): Promise<Caller> {
  const refuse = (reason: string, orgId = SYSTEM_ORG, keyId?: string): Promise<never> =>
    refuseAuthentication(failures, origin, reason, orgId, keyId);
  const authorization = credentials.authorization;
  if (!authorization) {
    const session = readCookie(credentials.cookie, SESSION_COOKIE);
    if (session !== undefined) {
      if (!oidc) return refuse("session cookies need OIDC to be configured");
      return oidc.authenticateSession(session, credentials.csrfToken, origin);
    }
    throw new AppError("unauthenticated", "Missing `Authorization: Bearer <API key>` header.", {
      hint: "The local profile writes an admin key to <data dir>/admin-token.",
    });
  }
  const match = /^Bearer\s+(\S+)$/i.exec(authorization.trim());
  if (!match?.[1]) return refuse("the Authorization header is not `Bearer <API key>`");
  const token = match[1];
  if (JWT_SHAPE.test(token)) {
    if (!oidc) return refuse("JWT bearer tokens need OIDC to be configured");
    return oidc.authenticateBearer(token, origin);
  }
  const parsed = parseApiKey(token);
  if (!parsed) return refuse("the token is not a Shells API key");
  const cached = cache?.get(token);
  if (cached) return cached;
  const key = await db
    .selectFrom("api_keys")
    .selectAll()
    .where("id", "=", parsed.keyId)
    .executeTakeFirst();
  if (!key) return refuse("unknown API key");
  if (!tokenMatches(token, key.key_hash))
    return refuse("wrong secret for this API key", key.org_id, key.id);
  const lapse = keyLapse(key);
  if (lapse) return refuse(`the API key ${lapseText(lapse)}`, key.org_id, key.id);
  const now = Date.now();
  if (!key.last_used_at || now - Date.parse(key.last_used_at) > LAST_USED_RESOLUTION_MS) {
    await db
      .updateTable("api_keys")
      .set({ last_used_at: nowIso() })
      .where("id", "=", key.id)
      .execute();
  }
  const caller = await resolveCaller(
    db,
    { orgId: key.org_id, type: key.principal_type, id: key.principal_id },
    { keyId: key.id, scopes: JSON.parse(key.scopes) as Scope[] },
  );
  if (!caller)
    return refuse(`the key's ${key.principal_type} was removed or disabled`, key.org_id, key.id);
  cache?.set(token, caller, Date.now(), key.expires_at ? Date.parse(key.expires_at) : Infinity);
  return caller;
}
