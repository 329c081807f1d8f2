import { SignJWT, UnsecuredJWT, exportSPKI, generateKeyPair } from "jose";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import Database from "better-sqlite3";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadConfig } from "../../config.js";
import { startServer, type RunningServer } from "../../start-server.js";
import { TestBrowser, freePort, startTestIdp, type TestIdp } from "../../test-support/test-idp.js";
import { createTestApp } from "../../test-support/test-app.js";
import { sameOriginPath } from "./oidc-auth.js";
import { roleFromClaims } from "./role-mapping.js";

const ROLE_MAP =
  "shells-owners=owner,shells-admins=admin,shells-devs=developer,shells-viewers=viewer";

function oidcEnv(idp: TestIdp): Record<string, string> {
  return {
    SHELLS_OIDC_ISSUER: idp.issuer,
    SHELLS_OIDC_CLIENT_ID: idp.clientId,
    SHELLS_OIDC_CLIENT_SECRET: idp.clientSecret,
    SHELLS_OIDC_SCOPES: "openid profile email groups",
    SHELLS_OIDC_ROLE_MAP: ROLE_MAP,
    // Re-check the directory on every request, so offboarding is observable without waiting.
    SHELLS_OIDC_RECHECK_SECONDS: "0",
    SHELLS_VALIDATE_RESPONSES: "1",
  };
}

async function start(
  port: number,
  env: Record<string, string>,
  profile: "local" | "hosted" = "local",
): Promise<{ server: RunningServer; dataDir: string }> {
  const dataDir = mkdtempSync(join(tmpdir(), "shells-oidc-"));
  const config = loadConfig(
    [
      "--port",
      String(port),
      "--host",
      "127.0.0.1",
      "--data-dir",
      dataDir,
      "--backend",
      "simulator",
      "--profile",
      profile,
      "--log-level",
      "silent",
    ],
    env,
  );
  return { server: await startServer(config), dataDir };
}

