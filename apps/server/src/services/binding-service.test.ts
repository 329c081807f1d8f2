import { existsSync } from "node:fs";
import { afterEach, describe, expect, it } from "vitest";
import { RoutingSimulator } from "../test-support/egress-link.js";
import { addPrincipal, createTestApp, type TestApp } from "../test-support/test-app.js";

// The org's secret store through the API: a secret goes in and never comes out, bad bindings get
// stable codes, and a shell granted a binding gets a URL (never the secret) and a proxy.

const SECRET = "sk_live_9d2f6c1b0a8e47f3b5";
const ALL = [
  "shells:instances:read",
  "shells:instances:create",
  "shells:instances:control",
  "shells:agent:invoke",
];
const VALID = {
  name: "payments",
  upstream: "https://api.payments.example/v2",
  inject: "Authorization: Bearer {secret}",
  paths: ["/charges/*"],
  methods: ["GET", "POST"],
  secret: SECRET,
};

let t: TestApp;
afterEach(async () => {
  await t?.close();
});

async function orgOf(app: TestApp): Promise<string> {
  return (await app.call("GET", "/api/v1/me")).json().orgId as string;
}

describe("service bindings", () => {
  it("takes a secret in, never gives it out, and records create, rotate and delete without it", async () => {
    t = await createTestApp();
    const responses: string[] = [];
    const call = async (method: string, url: string, body?: unknown) => {
      const res = await t.call(method, url, body);
      responses.push(res.body);
      return res;
    };
    const created = await call("POST", "/api/v1/bindings", VALID);
    expect(created.statusCode, created.body).toBe(201);
    expect(created.json()).toMatchObject({
      name: "payments",
      upstream: VALID.upstream,
      inject: VALID.inject,
      paths: ["/charges/*"],
      methods: ["GET", "POST"],
      envVar: "SHELLS_BINDING_PAYMENTS_URL",
    });
    expect((await call("GET", "/api/v1/bindings")).json().items).toHaveLength(1);
    expect((await call("GET", "/api/v1/bindings/payments")).statusCode).toBe(200);
    const rotated = await call("POST", "/api/v1/bindings/payments/rotate", {
      secret: `${SECRET}-rotated`,
    });
    expect(rotated.statusCode).toBe(200);
    const sealed = await t.store.db
      .selectFrom("bindings")
      .select("secret")
      .executeTakeFirstOrThrow();
    expect(sealed.secret).toMatch(/^sb1\./);
    expect(sealed.secret).not.toContain(SECRET);
    expect((await call("DELETE", "/api/v1/bindings/payments")).statusCode).toBe(200);
    expect((await call("GET", "/api/v1/bindings/payments")).json().error.code).toBe(
      "binding_not_found",
    );
    expect(await t.store.db.selectFrom("bindings").selectAll().execute()).toEqual([]);

    const history = await call("GET", "/api/v1/activity?action=binding.&limit=50&order=asc");
    expect(
      history
        .json()
        .items.map((e: { action: string; details: { name: string } }) => [
          e.action,
          e.details.name,
        ]),
    ).toEqual([
      ["binding.create", "payments"],
      ["binding.rotate", "payments"],
      ["binding.delete", "payments"],
    ]);
    const everything = await call("GET", "/api/v1/activity?limit=500");
    for (const body of [...responses, everything.body]) expect(body).not.toContain(SECRET);
  });

  it("refuses bad bindings with a stable code each, never echoing the secret", async () => {
    t = await createTestApp();
    const cases: [Record<string, unknown>, string][] = [
      [{ name: "Pay-Ments" }, "binding_name_invalid"],
      [{ upstream: "https://api.example/{secret}" }, "binding_secret_in_url"],
      [{ upstream: "http://api.example" }, "binding_upstream_not_https"],
      [{ upstream: "https://user:pw@api.example" }, "binding_upstream_invalid"],
      [{ inject: "Authorization: Bearer {secret}\r\nX-Injected: 1" }, "binding_header_invalid"],
      [{ inject: "Host: {secret}" }, "binding_header_invalid"],
      [{ inject: "Authorization: Bearer fixed" }, "binding_header_invalid"],
      [{ paths: ["charges"] }, "binding_path_invalid"],
      [{ secret: "short" }, "binding_secret_invalid"],
      [{ secret: "line\nbreak-secret" }, "binding_secret_invalid"],
      [{ methods: ["TRACE"] }, "validation_failed"],
    ];
    for (const [change, code] of cases) {
      const res = await t.call("POST", "/api/v1/bindings", { ...VALID, ...change });
      expect(res.statusCode, `${JSON.stringify(change)}: ${res.body}`).toBe(400);
      expect(res.json().error.code, JSON.stringify(change)).toBe(code);
      expect(res.body).not.toContain(SECRET);
    }
    expect((await t.call("POST", "/api/v1/bindings", VALID)).statusCode).toBe(201);
    const again = await t.call("POST", "/api/v1/bindings", VALID);
    expect([again.statusCode, again.json().error.code]).toEqual([409, "name_taken"]);
    expect(await t.store.db.selectFrom("bindings").select("name").execute()).toEqual([
      { name: "payments" },
    ]);
  });

  it("lets members read the rules and only admins manage them; another org's binding is not found", async () => {
    t = await createTestApp();
    const org = await orgOf(t);
    expect((await t.call("POST", "/api/v1/bindings", VALID)).statusCode).toBe(201);
    const developer = await addPrincipal(t.store, { orgId: org, role: "developer", scopes: ALL });
    const asDeveloper = { authorization: `Bearer ${developer.token}` };
    expect((await t.call("GET", "/api/v1/bindings", undefined, asDeveloper)).statusCode).toBe(200);
    const refused = await t.call(
      "POST",
      "/api/v1/bindings/payments/rotate",
      { secret: "x".repeat(9) },
      asDeveloper,
    );
    expect([refused.statusCode, refused.json().error.code]).toEqual([403, "forbidden"]);

    // An agent follows the same rules as for every admin route: the entitlement and the role.
    const agent = await addPrincipal(t.store, {
      orgId: org,
      role: "admin",
      type: "agent",
      scopes: ALL,
    });
    const unentitled = await t.call("GET", "/api/v1/bindings", undefined, {
      authorization: `Bearer ${agent.token}`,
    });
    expect(unentitled.json().error.code).toBe("entitlement_required");

    const stranger = await addPrincipal(t.store, {
      orgId: "org-other",
      role: "owner",
      scopes: ALL,
    });
    const asStranger = { authorization: `Bearer ${stranger.token}` };
    const foreign = await t.call("GET", "/api/v1/bindings/payments", undefined, asStranger);
    const unknown = await t.call("GET", "/api/v1/bindings/nothing", undefined, asStranger);
    expect([foreign.statusCode, foreign.json().error.code]).toEqual([404, "binding_not_found"]);
    expect(unknown.json().error.code).toBe("binding_not_found");
    expect(
      (await t.call("DELETE", "/api/v1/bindings/payments", undefined, asStranger)).statusCode,
    ).toBe(404);
    expect((await t.call("GET", "/api/v1/bindings", undefined, asStranger)).json().items).toEqual(
      [],
    );
    // Granting it to a shell of the other org is just as unknown.
    const grant = await t.call(
      "POST",
      "/api/v1/shells",
      { language: "bash", bindings: ["payments"] },
      asStranger,
    );
    expect([grant.statusCode, grant.json().error.code]).toEqual([404, "binding_not_found"]);
  });

  it("refuses to launch with a binding the org lacks, or on a backend that cannot reach the proxy", async () => {
    t = await createTestApp();
    expect((await t.call("POST", "/api/v1/bindings", VALID)).statusCode).toBe(201);
    const unknown = await t.call("POST", "/api/v1/shells", {
      language: "bash",
      bindings: ["nope"],
    });
    expect([unknown.statusCode, unknown.json().error]).toMatchObject([
      404,
      { code: "binding_not_found", details: { name: "nope" } },
    ]);
    const run = await t.call("POST", "/api/v1/runs", {
      language: "bash",
      command: ["true"],
      bindings: ["nope"],
    });
    expect(run.json().error.code).toBe("binding_not_found");
    const unrouted = await t.call("POST", "/api/v1/shells", {
      language: "bash",
      bindings: ["payments"],
    });
    expect([unrouted.statusCode, unrouted.json().error.code]).toEqual([
      422,
      "bindings_unavailable",
    ]);
    expect((await t.call("GET", "/api/v1/shells")).json().items).toEqual([]);
  });

  it("gives a shell granted a binding its URL and a proxy, never the secret, in any network mode", async () => {
    const backend = new RoutingSimulator();
    t = await createTestApp({ backends: [backend] });
    expect((await t.call("POST", "/api/v1/bindings", VALID)).statusCode).toBe(201);
    const created = await t.call("POST", "/api/v1/shells", {
      language: "bash",
      bindings: ["payments"],
      env: { PLAIN: "1" },
    });
    expect(created.statusCode, created.body).toBe(201);
    const shell = created.json();
    expect(shell).toMatchObject({
      network: "sealed",
      bindings: ["payments"],
      envKeys: ["PLAIN", "SHELLS_BINDING_PAYMENTS_URL"],
    });
    const spec = backend.specs[0];
    expect(spec?.network).toBe("sealed");
    expect(spec?.env).toEqual({
      PLAIN: "1",
      SHELLS_BINDING_PAYMENTS_URL: "http://127.0.0.1:3128/bindings/payments",
    });
    expect(spec?.egress?.socketPath).toMatch(/egress\/sh-[0-9a-z]+\.sock$/);
    expect(existsSync(spec?.egress?.socketPath ?? "")).toBe(true);
    expect(JSON.stringify(spec)).not.toContain(SECRET);
    expect(
      JSON.stringify(await t.store.db.selectFrom("shells").selectAll().execute()),
    ).not.toContain(SECRET);
    // Without bindings a sealed shell has no proxy at all.
    await t.call("POST", "/api/v1/shells", { language: "bash" });
    expect(backend.specs[1]?.egress).toBeUndefined();

    expect((await t.call("DELETE", `/api/v1/shells/${shell.id}`)).statusCode).toBe(200);
    expect(existsSync(spec?.egress?.socketPath ?? "")).toBe(false);
  });
});
