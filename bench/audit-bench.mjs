#!/usr/bin/env node
// Benchmarks signed checkpoints over a large activity history, through the real API on loopback:
// what each recorded event costs with its Merkle leaf, signing a checkpoint, an inclusion proof,
// a consistency proof, the proofs of an evidence bundle, and `shells audit verify --checkpoint`
// (the whole history fetched and re-hashed on the client). The baseline measured in the same run
// is the same appends into a store without the tree (head read, chain hash, insert).
//
//   npm run build && node bench/audit-bench.mjs
//   BENCH_EVENTS=20000 node bench/audit-bench.mjs
import ShellsClient from "@l1fe/shells";
import { loadConfig, openSqliteStore, startServer } from "@shells/server";
import { activityEventHash, GENESIS_HASH } from "@shells/contract";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { verifyAgainstCheckpoint } from "../apps/cli/dist/checkpoint-verification.js";
import { ActivityService } from "../apps/server/dist/services/activity-service.js";
import { log, ms, summary, timeRuns } from "./lib.mjs";

const EVENTS = Number(process.env.BENCH_EVENTS ?? 100_000);
const PROOFS = Number(process.env.BENCH_PROOFS ?? 200);

const fmt = ({ n, p50, p99 }) => `p50 ${ms(p50)}  p99 ${ms(p99)}  (n=${n})`;

log(`# Shells audit checkpoint benchmark — ${new Date().toISOString()} — node ${process.version}`);
log(`history: ${EVENTS} events in one org`);

const dataDir = mkdtempSync(join(tmpdir(), "shells-audit-bench-"));
try {
  // --- the history -------------------------------------------------------------------------------
  let server = await startServer(
    loadConfig(
      ["--port", "0", "--data-dir", dataDir, "--backend", "simulator", "--log-level", "error"],
      {
        SHELLS_CHECKPOINT_INTERVAL_SECONDS: "0",
      },
    ),
  );
  const token = readFileSync(join(dataDir, "admin-token"), "utf8").trim();
  const { orgId } = await new ShellsClient({ baseUrl: server.url, token }).whoami();
  await server.close();

  const event = (i) => ({
    orgId,
    actor: { type: "user", id: "u-bench", keyId: "key-bench" },
    action: i % 3 === 0 ? "shell.exec" : "shell.files.write",
    target: { type: "shell", id: `sh-${i % 97}` },
    outcome: "success",
    details: { command: `python3 job.py --part ${i}`, exitCode: 0, durationMs: i % 1000 },
  });

  const store = await openSqliteStore(join(dataDir, "shells.db"));
  const activity = new ActivityService(store.db);
  const t0 = performance.now();
  for (let i = 0; i < EVENTS; i += 1) await activity.record(event(i));
  const withTree = (performance.now() - t0) / EVENTS;
  await store.close();

  // Baseline: the same appends (read the head, chain hash, insert, in one transaction), no tree.
  const baseStore = await openSqliteStore(join(dataDir, "baseline.db"));
  const sample = Math.min(EVENTS, 20_000);
  const t1 = performance.now();
  for (let i = 0; i < sample; i += 1) {
    await baseStore.db.transaction().execute(async (trx) => {
      const last = await trx
        .selectFrom("activity")
        .select(["seq", "hash"])
        .where("org_id", "=", orgId)
        .orderBy("seq", "desc")
        .limit(1)
        .executeTakeFirst();
      const fields = {
        ...event(i),
        seq: (last?.seq ?? 0) + 1,
        time: new Date().toISOString(),
        prevHash: last?.hash ?? GENESIS_HASH,
      };
      await trx
        .insertInto("activity")
        .values({
          id: `ev-${i}`,
          org_id: orgId,
          seq: fields.seq,
          actor: "{}",
          actor_id: "u",
          action: "shell.exec",
          target_type: "shell",
          target_id: "sh",
          outcome: "success",
          details: JSON.stringify(fields.details),
          time: fields.time,
          prev_hash: fields.prevHash,
          hash: await activityEventHash(fields),
        })
        .execute();
    });
  }
  const baseline = (performance.now() - t1) / sample;
  await baseStore.close();
  log(`record one event: ${ms(withTree)} with its Merkle leaf and subtrees (chain hash included)`);
  log(`  baseline, the same append (chain hash included) without the tree: ${ms(baseline)}`);

  // --- the API -----------------------------------------------------------------------------------
  server = await startServer(
    loadConfig(
      ["--port", "0", "--data-dir", dataDir, "--backend", "simulator", "--log-level", "error"],
      {
        SHELLS_CHECKPOINT_INTERVAL_SECONDS: "0",
      },
    ),
  );
  const client = new ShellsClient({ baseUrl: server.url, token });
  const [sign] = await timeRuns(1, () => client.audit.checkpoint());
  log(`sign a checkpoint of ${EVENTS} events: ${ms(sign)}`);
  const saved = await client.audit.checkpoint();

  const events = [];
  for await (const e of client.activity({ order: "asc", limit: 500 })) {
    if (events.length >= EVENTS) break;
    if (Math.random() < PROOFS / EVENTS) events.push(e);
  }
  const proofs = await timeRuns(events.length, (i) =>
    client.audit.eventProof(events[i].id, { checkpoint: saved.id }),
  );
  log(`inclusion proof of one event (HTTP, fresh reader each): ${fmt(summary(proofs))}`);

  // Grow the history a little, so the consistency proof spans two different trees.
  await client.create({ language: "bash", name: "grown" });
  const newer = await client.audit.checkpoint();
  const consistency = await timeRuns(20, (i) =>
    client.audit.consistency(Math.max(1, Math.floor(((i + 1) / 21) * saved.treeSize)), {
      to: newer.id,
    }),
  );
  log(`consistency proof between two checkpoints (HTTP): ${fmt(summary(consistency))}`);

  const [verify] = await timeRuns(1, async () => {
    const verification = await verifyAgainstCheckpoint(client, saved);
    if (!verification.ok) throw new Error(verification.problem ?? "verification failed");
  });
  log(
    `shells audit verify --checkpoint (fetch ${newer.treeSize} events in pages of 500, re-hash, 2 roots): ${ms(verify)}`,
  );
  await server.close();
} finally {
  rmSync(dataDir, { recursive: true, force: true });
}
