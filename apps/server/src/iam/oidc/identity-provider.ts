import { createRemoteJWKSet, errors as joseErrors, jwtVerify, type JWTPayload } from "jose";
import * as client from "openid-client";
import type { OidcConfig } from "../../config.js";
import { claimAt, type Claims } from "./role-mapping.js";

/** Leeway for `exp`, `nbf` and `iat` between the issuer's clock and ours. */
const CLOCK_TOLERANCE_SECONDS = 30;
/** Timeout of every request to the issuer. */
const IDP_TIMEOUT_SECONDS = 10;

/**
 * A token or request the issuer's answer does not vouch for. `reason` is a fixed phrase, safe for the
 * activity log (never token material); `signatureValid` says whether the token was genuinely signed
 * by the issuer (its claims, not its origin, were wrong), so the refusal can be attributed to the org.
 */
export class TokenRejectedError extends Error {
  override readonly name = "TokenRejectedError";
  constructor(
    readonly reason: string,
    readonly signatureValid = false,
  ) {
    super(reason);
  }
}

/** The issuer could not be reached or answered with a server fault; nothing was decided. */
export class IdpUnavailableError extends Error {
  override readonly name = "IdpUnavailableError";
}

/** What a completed login or refresh yields. Tokens stay server-side and are never logged. */
export interface IdpGrant {
  /** Verified ID token claims, merged with the userinfo answer when there is one. */
  claims: Claims;
  /** Whether the issuer sent a (verified) ID token; a refresh may not. */
  idTokenReceived: boolean;
  /** Whether the role claim came from the userinfo endpoint (so a session can re-check it there). */
  roleClaimInUserinfo: boolean;
  accessToken: string;
  refreshToken: string | undefined;
  /** `exp` of the ID token, epoch seconds. */
  idTokenExpiresAt: number;
}

/** The PKCE, state and nonce values a login was started with. */
export interface LoginChecks {
  state: string;
  nonce: string;
  codeVerifier: string;
}

/**
 * The configured OpenID Connect issuer: discovery (lazy, retried after a failure), the
 * authorization-code + PKCE exchange, ID token and bearer JWT verification against the issuer's
 * JWKS, userinfo and refresh. Every token is checked here: issuer, audience, expiry and the
 * algorithm allow-list (which never contains `none` or a symmetric algorithm, so a token "signed"
 * with the public key as an HMAC secret is refused before any key is looked up).
 */
