import { ROLE_SCOPES, ROUTES, Role, Scope, roleAtLeast, type RouteSpec } from "@shells/contract";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { writeTar } from "@shells/sandbox";
import { addPrincipal, createTestApp, type TestApp } from "../test-support/test-app.js";
import { describeEachStore } from "../test-support/test-stores.js";

/**
 * Generated from /openapi.json and the route table's examples: every scoped route × role × scope set
 * × (own org, foreign org). A foreign resource answers exactly like an unknown one (404), a missing
 * role or scope answers 403, anything else succeeds, and a refused request changes nothing.
 */

let t: TestApp;
let caseNumber = 0;

interface Operation {
  operationId: keyof typeof ROUTES;
  method: string;
  path: string;
  scope: Scope;
}

async function operationsFromOpenApi(): Promise<Operation[]> {
  const doc = (await t.app.inject("/openapi.json")).json();
  const ops: Operation[] = [];
  for (const [path, methods] of Object.entries(
    doc.paths as Record<
      string,
      Record<string, { operationId: string; "x-required-scope"?: Scope }>
    >,
  )) {
    for (const [method, op] of Object.entries(methods)) {
      if (op["x-required-scope"])
        ops.push({
          operationId: op.operationId as keyof typeof ROUTES,
          method: method.toUpperCase(),
          path,
          scope: op["x-required-scope"],
        });
    }
  }
  return ops;
}

/** Rows a refused request must leave untouched (activity grows by design; last use is bookkeeping). */
async function stateOfEverything(): Promise<string> {
  const db = t.store.db;
  const tables = await Promise.all([
    db.selectFrom("shells").selectAll().orderBy("id").execute(),
    db.selectFrom("users").selectAll().orderBy("id").execute(),
    db.selectFrom("agents").selectAll().orderBy("id").execute(),
    db
      .selectFrom("api_keys")
      .select(["id", "revoked_at", "scopes", "principal_id"])
      .orderBy("id")
      .execute(),
    db.selectFrom("entitlements").selectAll().orderBy("id").execute(),
    db.selectFrom("projects").selectAll().orderBy("id").execute(),
    db.selectFrom("org_policies").selectAll().orderBy("org_id").execute(),
    db.selectFrom("approvals").selectAll().orderBy("id").execute(),
    db.selectFrom("shell_logs").select("id").orderBy("id").execute(),
    db.selectFrom("runs").selectAll().orderBy("id").execute(),
    db.selectFrom("bindings").selectAll().orderBy("id").execute(),
    db.selectFrom("webhooks").selectAll().orderBy("id").execute(),
    db.selectFrom("webhook_deliveries").selectAll().orderBy("id").execute(),
    db.selectFrom("project_caps").selectAll().orderBy("id").execute(),
    db.selectFrom("usage_rates").selectAll().orderBy("id").execute(),
  ]);
  return JSON.stringify(tables);
}

const ALL_SCOPES = Scope.options;

