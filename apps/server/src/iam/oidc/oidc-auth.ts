import { Scope } from "@shells/contract";
import type { FastifyBaseLogger, FastifyReply, FastifyRequest } from "fastify";
import type { Kysely, Selectable } from "kysely";
import { randomNonce, randomPKCECodeVerifier, randomState } from "openid-client";
import type { OidcConfig } from "../../config.js";
import { AppError } from "../../errors.js";
import { SYSTEM_ORG, type ActivityService } from "../../services/activity-service.js";
import type { Database, SessionTable } from "../../store/schema.js";
import type { AuthFailureLog } from "../auth-failure-log.js";
import { refuseAuthentication, type RequestOrigin } from "../authenticate.js";
import { resolveCaller, type Caller } from "../principal.js";
import { mintSessionId, tokenHash } from "../tokens.js";
import { DirectorySync, type Admission } from "./directory-sync.js";
import {
  IdentityProvider,
  describeIdpError,
  TokenRejectedError,
  type IdpGrant,
} from "./identity-provider.js";
import { sameOriginPath } from "./return-path.js";
import { scopesFromClaims } from "./role-mapping.js";
import {
  LOGIN_COOKIE,
  SESSION_COOKIE,
  openTokens,
  randomSecret,
  readCookie,
  sealTokens,
  secretsEqual,
  serializeCookie,
} from "./session-cookies.js";

export { sameOriginPath };

/** How long a login may take between `/auth/login` and `/auth/callback`. */
const LOGIN_TTL_SECONDS = 600;
/** Methods that change state: a cookie-authenticated one must carry the session's CSRF token. */
const MUTATING_METHODS = new Set(["POST", "PUT", "PATCH", "DELETE"]);

/** What the OIDC module is built from. */
export interface OidcAuthOptions {
  db: Kysely<Database>;
  activity: ActivityService;
  /** Where refused logins, tokens and sessions are recorded (bounded). */
  failures: AuthFailureLog;
  settings: OidcConfig;
  /** Lifetime of a console session, seconds. */
  sessionTtlSeconds: number;
  /** The server's public base URL (no trailing slash); read per request, as it may be known only after listen. */
  publicUrl: () => string;
  logger: FastifyBaseLogger;
}

/** The IdP tokens a session keeps (sealed) to re-check the user's role. */
interface SessionTokens {
  accessToken: string;
  refreshToken?: string | undefined;
}

type SessionRow = Selectable<SessionTable>;

/**
 * OpenID Connect for the control plane: console login (authorization code + PKCE) into a
 * server-side session, session authentication with CSRF protection and periodic re-checks of the
 * user's role at the IdP, and bearer JWTs for programs. Every refusal is an `auth.failed` event;
 * no token, cookie or CSRF value is ever logged or recorded.
 */
export class OidcAuth {
  readonly idp: IdentityProvider;
  readonly directory: DirectorySync;

  constructor(private readonly options: OidcAuthOptions) {
    this.idp = new IdentityProvider(options.settings);
    this.directory = new DirectorySync(options.db, options.activity, options.settings);
  }