export class IdentityProvider {
  #discovered: Promise<{
    config: client.Configuration;
    jwks: ReturnType<typeof createRemoteJWKSet>;
  }> | null = null;

  constructor(private readonly settings: OidcConfig) {}

  /** Discovers the issuer once; a failed discovery is retried on the next call. */
  async #discover() {
    this.#discovered ??= (async () => {
      const issuer = new URL(this.settings.issuer);
      const config = await client.discovery(
        issuer,
        this.settings.clientId,
        undefined,
        this.settings.clientSecret
          ? client.ClientSecretBasic(this.settings.clientSecret)
          : client.None(),
        {
          // Plain http is allowed by the config only for a loopback issuer (a development IdP).
          execute: issuer.protocol === "http:" ? [client.allowInsecureRequests] : [],
          timeout: IDP_TIMEOUT_SECONDS,
        },
      );
      const jwksUri = config.serverMetadata().jwks_uri;
      if (!jwksUri) throw new Error("the issuer's discovery document has no jwks_uri");
      const jwks = createRemoteJWKSet(new URL(jwksUri), {
        timeoutDuration: IDP_TIMEOUT_SECONDS * 1000,
      });
      return { config, jwks };
    })();
    try {
      return await this.#discovered;
    } catch (error) {
      this.#discovered = null;
      throw new IdpUnavailableError("the identity provider's discovery document is unreachable", {
        cause: error,
      });
    }
  }

  /** Starts discovery early so the first login does not wait for it; failures are only reported. */
  async warmUp(): Promise<void> {
    await this.#discover();
  }

  /** The URL to send the browser to for a login. */
  async authorizationUrl(redirectUri: string, checks: LoginChecks): Promise<URL> {
    const { config } = await this.#discover();
    return client.buildAuthorizationUrl(config, {
      redirect_uri: redirectUri,
      scope: this.settings.scopes.join(" "),
      response_type: "code",
      state: checks.state,
      nonce: checks.nonce,
      code_challenge: await client.calculatePKCECodeChallenge(checks.codeVerifier),
      code_challenge_method: "S256",
    });
  }

  /**
   * Completes a login: checks the authorization response (state, `iss`), exchanges the code with the
   * PKCE verifier, verifies the ID token (signature, issuer, audience, expiry, nonce, algorithm) and
   * reads userinfo for the claims the ID token leaves out.
   */
  async completeLogin(callbackUrl: URL, checks: LoginChecks): Promise<IdpGrant> {
    const { config } = await this.#discover();
    let tokens: Awaited<ReturnType<typeof client.authorizationCodeGrant>>;
    try {
      tokens = await client.authorizationCodeGrant(config, callbackUrl, {
        pkceCodeVerifier: checks.codeVerifier,
        expectedState: checks.state,
        expectedNonce: checks.nonce,
        idTokenExpected: true,
      });
    } catch (error) {
      throw classifyClientError(error, "the authorization code exchange failed");
    }
    const idClaims = await this.verifyJwt(tokens.id_token ?? "", this.settings.clientId);
    if (idClaims.nonce !== checks.nonce) throw new TokenRejectedError("ID token nonce mismatch");
    return this.#grant(config, tokens.access_token, tokens.refresh_token, idClaims, idClaims.sub);
  }

  /**
   * Renews a session's tokens with its refresh token. The new ID token, when the issuer sends one,
   * is verified like a login's and must name the same subject.
   */
  async refresh(refreshToken: string, subject: string): Promise<IdpGrant> {
    const { config } = await this.#discover();
    let tokens: Awaited<ReturnType<typeof client.refreshTokenGrant>>;
    try {
      tokens = await client.refreshTokenGrant(config, refreshToken);
    } catch (error) {
      throw classifyClientError(error, "the refresh token was refused");
    }
    let idClaims: JWTPayload | null = null;
    if (tokens.id_token) {
      idClaims = await this.verifyJwt(tokens.id_token, this.settings.clientId);
      if (idClaims.sub !== subject)
        throw new TokenRejectedError("refreshed ID token names another subject");
    }
    return this.#grant(
      config,
      tokens.access_token,
      tokens.refresh_token ?? refreshToken,
      idClaims,
      subject,
    );
  }

  /** The userinfo answer for an access token, which must belong to `subject`. */
  async userinfo(accessToken: string, subject: string): Promise<Claims> {
    const { config } = await this.#discover();
    try {
      return await client.fetchUserInfo(config, accessToken, subject);
    } catch (error) {
      throw classifyClientError(error, "the userinfo endpoint refused the access token");
    }
  }

  /**
   * Verifies a JWT signed by the issuer: signature against the issuer's JWKS, algorithm within the
   * allow-list, `iss`, `aud` (must include `audience`), `exp` and `nbf` with a small tolerance, and a
   * subject. Throws `TokenRejectedError` with a fixed reason, or `IdpUnavailableError`.
   */
  async verifyJwt(
    token: string,
    audience: string,
    requiredClaims: string[] = [],
  ): Promise<JWTPayload & { sub: string }> {
    const { config, jwks } = await this.#discover();
    try {
      // The issuer exactly as the discovery document states it (openid-client checked that it
      // matches the configured one).
      const { payload } = await jwtVerify(token, jwks, {
        issuer: config.serverMetadata().issuer,
        audience,
        algorithms: this.settings.algorithms,
        clockTolerance: CLOCK_TOLERANCE_SECONDS,
        requiredClaims: ["exp", "sub", ...requiredClaims],
      });
      if (typeof payload.sub !== "string" || payload.sub.length === 0 || payload.sub.length > 255)
        throw new TokenRejectedError("the token's subject is not a usable string", true);
      return payload as JWTPayload & { sub: string };
    } catch (error) {
      throw classifyJoseError(error);
    }
  }

  async #grant(
    config: client.Configuration,
    accessToken: string,
    refreshToken: string | undefined,
    idClaims: JWTPayload | null,
    subject: string,
  ): Promise<IdpGrant> {
    let userinfo: Claims = {};
    if (config.serverMetadata().userinfo_endpoint) {
      userinfo = await this.userinfo(accessToken, subject);
    }
    // The ID token's registered claims stand; userinfo (fresher) supplies profile, email, groups.
    const fromUserinfo = Object.entries(userinfo).filter(([name]) => !REGISTERED_CLAIMS.has(name));
    const claims: Claims = {
      ...(idClaims ?? { sub: subject }),
      ...Object.fromEntries(fromUserinfo),
    };
    return {
      claims,
      idTokenReceived: idClaims !== null,
      roleClaimInUserinfo: claimAt(userinfo, this.settings.roleClaim) !== undefined,
      accessToken,
      refreshToken,
      idTokenExpiresAt: typeof idClaims?.exp === "number" ? idClaims.exp : 0,
    };
  }
}

