import {
  InMemoryMerkleTree,
  activityLeafHash,
  checkpointConsistencyProblem,
  checkpointKeyId,
  checkpointSignatureProblem,
  eventInclusionProblem,
  fromBase64,
  toHex,
  type ActivityEvent,
  type Checkpoint,
  type CheckpointKey,
  type EventProof,
} from "@shells/contract";
import pino from "pino";
import { afterEach, describe, expect, it } from "vitest";
import { SealedBox } from "../iam/sealed-box.js";
import { addPrincipal, createTestApp, type TestApp } from "../test-support/test-app.js";
import { ActivityTree } from "./activity-tree.js";
import { CheckpointService } from "./checkpoint-service.js";
import { CheckpointSigner } from "./checkpoint-signer.js";
import { sha256 } from "./sha256.js";

let t: TestApp | undefined;
afterEach(async () => {
  await t?.close();
  t = undefined;
});

async function app(): Promise<TestApp> {
  t = await createTestApp();
  return t;
}

/** Adds a few events to the owner's org: a shell created, commands run, the shell deleted. */
async function makeHistory(a: TestApp, commands = 2): Promise<void> {
  const shell = (await a.call("POST", "/api/v1/shells", { language: "bash" })).json();
  for (let i = 0; i < commands; i += 1)
    await a.call("POST", `/api/v1/shells/${shell.id}/exec`, { command: ["echo", String(i)] });
  await a.call("DELETE", `/api/v1/shells/${shell.id}`);
}

async function events(a: TestApp): Promise<ActivityEvent[]> {
  return (await a.call("GET", "/api/v1/activity?order=asc&limit=500")).json().items;
}

async function keys(a: TestApp): Promise<CheckpointKey[]> {
  return (await a.app.inject("/.well-known/shells-checkpoint-keys")).json().keys;
}

async function checkpoint(a: TestApp): Promise<Checkpoint> {
  const res = await a.call("POST", "/api/v1/audit/checkpoints");
  expect(res.statusCode, res.body).toBe(200);
  return res.json();
}

async function rootOf(history: ActivityEvent[], size = history.length): Promise<string> {
  const tree = new InMemoryMerkleTree(sha256);
  for (const event of history.slice(0, size)) tree.append(activityLeafHash(sha256, event));
  return toHex(await tree.reader().root(size));
}