async function runCase(
  op: Operation,
  role: Role,
  scopes: readonly Scope[],
  foreign: boolean,
): Promise<void> {
  caseNumber += 1;
  const spec: RouteSpec = ROUTES[op.operationId];
  const orgA = `org-a${caseNumber}`;
  const owner = await addPrincipal(t.store, { orgId: orgA, role: "owner", scopes: ALL_SCOPES });
  const callerOrg = foreign ? `org-b${caseNumber}` : orgA;
  const caller = await addPrincipal(t.store, {
    orgId: callerOrg,
    role,
    scopes,
    entitlements: ["shells.agent.invoke"],
  });
  const asOwner = (method: string, url: string, body?: unknown) =>
    t.call(method, url, body, { authorization: `Bearer ${owner.token}` });

  let shellFixture: string | undefined;
  let webhookFixture: string | undefined;
  let bindingFixture: string | undefined;
  const fixtures: Record<string, () => Promise<string>> = {
    webhook: async () =>
      (webhookFixture ??= (
        await asOwner("POST", "/api/v1/webhooks", {
          url: "https://hooks.example.com/matrix",
          events: ["*"],
        })
      ).json().webhook.id as string),
    delivery: async () => {
      const webhookId = await fixtures.webhook!();
      await asOwner("POST", "/api/v1/shells", { language: "bash" });
      const log = await asOwner("GET", `/api/v1/webhooks/${webhookId}/deliveries`);
      expect(log.statusCode, log.body).toBe(200);
      return log.json().items[0].id as string;
    },
    shell: async () =>
      // With loopback up: a port of it can be exposed (a sealed shell has no network to serve on).
      (shellFixture ??= (
        await asOwner("POST", "/api/v1/shells", { language: "bash", network: "localhost" })
      ).json().id as string),
    portUrl: async () => {
      const shellId = await fixtures.shell!();
      const exposed = await asOwner("POST", `/api/v1/shells/${shellId}/ports`, { port: 8000 });
      expect(exposed.statusCode, exposed.body).toBe(201);
      return exposed.json().id as string;
    },
    run: async () => {
      const started = await asOwner("POST", "/api/v1/runs", {
        language: "bash",
        command: ["sh", "-c", "echo data > out.txt"],
        artifacts: ["out.txt"],
      });
      expect(started.statusCode, started.body).toBe(201);
      const runId = started.json().id as string;
      await expect
        .poll(async () => (await asOwner("GET", `/api/v1/runs/${runId}`)).json().status, {
          timeout: 10_000,
        })
        .not.toBe("running");
      return runId;
    },
    reviewableRun: async () => {
      // The owner's run, with the caller among the listed approvers (so not behind the run).
      const runId = await fixtures.run!();
      const approvers = foreign ? [owner.id] : [owner.id, caller.id];
      const policy = await asOwner("PATCH", "/api/v1/org/policy", { approvers });
      expect(policy.statusCode, policy.body).toBe(200);
      return runId;
    },
    file: async () => {
      const shellId = await fixtures.shell!();
      const res = await t.app.inject({
        method: "PUT",
        url: `/api/v1/shells/${shellId}/files/content?path=/workspace/example.txt`,
        headers: {
          authorization: `Bearer ${owner.token}`,
          "content-type": "application/octet-stream",
        },
        payload: Buffer.from("example\n"),
      });
      expect(res.statusCode, res.body).toBe(200);
      return "/workspace/example.txt";
    },
    event: async () => {
      await fixtures.shell!();
      return (await asOwner("GET", "/api/v1/activity?order=asc&limit=1")).json().items[0]
        .id as string;
    },
    checkpoint: async () => {
      await fixtures.shell!();
      return (await asOwner("POST", "/api/v1/audit/checkpoints")).json().id as string;
    },
    member: async () =>
      (
        await asOwner("POST", "/api/v1/members", {
          email: `m${caseNumber}@example.com`,
          role: "developer",
        })
      ).json().id,
    agent: async () =>
      (await asOwner("POST", "/api/v1/agents", { name: `agent-${caseNumber}` })).json().id,
    key: async () =>
      foreign ? owner.keyId : (await addPrincipalKey(caller.id, callerOrg, role)).keyId,
    grant: async () => {
      const agentId = (
        await asOwner("POST", "/api/v1/agents", { name: `granted-${caseNumber}` })
      ).json().id;
      return (
        await asOwner("POST", "/api/v1/entitlements", {
          entitlement: "shells.agent.invoke",
          principal: { type: "agent", id: agentId },
        })
      ).json().id;
    },
    binding: async () => {
      if (bindingFixture) return bindingFixture;
      const name = `binding_${caseNumber}`;
      const created = await asOwner("POST", "/api/v1/bindings", {
        name,
        upstream: "https://api.example.com",
        inject: "Authorization: Bearer {secret}",
        secret: "matrix-secret-value",
      });
      expect(created.statusCode, created.body).toBe(201);
      return (bindingFixture = name);
    },
    boundShell: async () => {
      // A shell holding the binding (the simulator routes to no egress proxy, so the grant is
      // written as a launch would): attaching it again and detaching it succeed.
      const created = await asOwner("POST", "/api/v1/shells", { language: "bash" });
      expect(created.statusCode, created.body).toBe(201);
      const name = await fixtures.binding!();
      const binding = await t.store.db
        .selectFrom("bindings")
        .select(["id", "name"])
        .where("org_id", "=", orgA)
        .where("name", "=", name)
        .executeTakeFirstOrThrow();
      await t.store.db
        .updateTable("shells")
        .set({ bindings: JSON.stringify([binding]) })
        .where("id", "=", created.json().id as string)
        .execute();
      return created.json().id as string;
    },
    template: async () => {
      const name = `template-${caseNumber}`;
      // With an image recipe, so its image routes answer too (the simulator builds at once).
      const created = await asOwner("POST", "/api/v1/templates", {
        name,
        definition: { language: "bash", image: { packages: ["jq"] } },
      });
      expect(created.statusCode, created.body).toBe(201);
      return name;
    },
    approval: async () => {
      const requester = await addPrincipal(t.store, {
        orgId: orgA,
        role: "developer",
        scopes: ALL_SCOPES,
      });
      const approvers = foreign ? [owner.id] : [owner.id, caller.id];
      const policy = await asOwner("PATCH", "/api/v1/org/policy", {
        approvers,
        approvalGates: { wipe_state: "approvers" },
      });
      expect(policy.statusCode, policy.body).toBe(200);
      const shellId = (await asOwner("POST", "/api/v1/shells", { language: "bash" })).json().id;
      const pending = await t.call(
        "POST",
        `/api/v1/shells/${shellId}/actions/wipe_state`,
        {},
        { authorization: `Bearer ${requester.token}` },
      );
      expect(pending.statusCode, pending.body).toBe(202);
      return pending.json().approval.id;
    },
    ownApproval: async () => {
      // A request parked for an approver, made by the caller (the owner's, for a foreign caller).
      const policy = await asOwner("PATCH", "/api/v1/org/policy", {
        approvers: [owner.id],
        approvalGates: { wipe_state: "approvers" },
      });
      expect(policy.statusCode, policy.body).toBe(200);
      const shellId = (await asOwner("POST", "/api/v1/shells", { language: "bash" })).json().id;
      const pending = await t.call(
        "POST",
        `/api/v1/shells/${shellId}/actions/wipe_state`,
        {},
        { authorization: `Bearer ${(foreign ? owner : caller).token}` },
      );
      expect(pending.statusCode, pending.body).toBe(202);
      return pending.json().approval.id;
    },
  };
  async function addPrincipalKey(principalId: string, orgId: string, holderRole: Role) {
    void holderRole;
    const { mintApiKey } = await import("./tokens.js");
    const key = mintApiKey();
    await t.store.db
      .insertInto("api_keys")
      .values({
        id: key.keyId,
        org_id: orgId,
        principal_type: "user",
        principal_id: principalId,
        name: "own",
        key_hash: key.keyHash,
        scopes: JSON.stringify(["shells:instances:read"]),
        created_at: new Date().toISOString(),
        revoked_at: null,
        last_used_at: null,
      })
      .execute();
    return key;
  }

  const effective = scopes.filter((s) => ROLE_SCOPES[role].includes(s));
  const needs = [op.scope, ...(spec.example?.needs ?? [])];
  // Refused before any lookup: fixtures would never be read, so none are made (this keeps the
  // matrix fast); the request still must change nothing.
  const refusedUpFront =
    !effective.includes(op.scope) ||
    (spec.minRole !== undefined && !roleAtLeast(role, spec.minRole));
  const resolve = async (value: string) => {
    const match = /^\{(\w+)\}$/.exec(value);
    const make = match ? fixtures[match[1] ?? ""] : undefined;
    if (make && refusedUpFront) return "zz-unknown-id";
    return make ? make() : value;
  };
  let url = op.path;
  let unknownUrl = op.path;
  let usesResource = false;
  for (const [name, value] of Object.entries(spec.example?.params ?? {})) {
    usesResource ||= /^\{\w+\}$/.test(value);
    url = url.replace(`{${name}}`, encodeURIComponent(await resolve(value)));
    unknownUrl = unknownUrl.replace(`{${name}}`, /^\{\w+\}$/.test(value) ? "zz-unknown-id" : value);
  }
  const query = new URLSearchParams();
  for (const [name, value] of Object.entries(spec.example?.query ?? {})) {
    usesResource ||= /^\{\w+\}$/.test(value);
    query.set(name, await resolve(value));
  }
  if (query.size > 0) {
    url = `${url}?${query.toString()}`;
    unknownUrl = `${unknownUrl}?${query.toString()}`;
  }
  let body = spec.example?.body;
  if (body !== undefined) body = JSON.parse(await resolveDeep(JSON.stringify(body)));
  async function resolveDeep(json: string): Promise<string> {
    let out = json;
    for (const placeholder of json.match(
      /\{(shell|member|agent|key|grant|approval|file|binding)\}/g,
    ) ?? []) {
      usesResource = true;
      out = out.replace(placeholder, await resolve(placeholder));
    }
    return out;
  }
  if (foreign && !usesResource) return; // the caller acts in its own org: covered by the own-org case

  const expected = refusedUpFront
    ? 403
    : foreign
      ? 404
      : needs.every((s) => effective.includes(s))
        ? "success"
        : 403;

  const before = await stateOfEverything();
  const send = async (target: string) =>
    spec.rawBody
      ? t.app.inject({
          method: op.method as "PUT",
          url: target,
          headers: {
            authorization: `Bearer ${caller.token}`,
            "content-type": spec.rawBody.contentTypes[0]!,
          },
          payload:
            spec.rawBody.contentTypes[0] === "application/x-tar"
              ? Buffer.from(await writeTar([]))
              : Buffer.from(String(body)),
        })
      : t.call(op.method, target, body, { authorization: `Bearer ${caller.token}` });
  const res = await send(url);
  const label = `${op.method} ${op.path} as ${role} with [${scopes.join(" ")}]${foreign ? " from a foreign org" : ""} → ${res.statusCode} ${res.body.slice(0, 200)}`;
  if (expected === "success") {
    expect(res.statusCode, label).toBeGreaterThanOrEqual(200);
    expect(res.statusCode, label).toBeLessThan(300);
    // What the call left running in the background (a run) ends before the next case takes its
    // snapshot of everything, so no refusal is blamed for it.
    await expect
      .poll(
        async () =>
          (
            await t.store.db
              .selectFrom("runs")
              .select("id")
              .where("status", "=", "running")
              .execute()
          ).length,
        { timeout: 10_000 },
      )
      .toBe(0);
    return;
  }
  expect(res.statusCode, label).toBe(expected);
  if (expected === 404) {
    const unknown = await send(unknownUrl);
    expect(unknown.statusCode, `${label} vs unknown id`).toBe(404);
    expect(unknown.json().error.code, label).toBe(res.json().error.code);
  }
  expect(await stateOfEverything(), `${label} changed state`).toBe(before);
}

