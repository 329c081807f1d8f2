import { verifyActivityChain, type ActivityEvent } from "@shells/contract";
import type { ChildProcess } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ContainerBackend } from "@shells/backend-container";
import { describe, expect, it } from "vitest";
import {
  POSTGRES_UNREACHABLE,
  createTestDatabase,
  type TestDatabase,
} from "../../apps/server/src/test-support/test-stores.js";
import { freePort, startServerProcess, waitReady } from "./harness.js";

// Two control planes over one PostgreSQL database: the replicas of a hosted deployment. Both run
// the container backend over one shared state directory (the data dir), so a shell either one
// created is one both can reach: sandboxes are processes of this host, found through the state
// directory, and they outlive the server that made them. (The simulator keeps its sandboxes in
// its own process's memory, so two processes could not share it.)

const LEASE_TTL_SECONDS = 3;
/** The base images `test/global-setup.ts` built. */
const IMAGES = process.env.SHELLS_TEST_IMAGE_CACHE ?? "/var/cache/shells-test/images";
const METRICS_TOKEN = "replicas-metrics-token-0123456789";

interface Replica {
  url: string;
  child: ChildProcess;
}

interface Answer<T> {
  status: number;
  headers: Headers;
  body: T;
}

let token = "";

async function request<T = Record<string, unknown>>(
  replica: Replica,
  method: string,
  path: string,
  body?: unknown,
  headers: Record<string, string> = {},
): Promise<Answer<T>> {
  const res = await fetch(`${replica.url}${path}`, {
    method,
    headers: {
      authorization: `Bearer ${token}`,
      ...(body === undefined ? {} : { "content-type": "application/json" }),
      ...headers,
    },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  return { status: res.status, headers: res.headers, body: (await res.json()) as T };
}

/** Whether `replica` holds the background lease, as its `/metrics` says (1 or 0). */
async function leaseHeld(replica: Replica): Promise<number | null> {
  try {
    const res = await fetch(`${replica.url}/metrics`, {
      headers: { authorization: `Bearer ${METRICS_TOKEN}` },
    });
    const line = (await res.text())
      .split("\n")
      .find((l) => l.startsWith('shells_lease_held{lease="background"}'));
    return line ? Number(line.split(" ").at(-1)) : null;
  } catch {
    return null;
  }
}

interface ShellBody {
  id: string;
  name: string;
  status: string;
}

/** Every event of the org's chain, oldest first (paged). */
async function chainOf(replica: Replica): Promise<ActivityEvent[]> {
  const events: ActivityEvent[] = [];
  let cursor: string | null = null;
  do {
    const page: Answer<{ items: ActivityEvent[]; nextCursor: string | null }> = await request(
      replica,
      "GET",
      `/api/v1/activity?order=asc&limit=200${cursor ? `&cursor=${cursor}` : ""}`,
    );
    events.push(...page.body.items);
    cursor = page.body.nextCursor;
  } while (cursor);
  return events;
}

describe.skipIf(POSTGRES_UNREACHABLE !== null)("replicas over one PostgreSQL", () => {
  it("share shells, execs, idempotency keys and one activity chain; after a kill -9 the survivor takes the lease, and nothing is lost or duplicated", async () => {
    expect(existsSync("apps/server/dist/server.js"), "build first: npm run build").toBe(true);
    const database: TestDatabase = await createTestDatabase();
    const dataDir = mkdtempSync(join(tmpdir(), "shells-replicas-"));
    const children: ChildProcess[] = [];
    try {
      await driveReplicas(database, dataDir, children);
    } finally {
      for (const child of children)
        if (child.exitCode === null && child.signalCode === null) {
          child.kill("SIGTERM");
          await new Promise((resolve) => child.once("exit", resolve));
        }
      // Sandboxes outlive their servers by design; the test's must not outlive the test, however
      // it ended.
      const backend = backendOf(dataDir);
      for (const sandbox of await backend.list()) await backend.destroy(sandbox.shellId);
      await backend.close();
      await database.drop();
      rmSync(dataDir, { recursive: true, force: true });
    }
  }, 300_000);
});

/** Starts two replicas over `database` and one data dir, and drives them (see the test's name). */
async function driveReplicas(
  database: TestDatabase,
  dataDir: string,
  children: ChildProcess[],
): Promise<void> {
  const env = {
    SHELLS_DATABASE_URL: database.url,
    SHELLS_LEASE_TTL_SECONDS: String(LEASE_TTL_SECONDS),
    SHELLS_METRICS_TOKEN: METRICS_TOKEN,
  };
  const start = async (): Promise<Replica> => {
    const port = await freePort();
    const child = startServerProcess(dataDir, port, env);
    children.push(child);
    const replica = { url: `http://127.0.0.1:${port}`, child };
    await waitReady(replica.url);
    return replica;
  };
  // One after the other: the first bootstraps the org and writes the keys both then share.
  const a = await start();
  const b = await start();
  token = readFileSync(join(dataDir, "admin-token"), "utf8").trim();

  // The first to start holds the background lease; the other waits for it.
  expect(await leaseHeld(a)).toBe(1);
  expect(await leaseHeld(b)).toBe(0);

  const create = (replica: Replica, name: string, headers: Record<string, string> = {}) =>
    request<ShellBody>(replica, "POST", "/api/v1/shells", { language: "bash", name }, headers);
  const exec = (replica: Replica, shellId: string, command: string[]) =>
    request<{ exitCode: number; stdout: string }>(
      replica,
      "POST",
      `/api/v1/shells/${shellId}/exec`,
      { command },
    );

  // Creates through both at once, and one Idempotency-Key sent to both at once.
  const idempotent = { "idempotency-key": "replicas-create-once" };
  const [a1, a2, b1, b2, onA, onB] = await Promise.all([
    create(a, "a-1"),
    create(a, "a-2"),
    create(b, "b-1"),
    create(b, "b-2"),
    create(a, "once", idempotent),
    create(b, "once", idempotent),
  ]);
  for (const made of [a1, a2, b1, b2]) expect(made.status, JSON.stringify(made.body)).toBe(201);
  // Exactly one of the two ran it; the other was told it is running, or replayed its answer.
  const first = [onA, onB].find((r) => r.status === 201 && !r.headers.get("idempotent-replayed"));
  expect(first, JSON.stringify([onA.body, onB.body])).toBeDefined();
  for (const other of [onA, onB].filter((r) => r !== first))
    expect(
      other.status === 409
        ? (other.body as unknown as { error: { code: string } }).error.code
        : other.headers.get("idempotent-replayed"),
    ).toMatch(/^(request_in_progress|true)$/);
  // Replayed on either replica: the first response, the same shell.
  for (const replica of [a, b]) {
    const replay = await create(replica, "once", idempotent);
    expect(replay.status).toBe(201);
    expect(replay.headers.get("idempotent-replayed")).toBe("true");
    expect(replay.body.id).toBe(first!.body.id);
  }
  const shells = [a1, a2, b1, b2, first!].map((r) => r.body);

  // Execs through the replica that did not create the shell, all at once.
  const execs = await Promise.all(
    shells.map((shell, i) => exec(i < 2 ? b : a, shell.id, ["sh", "-c", `echo ${shell.name}`])),
  );
  execs.forEach((answer, i) => {
    expect(answer.body, shells[i]!.name).toMatchObject({
      exitCode: 0,
      stdout: `${shells[i]!.name}\n`,
    });
  });

  // Kill the lease holder with SIGKILL in the middle of a create and an exec, while the other
  // replica serves its own.
  const cutCreate = create(a, "a-cut").catch(() => null);
  const cutExec = exec(a, a1.body.id, ["sleep", "20"]).catch(() => null);
  const duringCreate = create(b, "b-during");
  const duringExec = exec(b, b1.body.id, ["sh", "-c", "echo during"]);
  await new Promise((resolve) => setTimeout(resolve, 300));
  process.kill(a.child.pid!, "SIGKILL");
  await new Promise((resolve) => a.child.once("exit", resolve));
  const killedAt = performance.now();
  expect(await cutExec).toBeNull();
  await cutCreate;

  // The survivor takes the lease once the dead holder's lapses: within its lifetime plus a
  // third (the survivor's retry), and the time a loaded host takes to answer.
  await expect
    .poll(() => leaseHeld(b), { timeout: LEASE_TTL_SECONDS * 5000, interval: 100 })
    .toBe(1);
  const failoverMs = performance.now() - killedAt;
  expect(failoverMs).toBeLessThan(((LEASE_TTL_SECONDS * 4) / 3) * 1000 + 5000);

  // What the survivor was doing meanwhile went through.
  const during = await duringCreate;
  expect(during.status, JSON.stringify(during.body)).toBe(201);
  expect((await duringExec).body).toMatchObject({ exitCode: 0, stdout: "during\n" });
  shells.push(during.body);

  // No shell lost, none doubled; the cut create settled (its reconciliation ran on the
  // survivor), never stuck provisioning.
  await expect
    .poll(
      async () =>
        (await request<{ items: ShellBody[] }>(b, "GET", "/api/v1/shells?limit=200")).body.items
          .filter((s) => s.status === "provisioning")
          .map((s) => s.name),
      { timeout: 60_000, interval: 500 },
    )
    .toEqual([]);
  const listed = (await request<{ items: ShellBody[] }>(b, "GET", "/api/v1/shells?limit=200")).body
    .items;
  const names = listed.map((s) => s.name);
  expect(new Set(names).size, names.join(",")).toBe(names.length);
  expect(new Set(listed.map((s) => s.id)).size).toBe(listed.length);
  for (const shell of shells)
    expect(
      listed.find((s) => s.id === shell.id),
      shell.name,
    ).toMatchObject({
      name: shell.name,
      status: "running",
    });
  expect(names.filter((n) => n === "once")).toHaveLength(1);
  expect(names.filter((n) => !["a-cut", ...shells.map((s) => s.name)].includes(n))).toEqual([]);

  // Shells the dead replica made still answer through the survivor.
  expect((await exec(b, a2.body.id, ["echo", "still"])).body).toMatchObject({
    exitCode: 0,
    stdout: "still\n",
  });

  // One chain for the org: every seq once, no gap, no fork; it verifies; each shell's create
  // and each exec that answered is in it exactly once.
  const events = await chainOf(b);
  expect(events.map((e) => e.seq)).toEqual(events.map((_, i) => i + 1));
  expect(await verifyActivityChain(events)).toMatchObject({ ok: true });
  for (const shell of shells) {
    const creates = events.filter(
      (e) => e.action === "shell.create" && e.target?.id === shell.id && e.outcome === "success",
    );
    expect(creates, shell.name).toHaveLength(1);
  }
  // Each exec that answered: one per shell above, "during" on b-1, "still" on a-2.
  const answered = [...shells.slice(0, 5).map((s) => s.id), b1.body.id, a2.body.id];
  for (const shellId of new Set(answered)) {
    const ran = events.filter((e) => e.action === "shell.exec" && e.target?.id === shellId);
    expect(ran.length, shellId).toBeGreaterThanOrEqual(
      answered.filter((id) => id === shellId).length,
    );
  }
  // The signed checkpoint covers the same history: its tree has one leaf per event.
  const checkpoint = await request<{ treeSize: number }>(b, "POST", "/api/v1/audit/checkpoints");
  expect(checkpoint.status).toBe(200);
  expect(checkpoint.body.treeSize).toBeGreaterThanOrEqual(events.length);
  const after = await chainOf(b);
  expect(checkpoint.body.treeSize).toBeLessThanOrEqual(after.length);
  expect(await verifyActivityChain(after)).toMatchObject({ ok: true });

  // The survivor alone keeps serving every kind of request.
  for (const shell of listed)
    expect((await request(b, "DELETE", `/api/v1/shells/${shell.id}`)).status).toBe(200);
  expect(
    (await request<{ items: ShellBody[] }>(b, "GET", "/api/v1/shells?limit=200")).body.items,
  ).toEqual([]);
  // The sandboxes went with them, those the dead replica made too.
  const backend = backendOf(dataDir);
  expect(await backend.list()).toEqual([]);
  await backend.close();
}

/** The container backend over the replicas' shared state directory, as this test sees it. */
function backendOf(dataDir: string): ContainerBackend {
  return new ContainerBackend({ stateDir: join(dataDir, "container"), imagesDir: IMAGES });
}