describe("signed checkpoints of the activity history", () => {
  it("publishes its Ed25519 key without credentials, with the key id the hash of the key, and keeps it across restarts", async () => {
    const a = await app();
    const res = await a.app.inject("/.well-known/shells-checkpoint-keys");
    expect(res.statusCode).toBe(200);
    const [key] = res.json().keys as CheckpointKey[];
    expect(key).toMatchObject({ algorithm: "Ed25519", current: true });
    expect(checkpointKeyId(sha256, fromBase64(key!.publicKey))).toBe(key!.keyId);

    const dataDir = a.dataDir;
    await a.close({ remove: false });
    t = await createTestApp({ dataDir });
    expect(await keys(t)).toEqual([key]);
  });

  it("signs the Merkle root of the org's events, which a verifier recomputes from the history", async () => {
    const a = await app();
    await makeHistory(a);
    const signed = await checkpoint(a);
    const history = await events(a);
    expect(signed).toMatchObject({ format: "shells-checkpoint/v1", treeSize: history.length });
    expect(await checkpointSignatureProblem(sha256, signed, await keys(a))).toBeNull();
    expect(signed.rootHash).toBe(await rootOf(history));

    const forged = { ...signed, treeSize: signed.treeSize - 1 };
    expect(await checkpointSignatureProblem(sha256, forged, await keys(a))).toMatch(
      /signature does not match/,
    );
  });

  it("answers the newest checkpoint while nothing was added, and a new one once the history grew", async () => {
    const a = await app();
    await makeHistory(a);
    const first = await checkpoint(a);
    expect((await checkpoint(a)).id).toBe(first.id);
    await makeHistory(a);
    const second = await checkpoint(a);
    expect(second.treeSize).toBeGreaterThan(first.treeSize);
    const listed = (await a.call("GET", "/api/v1/audit/checkpoints")).json();
    expect(listed.items.map((c: Checkpoint) => c.id)).toEqual([second.id, first.id]);
    const paged = (await a.call("GET", "/api/v1/audit/checkpoints?limit=1")).json();
    expect(paged.items.map((c: Checkpoint) => c.id)).toEqual([second.id]);
    const rest = await a.call(
      "GET",
      `/api/v1/audit/checkpoints?limit=1&cursor=${encodeURIComponent(paged.nextCursor)}`,
    );
    expect(rest.json().items.map((c: Checkpoint) => c.id)).toEqual([first.id]);
    expect((await a.call("GET", `/api/v1/audit/checkpoints/${first.id}`)).json()).toEqual(first);
  });

  it("proves any event's inclusion, and that a later checkpoint extends an earlier one", async () => {
    const a = await app();
    await makeHistory(a);
    const early = await checkpoint(a);
    await makeHistory(a, 5);
    const late = await checkpoint(a);
    const history = await events(a);
    for (const event of history) {
      const res = await a.call("GET", `/api/v1/audit/events/${event.id}/proof`);
      expect(res.statusCode, res.body).toBe(200);
      const { proof, checkpoint: against } = res.json<EventProof>();
      expect(against.id).toBe(late.id);
      expect(eventInclusionProblem(sha256, event, proof, against)).toBeNull();
    }
    const old = history[1]!;
    const pinned = (
      await a.call("GET", `/api/v1/audit/events/${old.id}/proof?checkpoint=${early.id}`)
    ).json<EventProof>();
    expect(pinned.checkpoint.id).toBe(early.id);
    expect(eventInclusionProblem(sha256, old, pinned.proof, early)).toBeNull();

    const consistency = (
      await a.call("GET", `/api/v1/audit/consistency?from=${early.treeSize}&to=${late.id}`)
    ).json();
    expect(consistency.checkpoint.id).toBe(late.id);
    expect(checkpointConsistencyProblem(sha256, early, late, consistency.proof)).toBeNull();
  });

  it("signs a checkpoint on demand when asked for the proof of an event newer than the newest one", async () => {
    const a = await app();
    await makeHistory(a);
    const early = await checkpoint(a);
    await makeHistory(a);
    const newest = (await events(a)).at(-1)!;
    const res = await a.call("GET", `/api/v1/audit/events/${newest.id}/proof`);
    const { proof, checkpoint: against } = res.json<EventProof>();
    expect(against.id).not.toBe(early.id);
    expect(against.treeSize).toBe(newest.seq);
    expect(eventInclusionProblem(sha256, newest, proof, against)).toBeNull();
  });

  it("refuses proofs a checkpoint cannot give, and answers another org's ids as unknown", async () => {
    const a = await app();
    await makeHistory(a);
    const early = await checkpoint(a);
    await makeHistory(a);
    const newer = (await events(a)).at(-1)!;
    const late = await a.call(
      "GET",
      `/api/v1/audit/events/${newer.id}/proof?checkpoint=${early.id}`,
    );
    expect(late.statusCode).toBe(409);
    expect(late.json().error.code).toBe("not_in_checkpoint");
    const tooFar = await a.call("GET", `/api/v1/audit/consistency?from=100000&to=${early.id}`);
    expect(tooFar.json().error.code).toBe("not_in_checkpoint");
    expect((await a.call("GET", "/api/v1/audit/events/ev-nope/proof")).json().error.code).toBe(
      "event_not_found",
    );

    const stranger = await addPrincipal(a.store, {
      orgId: "org-other",
      role: "owner",
      scopes: ["shells:instances:read"],
    });
    const as = { authorization: `Bearer ${stranger.token}` };
    const foreignEvent = await a.call(
      "GET",
      `/api/v1/audit/events/${newer.id}/proof`,
      undefined,
      as,
    );
    expect(foreignEvent.statusCode).toBe(404);
    expect(foreignEvent.json().error.code).toBe("event_not_found");
    const foreignCheckpoint = await a.call(
      "GET",
      `/api/v1/audit/checkpoints/${early.id}`,
      undefined,
      as,
    );
    expect(foreignCheckpoint.json().error.code).toBe("checkpoint_not_found");
  });

  it("keeps the leaf recorded with an event, so a later edit of its row is named by its proof", async () => {
    const a = await app();
    await makeHistory(a);
    const victim = (await events(a)).find((e) => e.action === "shell.exec")!;
    await a.store.db
      .updateTable("activity")
      .set({ details: JSON.stringify({ command: "rm -rf /" }) })
      .where("id", "=", victim.id)
      .execute();
    const edited = (await events(a)).find((e) => e.id === victim.id)!;
    const { proof, checkpoint: against } = (
      await a.call("GET", `/api/v1/audit/events/${victim.id}/proof`)
    ).json<EventProof>();
    expect(eventInclusionProblem(sha256, victim, proof, against)).toBeNull();
    expect(eventInclusionProblem(sha256, edited, proof, against)).toMatch(
      `event ${victim.id} (seq ${victim.seq}) was changed after it was recorded`,
    );
  });

  it("keeps recording after the history's tail was cut, and keeps signing the tree as it was recorded", async () => {
    const a = await app();
    await makeHistory(a);
    const before = await checkpoint(a);
    await a.store.db
      .deleteFrom("activity")
      .where("seq", ">", before.treeSize - 2)
      .execute();
    await makeHistory(a);
    const after = await checkpoint(a);
    const consistency = (
      await a.call("GET", `/api/v1/audit/consistency?from=${before.treeSize}&to=${after.id}`)
    ).json();
    expect(checkpointConsistencyProblem(sha256, before, after, consistency.proof)).toBeNull();
    // The history as it now reads no longer produces the signed root of the first events.
    expect(await rootOf(await events(a), before.treeSize)).not.toBe(before.rootHash);
  });

  it("adds the leaves of events recorded before the tree existed, in order, on the next event", async () => {
    const a = await app();
    await makeHistory(a);
    await a.store.db.deleteFrom("activity_tree").execute();
    await makeHistory(a);
    const history = await events(a);
    const signed = await checkpoint(a);
    expect(signed.treeSize).toBe(history.length);
    expect(signed.rootHash).toBe(await rootOf(history));
  });

  it("on schedule, signs only the orgs whose history grew since their newest checkpoint", async () => {
    const a = await app();
    await makeHistory(a);
    await checkpoint(a);
    const other = await addPrincipal(a.store, {
      orgId: "org-busy",
      role: "owner",
      scopes: ["shells:instances:read", "shells:instances:create", "shells:instances:control"],
    });
    await a.call(
      "POST",
      "/api/v1/shells",
      { language: "bash" },
      {
        authorization: `Bearer ${other.token}`,
      },
    );
    const listed = async (token: string) =>
      (
        await a.call("GET", "/api/v1/audit/checkpoints", undefined, {
          authorization: `Bearer ${token}`,
        })
      ).json().items as Checkpoint[];
    expect(await listed(other.token)).toHaveLength(0);
    const ownBefore = await listed(a.token);
    const scheduled = new CheckpointService({
      db: a.store.db,
      tree: new ActivityTree(a.store.db),
      signer: CheckpointSigner.open(a.dataDir, SealedBox.open(a.dataDir)),
      logger: pino({ level: "silent" }),
    });
    const heard: Checkpoint[] = [];
    scheduled.onCheckpoint((signed) => heard.push(signed));
    scheduled.start(20);
    try {
      await expect.poll(async () => (await listed(other.token)).length).toBe(1);
    } finally {
      scheduled.stop();
    }
    expect(await listed(a.token)).toEqual(ownBefore);
    expect(heard.map((c) => c.orgId)).toEqual(["org-busy"]);
  });
});
