import { exportJWK, generateKeyPair, type CryptoKey, type JWK } from "jose";
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import Provider from "oidc-provider";

/** A real OpenID Connect provider (`oidc-provider`) on loopback, for login and token tests. */
export interface TestIdp {
  issuer: string;
  clientId: string;
  clientSecret: string;
  /** The provider's signing key (RS256), also published in its JWKS: tokens minted with it are genuine. */
  privateKey: CryptoKey;
  publicKey: CryptoKey;
  publicJwk: JWK;
  kid: string;
  /** Each account's `groups` claim; change it to move a user in the directory. */
  groups: Map<string, string[]>;
  close(): Promise<void>;
}

/** A free TCP port on 127.0.0.1 (for a server that must know its URL before it starts). */
export async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/**
 * Starts `oidc-provider` on 127.0.0.1 with one confidential client (code flow, PKCE required,
 * refresh tokens allowed), its development login and consent pages, and accounts whose `groups`
 * claim the test controls. Any login name is accepted as an account id.
 */
export async function startTestIdp(options: {
  redirectUris: string[];
  /** Access token lifetime (default: the provider's hour). */
  accessTokenTtlSeconds?: number;
  /** Issue a refresh token with every code grant (default: only for `offline_access`). */
  alwaysIssueRefreshTokens?: boolean;
}): Promise<TestIdp> {
  let handler: (req: IncomingMessage, res: ServerResponse) => void = (_req, res) => {
    res.statusCode = 503;
    res.end();
  };
  const server = createServer((req, res) => handler(req, res));
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const issuer = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const { privateKey, publicKey } = await generateKeyPair("RS256", { extractable: true });
  const kid = "test-idp-rs256";
  const privateJwk = { ...(await exportJWK(privateKey)), kid, alg: "RS256", use: "sig" };
  const publicJwk = { ...(await exportJWK(publicKey)), kid, alg: "RS256", use: "sig" };
  const groups = new Map<string, string[]>();
  const clientId = "shells-console";
  const clientSecret = "test-client-secret-0123456789abcdef";
  const provider = new Provider(issuer, {
    clients: [
      {
        client_id: clientId,
        client_secret: clientSecret,
        redirect_uris: options.redirectUris,
        response_types: ["code"],
        grant_types: ["authorization_code", "refresh_token"],
        token_endpoint_auth_method: "client_secret_basic",
      },
    ],
    jwks: { keys: [privateJwk] },
    cookies: { keys: ["test-idp-cookie-signing-key"] },
    claims: {
      openid: ["sub"],
      email: ["email", "email_verified"],
      profile: ["name"],
      groups: ["groups"],
    },
    scopes: ["openid", "offline_access", "profile", "email", "groups"],
    features: { devInteractions: { enabled: true } },
    pkce: { required: () => true },
    // The provider tolerates 15 s of clock skew on its own tokens unless told otherwise.
    ...(options.accessTokenTtlSeconds
      ? { ttl: { AccessToken: options.accessTokenTtlSeconds }, clockTolerance: 0 }
      : {}),
    ...(options.alwaysIssueRefreshTokens ? { issueRefreshToken: () => true } : {}),
    findAccount: (_ctx, accountId) => ({
      accountId,
      claims: () => ({
        sub: accountId,
        email: `${accountId}@example.test`,
        email_verified: true,
        name: accountId,
        groups: groups.get(accountId) ?? [],
      }),
    }),
  });
  const callback = provider.callback();
  handler = (req, res) => void callback(req, res);
  return {
    issuer,
    clientId,
    clientSecret,
    privateKey,
    publicKey,
    publicJwk,
    kid,
    groups,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

/**
 * A minimal browser: a cookie jar per origin, redirects followed by hand, and the provider's
 * development login and consent forms filled in. Enough to drive a real code + PKCE login.
 */
export class TestBrowser {
  readonly #jar = new Map<string, Map<string, string>>();

  /** The cookies this browser holds for `url`'s origin. */
  cookies(url: string): Map<string, string> {
    const origin = new URL(url).origin;
    let cookies = this.#jar.get(origin);
    if (!cookies) {
      cookies = new Map();
      this.#jar.set(origin, cookies);
    }
    return cookies;
  }

  /** One request, no redirect following; stores the cookies it sets. */
  async request(
    url: string,
    init: { method?: string; body?: string; headers?: Record<string, string> } = {},
  ): Promise<Response> {
    const jar = this.cookies(url);
    const cookie = [...jar].map(([name, value]) => `${name}=${value}`).join("; ");
    const response = await fetch(url, {
      method: init.method ?? "GET",
      redirect: "manual",
      headers: { ...(cookie ? { cookie } : {}), ...init.headers },
      ...(init.body !== undefined ? { body: init.body } : {}),
    });
    for (const line of response.headers.getSetCookie()) {
      const [pair = "", ...attributes] = line.split(";");
      const eq = pair.indexOf("=");
      const name = pair.slice(0, eq).trim();
      const value = pair.slice(eq + 1).trim();
      const expired = attributes.some((a) => /^\s*max-age=0\s*$/i.test(a)) || value === "";
      if (expired) jar.delete(name);
      else jar.set(name, value);
    }
    return response;
  }

  /**
   * Follows redirects from `url`, logging in as `accountId` and granting consent whenever the
   * provider shows its forms, until a response is not a redirect or lands on `stopAt`'s origin
   * outside the IdP. Returns every URL visited and the last response.
   */
  async follow(
    url: string,
    accountId: string,
    stopAt: (url: URL) => boolean,
  ): Promise<{ visited: string[]; response: Response; url: string }> {
    const visited: string[] = [];
    let current = url;
    for (let hop = 0; hop < 20; hop++) {
      visited.push(current);
      const response = await this.request(current);
      const location = response.headers.get("location");
      if (response.status >= 300 && response.status < 400 && location) {
        const next = new URL(location, current).href;
        if (stopAt(new URL(next))) {
          visited.push(next);
          return { visited, response, url: next };
        }
        current = next;
        continue;
      }
      const html = response.status === 200 ? await response.text() : "";
      const form = /<form[^>]*action="([^"]+)"[^>]*method="post"/i.exec(html);
      const prompt = /name="prompt" value="(\w+)"/.exec(html)?.[1];
      if (!form?.[1] || !prompt) return { visited, response, url: current };
      const action = new URL(form[1].replace(/&amp;/g, "&").replace(/&#x2F;/g, "/"), current).href;
      const fields =
        prompt === "login"
          ? new URLSearchParams({ prompt, login: accountId, password: "any" })
          : new URLSearchParams({ prompt });
      const submitted = await this.request(action, {
        method: "POST",
        body: fields.toString(),
        headers: { "content-type": "application/x-www-form-urlencoded" },
      });
      const after = submitted.headers.get("location");
      if (!after) return { visited, response: submitted, url: action };
      current = new URL(after, action).href;
    }
    throw new Error(`too many redirects from ${url}: ${visited.join(" → ")}`);
  }
}