/** How many tests the matrix's cases are spread over. */
const MATRIX_SLICES = 8;

describeEachStore((store) => {
  beforeAll(async () => {
    t = await createTestApp({ openStore: store.open });
  });
  afterAll(async () => {
    await t.close();
  });

  describe("authorization matrix generated from /openapi.json", () => {
    it("every route that takes a resource or a body carries an example, so the matrix covers it", async () => {
      for (const op of await operationsFromOpenApi()) {
        const spec: RouteSpec = ROUTES[op.operationId];
        if (spec.method !== "GET" || spec.params)
          expect(spec.example, `${op.operationId} needs an example`).toBeDefined();
      }
    });

    it("covers every operation of /openapi.json that requires a scope", async () => {
      expect((await operationsFromOpenApi()).length).toBeGreaterThan(25);
    });

    // The cases run in slices (every MATRIX_SLICES-th operation), each with its own timeout: one
    // test over every operation took minutes on a loaded host and made a slow run look like a hang.
    for (let slice = 0; slice < MATRIX_SLICES; slice += 1) {
      it(`answers 404 across orgs, 403 without role or scope, success otherwise, and refusals change nothing (operations slice ${slice + 1}/${MATRIX_SLICES})`, async () => {
        const ops = (await operationsFromOpenApi()).filter((_, i) => i % MATRIX_SLICES === slice);
        expect(ops.length).toBeGreaterThan(0);
        for (const op of ops) {
          const scopeSets: Scope[][] = [
            [...ALL_SCOPES],
            [op.scope, ...((ROUTES[op.operationId] as RouteSpec).example?.needs ?? [])],
            ALL_SCOPES.filter((s) => s !== op.scope),
          ];
          for (const role of Role.options) {
            for (const scopes of scopeSets) {
              for (const foreign of [false, true]) await runCase(op, role, scopes, foreign);
            }
          }
        }
      }, 150_000);
    }
  });
});
