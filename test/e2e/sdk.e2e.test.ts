import ShellsClient, {
  AuthenticationError,
  ConflictError,
  NotFoundError,
  ValidationError,
  type Shell,
  type ShellCreate,
} from "@l1fe/shells";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startTestServer, type TestServer } from "./harness.js";

let server: TestServer;
let shells: ShellsClient;

beforeAll(async () => {
  server = await startTestServer();
  shells = new ShellsClient({ baseUrl: server.url, token: server.token });
});

afterAll(async () => {
  await server?.close();
});

describe("the SDK against a real server", () => {
  it("runs the DESIGN seed example: create, snapshot, wipe_state", async () => {
    const shell = await shells.create({ language: "rust", runtime: "microvm" });
    expect(shell).toMatchObject({ language: "rust", runtime: "microvm", status: "running" });

    const snapshot = await shells.action(shell.id, "snapshot");
    expect(snapshot.snapshot?.name).toBeTruthy();

    const wiped = await shells.action(shell.id, "wipe_state");
    expect(wiped).toMatchObject({
      capability: "wipe_state",
      shell: { id: shell.id, status: "running" },
    });
  });

  it("snapshots, wipes and restores filesystem state", async () => {
    const shell = await shells.create({ language: "bash" });
    await shells.exec(shell.id, { command: ["sh", "-c", "echo kept > notes.txt"] });
    await shells.action(shell.id, "snapshot", { name: "before" });

    await shells.action(shell.id, "wipe_state");
    expect((await shells.exec(shell.id, { command: ["test", "-e", "notes.txt"] })).exitCode).toBe(
      1,
    );

    await shells.action(shell.id, "restore", { snapshot: "before" });
    const read = await shells.exec(shell.id, { command: ["cat", "notes.txt"] });
    expect(read).toMatchObject({ exitCode: 0, stdout: "kept\n" });
    expect((await shells.snapshots(shell.id)).map((s) => s.name)).toContain("before");
  });

  it("returns a command's exit code and output as a result, not an error", async () => {
    const shell = await shells.create({ language: "bash" });
    const result = await shells.exec(shell.id, {
      command: ["sh", "-c", "echo out; echo err >&2; exit 3"],
    });
    expect(result).toMatchObject({ exitCode: 3, stdout: "out\n", stderr: "err\n" });
  });

  it("passes stdin, env and cwd to exec", async () => {
    const shell = await shells.create({ language: "bash", env: { FROM_SHELL: "s" } });
    expect((await shells.exec(shell.id, { command: ["cat"], stdin: "piped" })).stdout).toBe(
      "piped",
    );
    const env = await shells.exec(shell.id, {
      command: ["printenv", "FROM_EXEC"],
      env: { FROM_EXEC: "e" },
    });
    expect(env.stdout).toBe("e\n");
    expect(shell.envKeys).toEqual(["FROM_SHELL"]);
  });

  it("iterates every shell across pages, newest first, each once", async () => {
    const created: Shell[] = [];
    for (let i = 0; i < 5; i++) created.push(await shells.create({ language: "python" }));

    const seen: string[] = [];
    for await (const shell of shells.list({ language: "python", limit: 2 })) seen.push(shell.id);
    expect(seen).toEqual(created.map((s) => s.id).reverse());

    const firstPage = await shells.list({ language: "python", limit: 2 }).page();
    expect(firstPage.items).toHaveLength(2);
    expect(firstPage.nextCursor).not.toBeNull();
  });

  it("answers a replayed Idempotency-Key with the first shell instead of a second one", async () => {
    const body: ShellCreate = { language: "go", name: "idempotent-one" };
    const first = await shells.create(body, { idempotencyKey: "create-idempotent-one" });
    const again = await shells.create(body, { idempotencyKey: "create-idempotent-one" });
    expect(again.id).toBe(first.id);
    expect(await shells.list({ language: "go" }).toArray()).toHaveLength(1);
  });

  it("deletes a shell and keeps its record as deleted", async () => {
    const shell = await shells.create({ language: "node" });
    const deleted = await shells.delete(shell.id);
    expect(deleted).toMatchObject({ id: shell.id, status: "deleted" });
  });

  it("says who the token belongs to and which runtimes the server offers", async () => {
    const me = await shells.whoami();
    expect(me.scopes).toContain("shells:instances:create");
    const runtimes = await shells.runtimes();
    expect(runtimes.map((r) => r.runtime).sort()).toEqual(["container", "microvm", "wasm"]);
    // Readiness needs no credentials and reports the same classes, with who serves them.
    const ready = await new ShellsClient({ baseUrl: server.url, token: "not-a-key" }).ready();
    expect(ready).toEqual({
      status: "ready",
      runtimes,
      region: "local",
      regions: ["local"],
      capacity: [],
    });
  });
});

describe("SDK errors from a real server", () => {
  it("throws NotFoundError with code shell_not_found for an unknown shell", async () => {
    const error = await shells.get("no-such-shell").catch((e: unknown) => e);
    expect(error).toBeInstanceOf(NotFoundError);
    expect(error).toMatchObject({ code: "shell_not_found", status: 404 });
    expect((error as NotFoundError).requestId).toBeTruthy();
  });

  it("throws ConflictError with code invalid_state for an action not legal in the shell's state", async () => {
    const shell = await shells.create({ language: "bash" });
    const error = await shells.action(shell.id, "start").catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ConflictError);
    expect(error).toMatchObject({ code: "invalid_state", status: 409 });
  });

  it("throws ConflictError with code name_taken for a duplicate name", async () => {
    await shells.create({ language: "bash", name: "taken-name" });
    await expect(shells.create({ language: "bash", name: "taken-name" })).rejects.toMatchObject({
      name: "ConflictError",
      code: "name_taken",
    });
  });

  it("throws ValidationError with code validation_failed for a body the contract refuses", async () => {
    const error = await shells
      .create({ language: "cobol" } as unknown as ShellCreate)
      .catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ValidationError);
    expect(error).toMatchObject({ code: "validation_failed", status: 400 });
  });

  it("throws AuthenticationError with code unauthenticated for a wrong token", async () => {
    const stranger = new ShellsClient({ baseUrl: server.url, token: "not-a-key" });
    const error = await stranger
      .list()
      .page()
      .catch((e: unknown) => e);
    expect(error).toBeInstanceOf(AuthenticationError);
    expect(error).toMatchObject({ code: "unauthenticated", status: 401 });
  });
});

describe("SDK activity", () => {
  it("iterates the history newest first, filtered to one shell", async () => {
    const shell = await shells.create({ language: "bash" });
    await shells.exec(shell.id, { command: ["echo", "hi"] });
    await shells.action(shell.id, "restart");
    await shells.delete(shell.id);

    const actions: string[] = [];
    for await (const event of shells.activity({ shell: shell.id, limit: 2 }))
      actions.push(event.action);
    expect(actions).toEqual(["shell.delete", "shell.action.restart", "shell.exec", "shell.create"]);
  });

  it("verifies the whole chain, every event of every test above included", async () => {
    let total = 0;
    for await (const _ of shells.activity({ limit: 500 })) total += 1;
    const verification = await shells.verifyActivity();
    expect(verification).toMatchObject({ ok: true, checked: total, head: { seq: total } });
    expect(total).toBeGreaterThan(20);
  });
});