/** Claims about the token itself, which only the ID token may state. */
const REGISTERED_CLAIMS = new Set([
  "iss",
  "sub",
  "aud",
  "exp",
  "iat",
  "nbf",
  "jti",
  "nonce",
  "azp",
  "auth_time",
  "at_hash",
  "c_hash",
  "sid",
]);

/**
 * A one-line account of a failure talking to the issuer, for the server log: error names and
 * messages along the cause chain only — never the objects themselves, which can hold requests,
 * responses or token material.
 */
export function describeIdpError(error: unknown): string {
  const parts: string[] = [];
  let current: unknown = error;
  for (let depth = 0; depth < 4 && current instanceof Error; depth++) {
    parts.push(`${current.name}: ${current.message}`);
    current = current.cause;
  }
  return parts.join(" ← ").slice(0, 500) || "unknown failure";
}

/** Maps a jose verification failure to a fixed, loggable reason. */
function classifyJoseError(error: unknown): Error {
  if (error instanceof TokenRejectedError) return error;
  if (error instanceof joseErrors.JWTExpired) return new TokenRejectedError("token expired", true);
  if (error instanceof joseErrors.JWTClaimValidationFailed) {
    const reason =
      error.claim === "iss"
        ? "wrong issuer"
        : error.claim === "aud"
          ? "wrong audience"
          : error.claim === "nbf"
            ? "token not yet valid"
            : `claim ${error.claim} ${error.reason}`;
    return new TokenRejectedError(reason, true);
  }
  if (error instanceof joseErrors.JOSEAlgNotAllowed || error instanceof joseErrors.JOSENotSupported)
    return new TokenRejectedError("signature algorithm not allowed");
  if (error instanceof joseErrors.JWSSignatureVerificationFailed)
    return new TokenRejectedError("bad signature");
  if (
    error instanceof joseErrors.JWKSNoMatchingKey ||
    error instanceof joseErrors.JWKSMultipleMatchingKeys
  )
    return new TokenRejectedError("no single matching key in the issuer's JWKS");
  if (
    error instanceof joseErrors.JWSInvalid ||
    error instanceof joseErrors.JWTInvalid ||
    error instanceof joseErrors.JWKInvalid
  )
    return new TokenRejectedError("malformed token");
  if (error instanceof IdpUnavailableError) return error;
  return new IdpUnavailableError("the issuer's signing keys could not be fetched", {
    cause: error,
  });
}

/**
 * Maps an openid-client failure: the issuer's explicit refusals (an OAuth error answer, a 4xx, a
 * response that fails a check) reject; transport faults, timeouts and 5xx answers mean "could not
 * decide", which never ends a session or offboards anyone.
 */
function classifyClientError(error: unknown, reason: string): Error {
  if (error instanceof TokenRejectedError || error instanceof IdpUnavailableError) return error;
  if (error instanceof client.AuthorizationResponseError)
    return new TokenRejectedError(`the identity provider answered ${safeCode(error.error)}`);
  if (
    error instanceof client.ResponseBodyError ||
    error instanceof client.WWWAuthenticateChallengeError
  ) {
    return error.status >= 500
      ? new IdpUnavailableError(reason, { cause: error })
      : new TokenRejectedError(reason);
  }
  if (error instanceof client.ClientError) {
    const status = error.cause instanceof Response ? error.cause.status : undefined;
    const transport =
      error.code === "OAUTH_TIMEOUT" ||
      error.code === "OAUTH_ABORT" ||
      (status !== undefined && status >= 500) ||
      (error.cause instanceof TypeError && status === undefined);
    return transport
      ? new IdpUnavailableError(reason, { cause: error })
      : new TokenRejectedError(reason);
  }
  return new IdpUnavailableError(reason, { cause: error });
}

/** An OAuth error code, reduced to its registered character set (it comes from the query string). */
function safeCode(code: string): string {
  return code.replace(/[^\w.-]/g, "").slice(0, 64) || "an error";
}