  get #db() {
    return this.options.db;
  }

  /** Whether session cookies are marked Secure (the public URL is https). */
  get #secureCookies(): boolean {
    return this.options.publicUrl().startsWith("https:");
  }

  // --- bearer JWTs ---------------------------------------------------------------------------

  /**
   * Authenticates a bearer JWT from the issuer. Its claims are directory evidence as of its `iat`:
   * they create or update the user, or offboard them when no role maps. Scopes come from the
   * token's `scope`/`scp` claim when present, else from the role.
   */
  async authenticateBearer(token: string, origin: RequestOrigin): Promise<Caller> {
    let claims: Awaited<ReturnType<IdentityProvider["verifyJwt"]>>;
    try {
      claims = await this.idp.verifyJwt(token, this.options.settings.audience, ["iat"]);
    } catch (error) {
      if (error instanceof TokenRejectedError) {
        // Only a token the issuer really signed is attributed to the org; forgeries go to the system chain.
        const orgId = error.signatureValid ? await this.directory.orgId() : null;
        return this.#refuse(origin, `JWT refused: ${error.reason}`, orgId);
      }
      this.options.logger.warn(
        { reason: describeIdpError(error) },
        "could not verify a bearer JWT",
      );
      return this.#refuse(origin, "JWT could not be verified: the issuer's keys are unreachable");
    }
    const iatMs = Math.min(Number(claims.iat) * 1000, Date.now());
    const admission = await this.directory.apply({
      subject: claims.sub,
      claims,
      at: new Date(iatMs).toISOString(),
    });
    if (!admission.admitted) return this.#refuseAdmission(origin, admission);
    const caller = await resolveCaller(
      this.#db,
      { orgId: admission.orgId, type: "user", id: admission.userId },
      { keyId: null, scopes: scopesFromClaims(claims, admission.role) },
    );
    return caller ?? this.#refuse(origin, "the member is disabled", admission.orgId);
  }

  // --- sessions ------------------------------------------------------------------------------

  /**
   * Authenticates a console session cookie. Expired sessions are deleted; mutating requests need
   * `x-csrf-token` equal to the session's token; the user's role is re-checked at the IdP at most
   * every `recheckSeconds` (a user the directory dropped is offboarded and refused).
   */
  async authenticateSession(
    cookieValue: string,
    csrfHeader: string | undefined,
    origin: RequestOrigin,
  ): Promise<Caller> {
    const row = await this.#session(cookieValue);
    if (!row) return this.#refuse(origin, "unknown or ended session");
    if (Date.parse(row.expires_at) <= Date.now()) {
      await this.#endSession(row.id_hash);
      return this.#refuse(origin, "the session expired", row.org_id);
    }
    if (
      MUTATING_METHODS.has(origin.method.toUpperCase()) &&
      !secretsEqual(csrfHeader, row.csrf_token)
    ) {
      await this.options.activity.record({
        orgId: row.org_id,
        actor: { type: "user", id: row.user_id },
        action: "auth.failed",
        target: null,
        outcome: "denied",
        details: {
          reason: "missing or wrong x-csrf-token",
          method: origin.method,
          route: origin.route,
          ip: origin.ip,
        },
      });
      throw new AppError(
        "csrf_failed",
        "This request needs the session's CSRF token in `x-csrf-token`.",
        {
          hint: "GET /api/v1/me returns it as `csrfToken`.",
        },
      );
    }
    await this.#recheckIfDue(row, cookieValue, origin);
    const caller = await resolveCaller(
      this.#db,
      { orgId: row.org_id, type: "user", id: row.user_id },
      { keyId: null, scopes: Scope.options, csrfToken: row.csrf_token },
    );
    if (caller) return caller;
    await this.#endSession(row.id_hash);
    return this.#refuse(origin, "the session's member was removed or disabled", row.org_id);
  }

  /**
   * Re-asks the IdP about the session's user when the last check is older than `recheckSeconds`:
   * userinfo with the stored access token (renewed with the refresh token when it has expired), or a
   * refresh grant when the role claim comes only in ID tokens. The IdP refusing the tokens ends the
   * session; the IdP being unreachable refuses this request but keeps the session for a retry.
   */
  async #recheckIfDue(row: SessionRow, cookieValue: string, origin: RequestOrigin): Promise<void> {
    const dueMs = this.options.settings.recheckSeconds * 1000;
    if (row.recheck === "none") return;
    if (row.checked_at && Date.now() - Date.parse(row.checked_at) < dueMs) return;
    // Claim the re-check so concurrent requests do not all call the IdP (or race a rotating
    // refresh token); the losers go on with the state the winner leaves.
    const now = new Date().toISOString();
    let claim = this.#db
      .updateTable("sessions")
      .set({ checked_at: now })
      .where("id_hash", "=", row.id_hash);
    claim =
      row.checked_at === null
        ? claim.where("checked_at", "is", null)
        : claim.where("checked_at", "=", row.checked_at);
    const claimed = await claim.executeTakeFirst();
    if (Number(claimed.numUpdatedRows) === 0) return;

    const storedSubject = (JSON.parse(row.claims) as { sub?: unknown }).sub;
    const subject = typeof storedSubject === "string" ? storedSubject : "";
    const tokens = row.idp_tokens ? openTokens<SessionTokens>(cookieValue, row.idp_tokens) : null;
    if (!subject || !tokens) {
      await this.#endSession(row.id_hash);
      return this.#refuse(origin, "the session cannot be re-checked; log in again", row.org_id);
    }
    let claims: Record<string, unknown>;
    try {
      if (row.recheck === "userinfo") {
        try {
          claims = await this.idp.userinfo(tokens.accessToken, subject);
        } catch (error) {
          if (!(error instanceof TokenRejectedError) || !tokens.refreshToken) throw error;
          claims = (await this.#refreshSession(row, cookieValue, tokens.refreshToken, subject))
            .claims;
        }
      } else {
        if (!tokens.refreshToken) throw new TokenRejectedError("no refresh token");
        const grant = await this.#refreshSession(row, cookieValue, tokens.refreshToken, subject);
        if (!grant.idTokenReceived)
          throw new TokenRejectedError("the refresh returned no ID token");
        claims = grant.claims;
      }
    } catch (error) {
      if (error instanceof TokenRejectedError) {
        await this.#endSession(row.id_hash);
        return this.#refuse(
          origin,
          "the identity provider no longer accepts the session; log in again",
          row.org_id,
        );
      }
      // Put the last check back so the next request tries again.
      await this.#db
        .updateTable("sessions")
        .set({ checked_at: row.checked_at })
        .where("id_hash", "=", row.id_hash)
        .execute();
      this.options.logger.warn(
        { reason: describeIdpError(error) },
        "could not re-check a session's role with the identity provider",
      );
      return this.#refuse(
        origin,
        "could not re-check the session with the identity provider; try again",
        row.org_id,
      );
    }
    const admission = await this.directory.apply({ subject, claims, at: now });
    if (!admission.admitted) {
      await this.#endSession(row.id_hash);
      return this.#refuseAdmission(origin, admission);
    }
  }

  async #refreshSession(
    row: SessionRow,
    cookieValue: string,
    refreshToken: string,
    subject: string,
  ): Promise<IdpGrant> {
    const grant = await this.idp.refresh(refreshToken, subject);
    const sealed = sealTokens(cookieValue, {
      accessToken: grant.accessToken,
      refreshToken: grant.refreshToken,
    });
    await this.#db
      .updateTable("sessions")
      .set({ idp_tokens: sealed })
      .where("id_hash", "=", row.id_hash)
      .execute();
    return grant;
  }

  async #session(cookieValue: string): Promise<SessionRow | undefined> {
    return this.#db
      .selectFrom("sessions")
      .selectAll()
      .where("id_hash", "=", tokenHash(cookieValue))
      .executeTakeFirst();
  }

  async #endSession(idHash: string): Promise<void> {
    await this.#db.deleteFrom("sessions").where("id_hash", "=", idHash).execute();
  }

  // --- login and logout (served at /auth/*, see routes/auth-routes.ts) -------------------------

  /** Starts a login: state, nonce and PKCE verifier stay server-side, bound to a browser cookie. */
  async login(request: FastifyRequest, reply: FastifyReply): Promise<FastifyReply> {
    const query = request.query as Record<string, unknown>;
    const returnTo = sameOriginPath(query.returnTo);
    const loginId = mintSessionId().token;
    const checks = {
      state: randomState(),
      nonce: randomNonce(),
      codeVerifier: randomPKCECodeVerifier(),
    };
    let location: URL;
    try {
      location = await this.idp.authorizationUrl(this.#redirectUri(), checks);
    } catch (error) {
      this.options.logger.warn({ reason: describeIdpError(error) }, "cannot start an OIDC login");
      throw new AppError(
        "unauthenticated",
        "The identity provider is unreachable; try again shortly.",
      );
    }
    const now = Date.now();
    await this.#db
      .deleteFrom("oidc_logins")
      .where("expires_at", "<", new Date(now).toISOString())
      .execute();
    await this.#db
      .insertInto("oidc_logins")
      .values({
        id_hash: tokenHash(loginId),
        state: checks.state,
        nonce: checks.nonce,
        code_verifier: checks.codeVerifier,
        return_to: returnTo,
        expires_at: new Date(now + LOGIN_TTL_SECONDS * 1000).toISOString(),
      })
      .execute();
    return reply
      .header("cache-control", "no-store")
      .header("set-cookie", this.#loginCookie(loginId, LOGIN_TTL_SECONDS))
      .redirect(location.href, 302);
  }

  /**
   * Completes a login: the browser must hold the login cookie of this attempt; the code is exchanged
   * (with the PKCE verifier) and the ID token verified; the claims must map to a role; then a fresh
   * session replaces any the browser had, and the browser goes back to where it started.
   */
  async callback(request: FastifyRequest, reply: FastifyReply): Promise<FastifyReply> {
    reply.header("cache-control", "no-store");
    reply.header("set-cookie", this.#loginCookie("", 0));
    const origin = { method: request.method, route: "/auth/callback", ip: request.ip };
    const loginId = readCookie(request.headers.cookie, LOGIN_COOKIE);
    if (!loginId) return this.#refuse(origin, "no login in progress in this browser");
    const login = await this.#db
      .selectFrom("oidc_logins")
      .selectAll()
      .where("id_hash", "=", tokenHash(loginId))
      .executeTakeFirst();
    if (!login) return this.#refuse(origin, "no login in progress in this browser");
    // Single use: a replayed callback finds nothing.
    await this.#db.deleteFrom("oidc_logins").where("id_hash", "=", login.id_hash).execute();
    if (Date.parse(login.expires_at) <= Date.now())
      return this.#refuse(origin, "the login took too long");

    const search = request.url.includes("?") ? request.url.slice(request.url.indexOf("?")) : "";
    let grant: IdpGrant;
    try {
      grant = await this.idp.completeLogin(new URL(`${this.#redirectUri()}${search}`), {
        state: login.state,
        nonce: login.nonce,
        codeVerifier: login.code_verifier,
      });
    } catch (error) {
      if (error instanceof TokenRejectedError)
        return this.#refuse(origin, `login refused: ${error.reason}`);
      this.options.logger.warn({ reason: describeIdpError(error) }, "OIDC login failed");
      return this.#refuse(origin, "the identity provider is unreachable");
    }
    const subject = String(grant.claims.sub);
    const admission = await this.directory.apply({
      subject,
      claims: grant.claims,
      at: new Date().toISOString(),
    });
    if (!admission.admitted) return this.#refuseAdmission(origin, admission);

    const previous = readCookie(request.headers.cookie, SESSION_COOKIE);
    if (previous) await this.#endSession(tokenHash(previous));
    const cookieValue = mintSessionId().token;
    const now = Date.now();
    let expiresMs = now + this.options.sessionTtlSeconds * 1000;
    const recheck = grant.roleClaimInUserinfo
      ? "userinfo"
      : grant.refreshToken
        ? "refresh"
        : "none";
    // A session that cannot re-check the role lives no longer than the ID token that granted it.
    if (recheck === "none") expiresMs = Math.min(expiresMs, grant.idTokenExpiresAt * 1000);
    await this.#db
      .insertInto("sessions")
      .values({
        id_hash: tokenHash(cookieValue),
        org_id: admission.orgId,
        user_id: admission.userId,
        csrf_token: randomSecret(),
        claims: JSON.stringify(sessionClaims(grant.claims)),
        created_at: new Date(now).toISOString(),
        expires_at: new Date(expiresMs).toISOString(),
        idp_tokens: sealTokens(cookieValue, {
          accessToken: grant.accessToken,
          refreshToken: grant.refreshToken,
        }),
        recheck,
        checked_at: new Date(now).toISOString(),
      })
      .execute();
    await this.options.activity.record({
      orgId: admission.orgId,
      actor: { type: "user", id: admission.userId },
      action: "auth.login",
      target: { type: "user", id: admission.userId },
      outcome: "success",
      details: { method: "oidc", role: admission.role, ip: request.ip },
    });
    const maxAge = Math.max(0, Math.floor((expiresMs - now) / 1000));
    return reply
      .header(
        "set-cookie",
        serializeCookie(SESSION_COOKIE, cookieValue, {
          path: "/",
          maxAgeSeconds: maxAge,
          secure: this.#secureCookies,
        }),
      )
      .redirect(login.return_to, 302);
  }

  /** Ends the browser's session (CSRF-checked when there is one) and clears the cookie. */
  async logout(request: FastifyRequest, reply: FastifyReply): Promise<FastifyReply> {
    const cookieValue = readCookie(request.headers.cookie, SESSION_COOKIE);
    const row = cookieValue ? await this.#session(cookieValue) : undefined;
    if (row) {
      const header = request.headers["x-csrf-token"];
      if (!secretsEqual(typeof header === "string" ? header : undefined, row.csrf_token))
        throw new AppError(
          "csrf_failed",
          "Logging out needs the session's CSRF token in `x-csrf-token`.",
        );
      await this.#endSession(row.id_hash);
      await this.options.activity.record({
        orgId: row.org_id,
        actor: { type: "user", id: row.user_id },
        action: "auth.logout",
        target: { type: "user", id: row.user_id },
        outcome: "success",
        details: { ip: request.ip },
      });
    }
    return reply
      .header("cache-control", "no-store")
      .header(
        "set-cookie",
        serializeCookie(SESSION_COOKIE, "", {
          path: "/",
          maxAgeSeconds: 0,
          secure: this.#secureCookies,
        }),
      )
      .code(204)
      .send();
  }

  #redirectUri(): string {
    return `${this.options.publicUrl()}/auth/callback`;
  }

  #loginCookie(value: string, maxAgeSeconds: number): string {
    return serializeCookie(LOGIN_COOKIE, value, {
      path: "/auth/callback",
      maxAgeSeconds,
      secure: this.#secureCookies,
    });
  }

  async #refuseAdmission(
    origin: RequestOrigin,
    admission: Admission & { admitted: false },
  ): Promise<never> {
    return this.#refuse(origin, admission.reason, admission.orgId);
  }

  async #refuse(
    origin: RequestOrigin,
    reason: string,
    orgId: string | null = null,
  ): Promise<never> {
    return refuseAuthentication(this.options.failures, origin, reason, orgId ?? SYSTEM_ORG);
  }
}

/** The claims a session keeps for display and re-checks: identity only, never tokens. */
function sessionClaims(claims: Record<string, unknown>): Record<string, unknown> {
  const keep = ["iss", "sub", "email", "name", "preferred_username"];
  return Object.fromEntries(keep.filter((k) => claims[k] !== undefined).map((k) => [k, claims[k]]));
}