describe("OIDC against a real provider", () => {
  let idp: TestIdp;
  let server: RunningServer;
  let dataDir: string;
  let hostedPort: number;
  let adminToken: string;
  const minted: string[] = [];

  beforeAll(async () => {
    const port = await freePort();
    hostedPort = await freePort();
    idp = await startTestIdp({
      redirectUris: [
        `http://127.0.0.1:${port}/auth/callback`,
        `http://127.0.0.1:${hostedPort}/auth/callback`,
      ],
    });
    ({ server, dataDir } = await start(port, oidcEnv(idp)));
    adminToken = readFileSync(join(dataDir, "admin-token"), "utf8").trim();
  });

  afterAll(async () => {
    await server?.close();
    await idp?.close();
    if (dataDir) rmSync(dataDir, { recursive: true, force: true });
  });

  /** Logs `accountId` in through the provider; returns the browser (holding the session cookie) and where it landed. */
  async function login(accountId: string, returnTo = "/") {
    const browser = new TestBrowser();
    const base = new URL(server.url);
    const result = await browser.follow(
      `${server.url}/auth/login?returnTo=${encodeURIComponent(returnTo)}`,
      accountId,
      (url) =>
        url.origin === base.origin &&
        url.pathname !== "/auth/callback" &&
        url.pathname !== "/auth/login",
    );
    return { browser, ...result };
  }

  /** A request to the API as the browser's session: cookie only, plus the CSRF header when given. */
  async function asSession(
    browser: TestBrowser,
    method: string,
    path: string,
    body?: unknown,
    csrf?: string,
  ) {
    return browser.request(`${server.url}${path}`, {
      method,
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
      headers: {
        ...(body === undefined ? {} : { "content-type": "application/json" }),
        ...(csrf === undefined ? {} : { "x-csrf-token": csrf }),
      },
    });
  }

  async function withBearer(token: string, method = "GET", path = "/api/v1/me", body?: unknown) {
    return fetch(`${server.url}${path}`, {
      method,
      headers: {
        authorization: `Bearer ${token}`,
        ...(body === undefined ? {} : { "content-type": "application/json" }),
      },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });
  }

  /** A JWT signed with the provider's own key (the one its JWKS publishes). */
  async function providerJwt(
    claims: Record<string, unknown>,
    options: { iss?: string; aud?: string; iatOffsetSeconds?: number; expSeconds?: number } = {},
  ) {
    const now = Math.floor(Date.now() / 1000);
    const token = await new SignJWT(claims)
      .setProtectedHeader({ alg: "RS256", kid: idp.kid })
      .setIssuer(options.iss ?? idp.issuer)
      .setAudience(options.aud ?? idp.clientId)
      .setIssuedAt(now + (options.iatOffsetSeconds ?? 0))
      .setExpirationTime(now + (options.expSeconds ?? 300))
      .sign(idp.privateKey);
    minted.push(token);
    return token;
  }

  async function activity(
    action: string,
  ): Promise<{ actor: { id: string }; details: Record<string, unknown> }[]> {
    const response = await fetch(`${server.url}/api/v1/activity?action=${action}&limit=500`, {
      headers: { authorization: `Bearer ${adminToken}` },
    });
    expect(response.status).toBe(200);
    return (
      (await response.json()) as {
        items: { actor: { id: string }; details: Record<string, unknown> }[];
      }
    ).items;
  }

  it("logs a user in with code + PKCE and the session cookie reaches the API", async () => {
    idp.groups.set("alice", ["shells-admins", "unrelated"]);
    const { browser, visited, url, response } = await login("alice", "/shells?tab=mine");
    const authorize = new URL(visited.find((u) => u.startsWith(`${idp.issuer}/auth?`)) ?? "");
    expect(authorize.searchParams.get("code_challenge_method")).toBe("S256");
    expect(authorize.searchParams.get("code_challenge")).toMatch(/^[\w-]{43}$/);
    expect(authorize.searchParams.get("redirect_uri")).toBe(`${server.url}/auth/callback`);
    expect(url).toBe(`${server.url}/shells?tab=mine`);

    const setCookie = response.headers.getSetCookie().find((c) => c.startsWith("shells_session="));
    expect(setCookie).toMatch(/HttpOnly/);
    expect(setCookie).toMatch(/SameSite=Lax/);
    expect(setCookie).toMatch(/Path=\//);
    expect(setCookie).not.toMatch(/Secure/); // the public URL is plain http here

    const me = await asSession(browser, "GET", "/api/v1/me");
    expect(me.status).toBe(200);
    const caller = (await me.json()) as {
      actor: { type: string; id: string };
      role: string;
      keyId: null;
      csrfToken?: string;
    };
    expect(caller.actor.type).toBe("user");
    expect(caller.role).toBe("admin");
    expect(caller.keyId).toBeNull();
    expect(caller.csrfToken).toMatch(/^[\w-]{43}$/);

    const members = await fetch(`${server.url}/api/v1/members`, {
      headers: { authorization: `Bearer ${adminToken}` },
    });
    const alice = (
      (await members.json()) as {
        items: { id: string; email: string; role: string; source: string }[];
      }
    ).items.find((m) => m.id === caller.actor.id);
    expect(alice).toMatchObject({ email: "alice@example.test", role: "admin", source: "oidc" });
  });

  it("refuses a cookie-authenticated change without the session's CSRF token, and accepts it with", async () => {
    idp.groups.set("carol", ["shells-admins"]);
    const { browser } = await login("carol");
    const { csrfToken } = (await (await asSession(browser, "GET", "/api/v1/me")).json()) as {
      csrfToken: string;
    };

    const without = await asSession(browser, "POST", "/api/v1/projects", { name: "no-csrf" });
    expect(without.status).toBe(403);
    expect(((await without.json()) as { error: { code: string } }).error.code).toBe("csrf_failed");
    const wrong = await asSession(
      browser,
      "POST",
      "/api/v1/projects",
      { name: "no-csrf" },
      "x".repeat(43),
    );
    expect(wrong.status).toBe(403);
    const withToken = await asSession(
      browser,
      "POST",
      "/api/v1/projects",
      { name: "with-csrf" },
      csrfToken,
    );
    expect(withToken.status).toBe(201);

    const projects = await fetch(`${server.url}/api/v1/projects`, {
      headers: { authorization: `Bearer ${adminToken}` },
    });
    const names = ((await projects.json()) as { items: { name: string }[] }).items.map(
      (p) => p.name,
    );
    expect(names).toContain("with-csrf");
    expect(names).not.toContain("no-csrf");
  });

  it("ends the session on logout (CSRF-checked)", async () => {
    idp.groups.set("dave", ["shells-viewers"]);
    const { browser } = await login("dave");
    const { csrfToken } = (await (await asSession(browser, "GET", "/api/v1/me")).json()) as {
      csrfToken: string;
    };
    expect((await asSession(browser, "POST", "/auth/logout")).status).toBe(403);
    // Keep a copy of the cookie to prove the server forgot it, not just the browser.
    const stolen = browser.cookies(server.url).get("shells_session") ?? "";
    expect((await asSession(browser, "POST", "/auth/logout", undefined, csrfToken)).status).toBe(
      204,
    );
    expect(browser.cookies(server.url).has("shells_session")).toBe(false);
    const replay = await fetch(`${server.url}/api/v1/me`, {
      headers: { cookie: `shells_session=${stolen}` },
    });
    expect(replay.status).toBe(401);
    expect((await activity("auth.logout")).length).toBeGreaterThanOrEqual(1);
  });

  it("refuses and deletes an expired session", async () => {
    idp.groups.set("judy", ["shells-viewers"]);
    const { browser } = await login("judy");
    const me = (await (await asSession(browser, "GET", "/api/v1/me")).json()) as {
      actor: { id: string };
    };
    const db = new Database(join(dataDir, "shells.db"));
    const sessionsOfJudy = () =>
      (
        db.prepare("select count(*) as n from sessions where user_id = ?").get(me.actor.id) as {
          n: number;
        }
      ).n;
    try {
      db.prepare("update sessions set expires_at = ? where user_id = ?").run(
        new Date(Date.now() - 1000).toISOString(),
        me.actor.id,
      );
      expect((await asSession(browser, "GET", "/api/v1/me")).status).toBe(401);
      expect(sessionsOfJudy()).toBe(0);
    } finally {
      db.close();
    }
  });

  it("refuses a callback that this browser did not start", async () => {
    const response = await fetch(`${server.url}/auth/callback?code=abc&state=def`, {
      redirect: "manual",
    });
    expect(response.status).toBe(401);
  });

  it("accepts a bearer JWT signed by the issuer, with scopes from its scope claim or its role", async () => {
    idp.groups.set("erin", ["shells-devs"]);
    const roleScoped = await withBearer(
      await providerJwt({ sub: "erin", email: "erin@example.test", groups: ["shells-devs"] }),
    );
    expect(roleScoped.status).toBe(200);
    const erin = (await roleScoped.json()) as { role: string; scopes: string[]; keyId: null };
    expect(erin.role).toBe("developer");
    expect(erin.keyId).toBeNull();
    expect(erin.scopes).toContain("shells:instances:create");

    const readOnly = await providerJwt({
      sub: "erin",
      groups: ["shells-devs"],
      scope: "openid shells:instances:read",
    });
    const me = (await (await withBearer(readOnly)).json()) as { scopes: string[] };
    expect(me.scopes).toEqual(["shells:instances:read"]);
    const create = await withBearer(readOnly, "POST", "/api/v1/shells", {
      language: "python",
      runtime: "wasm",
    });
    expect(create.status).toBe(403);
  });

  it("refuses tokens with a wrong issuer, wrong audience, alg none, HS256 made with the public key, an expired exp, or a foreign key", async () => {
    const claims = { sub: "mallory", groups: ["shells-owners"] };
    const now = Math.floor(Date.now() / 1000);
    const wrongIssuer = await providerJwt(claims, { iss: "http://127.0.0.1:1/not-the-issuer" });
    const wrongAudience = await providerJwt(claims, { aud: "some-other-client" });
    const expired = await providerJwt(claims, { iatOffsetSeconds: -7200, expSeconds: -3600 });
    const algNone = new UnsecuredJWT(claims)
      .setIssuer(idp.issuer)
      .setAudience(idp.clientId)
      .setIssuedAt(now)
      .setExpirationTime(now + 300)
      .encode();
    // The classic confusion attack: HMAC "signed" with the issuer's public key as the secret.
    const publicPem = await exportSPKI(idp.publicKey);
    const hsWithPublicKey = await new SignJWT(claims)
      .setProtectedHeader({ alg: "HS256", kid: idp.kid })
      .setIssuer(idp.issuer)
      .setAudience(idp.clientId)
      .setIssuedAt(now)
      .setExpirationTime(now + 300)
      .sign(new TextEncoder().encode(publicPem));
    const foreign = await generateKeyPair("RS256");
    const foreignKey = await new SignJWT(claims)
      .setProtectedHeader({ alg: "RS256", kid: idp.kid })
      .setIssuer(idp.issuer)
      .setAudience(idp.clientId)
      .setIssuedAt(now)
      .setExpirationTime(now + 300)
      .sign(foreign.privateKey);
    minted.push(algNone, hsWithPublicKey, foreignKey);

    for (const token of [
      wrongIssuer,
      wrongAudience,
      algNone,
      hsWithPublicKey,
      expired,
      foreignKey,
    ]) {
      const response = await withBearer(token);
      expect(response.status).toBe(401);
      expect(((await response.json()) as { error: { code: string } }).error.code).toBe(
        "unauthenticated",
      );
    }
    // None of them created the user they claimed to be.
    const members = await fetch(`${server.url}/api/v1/members`, {
      headers: { authorization: `Bearer ${adminToken}` },
    });
    expect(JSON.stringify(await members.json())).not.toContain("mallory");
    // A genuine token whose claims were wrong is attributed to the org; forgeries only to the system chain.
    const reasons = (await activity("auth.failed")).map((e) => e.details.reason);
    expect(reasons).toEqual(
      expect.arrayContaining([
        "JWT refused: token expired",
        "JWT refused: wrong audience",
        "JWT refused: wrong issuer",
      ]),
    );
    expect(reasons).not.toContain("JWT refused: bad signature");
  });

  it("refuses a bearer user at once when their claims no longer map to a role, and older tokens cannot undo it", async () => {
    const before = await providerJwt(
      { sub: "frank", groups: ["shells-devs"] },
      { iatOffsetSeconds: -60 },
    );
    expect((await withBearer(before)).status).toBe(200);
    const dropped = await providerJwt({ sub: "frank", groups: ["everyone"] });
    expect((await withBearer(dropped)).status).toBe(401);
    // The older token still carries the old groups, but the directory has spoken since.
    expect((await withBearer(before)).status).toBe(401);
    const offboarded = (await activity("iam.member.offboard")).length;
    expect(offboarded).toBeGreaterThanOrEqual(1);
  });

  it("refuses a session user at their next request once the directory drops them, and lets them back when re-added", async () => {
    idp.groups.set("grace", ["shells-devs"]);
    const { browser } = await login("grace");
    expect((await asSession(browser, "GET", "/api/v1/me")).status).toBe(200);

    idp.groups.set("grace", []);
    const refused = await asSession(browser, "GET", "/api/v1/me");
    expect(refused.status).toBe(401);
    // The session is gone, not merely refused once.
    idp.groups.set("grace", ["shells-devs"]);
    expect((await asSession(browser, "GET", "/api/v1/me")).status).toBe(401);

    const again = await login("grace");
    const me = await asSession(again.browser, "GET", "/api/v1/me");
    expect(me.status).toBe(200);
    expect(((await me.json()) as { role: string }).role).toBe("developer");
  });

  it("refuses a login whose claims map to no role", async () => {
    idp.groups.set("henry", ["contractors"]);
    const { response, browser } = await login("henry");
    expect(response.status).toBe(401);
    expect(browser.cookies(server.url).has("shells_session")).toBe(false);
  });

  it("records logins and failures in the activity log without token material", async () => {
    const logins = await activity("auth.login");
    expect(logins.length).toBeGreaterThanOrEqual(4);
    expect(logins[0]?.details).toMatchObject({ method: "oidc" });
    const failed = await activity("auth.failed");
    expect(
      failed.some((e) => e.details.reason === "the directory maps the user to no Shells role"),
    ).toBe(true);

    // Every row of every chain, the system chain included, read straight from the store.
    const db = new Database(join(dataDir, "shells.db"), { readonly: true });
    const rows = db.prepare("select org_id, action, actor, details from activity").all() as {
      org_id: string;
      action: string;
      details: string;
    }[];
    db.close();
    const systemReasons = rows
      .filter((r) => r.org_id === "_system")
      .map((r) => (JSON.parse(r.details) as { reason: string }).reason);
    expect(systemReasons).toEqual(
      expect.arrayContaining([
        "JWT refused: signature algorithm not allowed",
        "JWT refused: bad signature",
      ]),
    );
    const everything = JSON.stringify(rows);
    for (const token of minted) expect(everything).not.toContain(token.split(".")[2] || token);
    expect(everything).not.toMatch(/eyJ[\w-]{10,}\.[\w-]{10,}/); // no JWT of any kind
  });

  it("keeps only a same-origin path as the place to return to after login", () => {
    expect(sameOriginPath("/shells?x=1#y")).toBe("/shells?x=1#y");
    for (const evil of [
      "https://evil.example/",
      "//evil.example/x",
      "/\\evil.example",
      "/\t/evil.example",
      "javascript:alert(1)",
      42,
      undefined,
    ])
      expect(sameOriginPath(evil)).toBe("/");
  });

  it("the hosted profile refuses to start without OIDC and never writes an admin key", async () => {
    const emptyDir = mkdtempSync(join(tmpdir(), "shells-hosted-"));
    try {
      await expect(
        startServer(
          loadConfig(
            [
              "--port",
              "0",
              "--data-dir",
              emptyDir,
              "--backend",
              "simulator",
              "--profile",
              "hosted",
              "--log-level",
              "silent",
            ],
            {},
          ),
        ),
      ).rejects.toThrow(/hosted profile needs OIDC.*SHELLS_OIDC_ISSUER.*SHELLS_OIDC_CLIENT_ID/);
      expect(existsSync(join(emptyDir, "shells.db"))).toBe(false);
    } finally {
      rmSync(emptyDir, { recursive: true, force: true });
    }

    const hosted = await start(hostedPort, { ...oidcEnv(idp), SHELLS_OIDC_ORG: "acme" }, "hosted");
    try {
      expect(hosted.server.adminTokenPath).toBeNull();
      expect(existsSync(join(hosted.dataDir, "admin-token"))).toBe(false);
      expect((await fetch(`${hosted.server.url}/api/v1/me`)).status).toBe(401);
      const config = await fetch(`${hosted.server.url}/auth/config`);
      expect(await config.json()).toEqual({
        oidcEnabled: true,
        loginUrl: "/auth/login",
        logoutUrl: "/auth/logout",
      });

      // The first OIDC login creates the org; nothing else could have.
      idp.groups.set("olivia", ["shells-owners"]);
      const browser = new TestBrowser();
      const landed = await browser.follow(
        `${hosted.server.url}/auth/login`,
        "olivia",
        (url) => url.href === `${hosted.server.url}/`,
      );
      expect(landed.url).toBe(`${hosted.server.url}/`);
      const me = await browser.request(`${hosted.server.url}/api/v1/me`);
      expect(((await me.json()) as { role: string }).role).toBe("owner");
      const db = new Database(join(hosted.dataDir, "shells.db"), { readonly: true });
      const orgs = db.prepare("select name from orgs").all();
      const keys = db.prepare("select count(*) as n from api_keys").get() as { n: number };
      db.close();
      expect(orgs).toEqual([{ name: "acme" }]);
      expect(keys.n).toBe(0);
    } finally {
      await hosted.server.close();
      rmSync(hosted.dataDir, { recursive: true, force: true });
    }
  });
});

describe("role mapping", () => {
  const map = [
    { claimValue: "devs", role: "developer" as const },
    { claimValue: "admins", role: "admin" as const },
    { claimValue: "viewers", role: "viewer" as const },
  ];

  it("takes the highest mapped role from a string or an array, and none from unmapped values", () => {
    expect(roleFromClaims({ groups: ["viewers", "admins", "devs"] }, "groups", map)).toBe("admin");
    expect(roleFromClaims({ groups: "devs" }, "groups", map)).toBe("developer");
    expect(roleFromClaims({ groups: ["contractors", 7] }, "groups", map)).toBeNull();
    expect(roleFromClaims({}, "groups", map)).toBeNull();
  });

  it("reaches nested claims by dotted path but never through the prototype", () => {
    expect(roleFromClaims({ realm_access: { roles: ["admins"] } }, "realm_access.roles", map)).toBe(
      "admin",
    );
    expect(
      roleFromClaims({ "https://x.example/groups": ["devs"] }, "https://x.example/groups", map),
    ).toBe("developer");
    expect(roleFromClaims({ groups: [] }, "groups.constructor", map)).toBeNull();
  });
});

describe("without OIDC configured", () => {
  it("says so at /auth/config and refuses JWTs and session cookies", async () => {
    const app = await createTestApp();
    try {
      const config = await app.app.inject({ method: "GET", url: "/auth/config" });
      expect(config.json()).toEqual({ oidcEnabled: false, loginUrl: null, logoutUrl: null });
      expect((await app.app.inject({ method: "GET", url: "/auth/login" })).statusCode).toBe(404);
      const jwt = await app.call("GET", "/api/v1/me", undefined, {
        authorization: "Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.",
      });
      expect(jwt.statusCode).toBe(401);
      const session = await app.app.inject({
        method: "GET",
        url: "/api/v1/me",
        headers: { cookie: `shells_session=${"a".repeat(43)}` },
      });
      expect(session.statusCode).toBe(401);
    } finally {
      await app.close();
    }
  });
});

describe("a session whose access token expires", () => {
  /** Logs `ivan` in against an IdP whose access tokens live 3 s (room for a loaded machine between login and the first probe), then runs `check` with a `/me` probe. */
  async function withShortLivedTokens(
    alwaysIssueRefreshTokens: boolean,
    check: (me: () => Promise<Response>, idp: TestIdp) => Promise<void>,
  ) {
    const port = await freePort();
    const idp = await startTestIdp({
      redirectUris: [`http://127.0.0.1:${port}/auth/callback`],
      accessTokenTtlSeconds: 3,
      alwaysIssueRefreshTokens,
    });
    const { server, dataDir } = await start(port, oidcEnv(idp));
    try {
      idp.groups.set("ivan", ["shells-viewers"]);
      const browser = new TestBrowser();
      await browser.follow(
        `${server.url}/auth/login`,
        "ivan",
        (url) => url.href === `${server.url}/`,
      );
      const me = () => browser.request(`${server.url}/api/v1/me`);
      expect((await me()).status).toBe(200);
      await new Promise((resolve) => setTimeout(resolve, 4000));
      await check(me, idp);
    } finally {
      await server.close();
      await idp.close();
      rmSync(dataDir, { recursive: true, force: true });
    }
  }

  it("renews it with the refresh token and keeps re-checking the directory", async () => {
    await withShortLivedTokens(true, async (me, idp) => {
      // userinfo refuses the expired access token; the refresh token gets a new one.
      const renewed = await me();
      expect(renewed.status).toBe(200);
      expect(((await renewed.json()) as { role: string }).role).toBe("viewer");
      idp.groups.set("ivan", ["shells-devs"]);
      expect(((await (await me()).json()) as { role: string }).role).toBe("developer");
      idp.groups.set("ivan", []);
      expect((await me()).status).toBe(401);
    });
  });

  it("ends the session when there is no refresh token to renew it with", async () => {
    await withShortLivedTokens(false, async (me) => {
      expect((await me()).status).toBe(401);
    });
  });
});
