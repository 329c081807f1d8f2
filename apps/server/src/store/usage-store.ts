import { sql, type Kysely, type Transaction } from "kysely";
import { dialectOf, greatest, least, lockShellRows } from "./dialect.js";
import type { Database, UsageIntervalTable } from "./schema.js";

/**
 * The `usage_intervals` table: metered time. Every shell in a metered state has exactly one open
 * interval (a unique index holds it to one); a state change closes it and opens the next in the
 * same transaction as the change, so no time is lost between them and none is counted twice.
 * Open intervals are checkpointed periodically; after a crash they are closed at their last
 * checkpoint (see `closeStaleIntervals`). Intervals never span a UTC hour or a rate change:
 * `rollOpenIntervals` splits them, so hourly and daily reports and costs are exact.
 */

/** States a shell is metered in; a deleted shell has no open interval. */
export const METERED_STATES: readonly string[] = ["provisioning", "running", "stopped", "error"];

/** One hour in milliseconds: intervals are split at UTC hour boundaries. */
export const HOUR_MS = 3_600_000;
/** One day in milliseconds (UTC days have no leap seconds in epoch time). */
const DAY_MS = 86_400_000;

/** Columns copied into an interval from its shell: org, project, class, creator. */
function openFromShell(
  db: Kysely<Database> | Transaction<Database>,
  shellId: string,
  state: string,
  startMs: number,
  nowMs: number,
) {
  // The CPU mark carries over from the shell's previous interval: the backend's counter does not
  // start again because the state (or the hour) changed.
  const last = (column: "cpu_epoch" | "cpu_mark_usec") =>
    sql`(SELECT ${sql.ref(`p.${column}`)} FROM usage_intervals p WHERE p.shell_id = s.id ORDER BY p.id DESC LIMIT 1)`;
  return sql`INSERT INTO usage_intervals (org_id, project_id, shell_id, runtime, state, actor_id, rates_id, started_at_ms, ended_at_ms, checkpoint_ms, cpu_epoch, cpu_mark_usec)
    SELECT s.org_id, s.project_id, s.id, s.runtime, ${state}, s.created_by_id,
      (SELECT max(r.id) FROM usage_rates r WHERE r.org_id = s.org_id),
      ${startMs}, NULL, ${Math.max(startMs, nowMs)}, ${last("cpu_epoch")}, ${last("cpu_mark_usec")}
    FROM shells s WHERE s.id = ${shellId}`.execute(db);
}

/**
 * Moves a shell's meter to `status` at `nowMs`: closes its open interval (unless it is already in
 * that state) and opens one in the new state if it is metered. Run it in the transaction that
 * records the state change.
 */
export async function moveShellMeter(
  trx: Transaction<Database>,
  shellId: string,
  status: string,
  nowMs: number,
): Promise<void> {
  await lockShellRows(trx, [shellId]);
  const open = await trx
    .selectFrom("usage_intervals")
    .select(["id", "state"])
    .where("shell_id", "=", shellId)
    .where("ended_at_ms", "is", null)
    .executeTakeFirst();
  if (open?.state === status) return;
  if (open) {
    await trx
      .updateTable("usage_intervals")
      .set({
        ended_at_ms: greatest(trx, sql.ref("started_at_ms"), nowMs),
        checkpoint_ms: greatest(trx, sql.ref("started_at_ms"), nowMs),
      })
      .where("id", "=", open.id)
      .where("ended_at_ms", "is", null)
      .execute();
  }
  if (METERED_STATES.includes(status)) await openFromShell(trx, shellId, status, nowMs, nowMs);
}

/** An open interval as the meter reads it, with its shell's backend. */
export interface OpenInterval {
  id: number;
  org_id: string;
  shell_id: string;
  state: UsageIntervalTable["state"];
  backend: string;
  started_at_ms: number;
  checkpoint_ms: number;
  cpu_epoch: string | null;
  cpu_mark_usec: number | null;
}

/** Every open interval (optionally only `running` ones, or one shell's). */
export async function openIntervals(
  db: Kysely<Database>,
  filter: { state?: "running"; shellId?: string } = {},
): Promise<OpenInterval[]> {
  let q = db
    .selectFrom("usage_intervals as u")
    .innerJoin("shells as s", "s.id", "u.shell_id")
    .select([
      "u.id",
      "u.org_id",
      "u.shell_id",
      "u.state",
      "s.backend",
      "u.started_at_ms",
      "u.checkpoint_ms",
      "u.cpu_epoch",
      "u.cpu_mark_usec",
    ])
    .where("u.ended_at_ms", "is", null);
  if (filter.state) q = q.where("u.state", "=", filter.state);
  if (filter.shellId) q = q.where("u.shell_id", "=", filter.shellId);
  return q.execute();
}

/** What one reading of a shell's backend adds to its open interval. */
export interface IntervalDelta {
  id: number;
  cpuUsec: number;
  memoryMbMs: number;
  egressBytes: number;
  /** The backend's CPU counter as read now (null: not read; the mark stays). */
  cpuEpoch: string | null;
  cpuMarkUsec: number | null;
}

/**
 * Adds readings to intervals and moves the checkpoint of every open interval (or only `ids`) to
 * `nowMs`, in one transaction. A reading may land on an interval a state change closed meanwhile:
 * it was measured while that interval was open, so it belongs there.
 */
export async function checkpointIntervals(
  db: Kysely<Database>,
  nowMs: number,
  deltas: readonly IntervalDelta[],
  ids?: readonly number[],
): Promise<void> {
  await db.transaction().execute(async (trx) => {
    if (deltas.length > 0) {
      const rows = JSON.stringify(
        deltas.map((d) => [
          d.id,
          Math.round(d.cpuUsec),
          Math.round(d.memoryMbMs),
          Math.round(d.egressBytes),
          d.cpuEpoch,
          d.cpuMarkUsec,
        ]),
      );
      // One statement for every reading, however many shells run.
      await sql`UPDATE usage_intervals AS u SET
          cpu_usec = u.cpu_usec + d.cpu,
          memory_mb_ms = u.memory_mb_ms + d.mem,
          egress_bytes = u.egress_bytes + d.egress,
          cpu_epoch = coalesce(d.epoch, u.cpu_epoch),
          cpu_mark_usec = coalesce(d.mark, u.cpu_mark_usec)
        FROM ${readings(trx, rows)} AS d
        WHERE u.id = d.id`.execute(trx);
    }
    let q = trx
      .updateTable("usage_intervals")
      .set({ checkpoint_ms: nowMs })
      .where("ended_at_ms", "is", null)
      .where("checkpoint_ms", "<", nowMs);
    if (ids) q = q.where("id", "in", ids.length > 0 ? [...ids] : [-1]);
    await q.execute();
  });
}

/**
 * The rows of a JSON array of readings `[id, cpu, mem, egress, epoch, mark]` as a table: SQLite
 * walks it with `json_each`, PostgreSQL with `jsonb_array_elements` (typed, so the sums stay
 * integers).
 */
function readings(db: Kysely<Database>, rows: string) {
  return dialectOf(db) === "postgres"
    ? sql`(SELECT (value ->> 0)::bigint AS id, (value ->> 1)::bigint AS cpu, (value ->> 2)::bigint AS mem,
          (value ->> 3)::bigint AS egress, value ->> 4 AS epoch, (value ->> 5)::bigint AS mark
          FROM jsonb_array_elements(${rows}::jsonb) AS value)`
    : sql`(SELECT value ->> 0 AS id, value ->> 1 AS cpu, value ->> 2 AS mem, value ->> 3 AS egress,
          value ->> 4 AS epoch, value ->> 5 AS mark FROM json_each(${rows}))`;
}

/**
 * Splits open intervals at `boundaryMs` (an hour boundary, or the moment an org's rates change):
 * each one that started before it is closed there and continued by a new one from there, under
 * the org's current rate card. `orgId` limits it to one org.
 */
export async function rollOpenIntervals(
  db: Kysely<Database>,
  boundaryMs: number,
  options: { orgId?: string; nowMs?: number } = {},
): Promise<number> {
  return db.transaction().execute(async (trx) => {
    let q = trx
      .selectFrom("usage_intervals")
      .select(["shell_id", "state"])
      .where("ended_at_ms", "is", null)
      .where("started_at_ms", "<", boundaryMs);
    if (options.orgId) q = q.where("org_id", "=", options.orgId);
    let due = await q.execute();
    if (due.length === 0) return 0;
    await lockShellRows(
      trx,
      due.map((d) => d.shell_id),
    );
    // What a concurrent state change did before the locks were taken stands: only intervals
    // still open and still due are split.
    due = await q.execute();
    const shellIds = due.map((d) => d.shell_id);
    for (let i = 0; i < shellIds.length; i += 500) {
      await trx
        .updateTable("usage_intervals")
        .set({
          ended_at_ms: boundaryMs,
          checkpoint_ms: greatest(trx, sql.ref("checkpoint_ms"), boundaryMs),
        })
        .where("ended_at_ms", "is", null)
        .where("shell_id", "in", shellIds.slice(i, i + 500))
        .execute();
    }
    for (const { shell_id, state } of due)
      await openFromShell(trx, shell_id, state, boundaryMs, options.nowMs ?? boundaryMs);
    return due.length;
  });
}

/** The earliest start of an open interval, or null when none is open. */
export async function earliestOpenStart(db: Kysely<Database>): Promise<number | null> {
  const row = await db
    .selectFrom("usage_intervals")
    .select((eb) => eb.fn.min("started_at_ms").as("start"))
    .where("ended_at_ms", "is", null)
    .executeTakeFirst();
  return row?.start ?? null;
}

/** An interval a crash left open, closed at its last checkpoint. */
export interface StaleInterval {
  shell_id: string;
  state: string;
  checkpoint_ms: number;
}

/**
 * At start, before anything changes a shell's state: closes every interval a previous process
 * left open at its last checkpoint (the last moment it was known to go on), and returns them.
 */
export async function closeStaleIntervals(db: Kysely<Database>): Promise<StaleInterval[]> {
  return db.transaction().execute(async (trx) => {
    const open = trx
      .selectFrom("usage_intervals")
      .select(["shell_id", "state", "checkpoint_ms"])
      .where("ended_at_ms", "is", null);
    await lockShellRows(
      trx,
      (await open.execute()).map((s) => s.shell_id),
    );
    const stale = await open.execute();
    await trx
      .updateTable("usage_intervals")
      .set({ ended_at_ms: greatest(trx, sql.ref("started_at_ms"), sql.ref("checkpoint_ms")) })
      .where("ended_at_ms", "is", null)
      .execute();
    return stale;
  });
}

/**
 * Opens an interval for every live shell in a metered state that has none. A shell found in the
 * state a stale interval recorded continues from that interval's end, so time a sandbox kept
 * running while the control plane was down is counted once; any other shell starts at `nowMs`.
 */
export async function openMissingIntervals(
  db: Kysely<Database>,
  nowMs: number,
  stale: readonly StaleInterval[],
): Promise<number> {
  const continued = new Map(stale.map((s) => [s.shell_id, s]));
  const unmetered = (q: Kysely<Database>) =>
    q
      .selectFrom("shells as s")
      .select(["s.id", "s.status"])
      .where("s.status", "in", [...METERED_STATES])
      .where((eb) =>
        eb.not(
          eb.exists(
            eb
              .selectFrom("usage_intervals as u")
              .select("u.id")
              .whereRef("u.shell_id", "=", "s.id")
              .where("u.ended_at_ms", "is", null),
          ),
        ),
      )
      .execute();
  return db.transaction().execute(async (trx) => {
    await lockShellRows(
      trx,
      (await unmetered(trx)).map((s) => s.id),
    );
    // A shell whose state changed before its lock was taken got its interval then.
    const missing = await unmetered(trx);
    for (const shell of missing) {
      const before = continued.get(shell.id);
      const startMs =
        before && before.state === shell.status ? Math.min(before.checkpoint_ms, nowMs) : nowMs;
      await openFromShell(trx, shell.id, shell.status, startMs, nowMs);
    }
    return missing.length;
  });
}

/** Which shells a usage sum counts. Times are ms; open intervals count up to `nowMs`. */
export interface UsageFilter {
  fromMs: number;
  toMs: number;
  projectId?: string;
  shellId?: string;
  actorId?: string;
  runtime?: string;
  state?: string;
}

/** Columns a usage sum can be grouped by besides class, state and rate card (always grouped). */
export type UsageGroupColumn = "hour" | "day" | "project" | "shell" | "actor";

/** One group of a usage sum: its keys and what its intervals add up to within the range. */
export interface UsageSumRow {
  period_ms: number | null;
  project: string | null;
  shell_id: string | null;
  actor_id: string | null;
  runtime: string;
  state: string;
  rates_id: number | null;
  ms: number;
  cpu_usec: number;
  memory_mb_ms: number;
  egress_bytes: number;
}

/**
 * Sums the org's metered intervals that overlap the range, clipped to it, grouped by `columns`
 * plus class, state and rate card. An interval cut by the range counts its counters pro rata.
 */
export async function sumUsage(
  db: Kysely<Database>,
  orgId: string,
  filter: UsageFilter,
  columns: readonly UsageGroupColumn[],
  nowMs: number,
): Promise<UsageSumRow[]> {
  const end = least(db, sql`coalesce(u.ended_at_ms, ${nowMs})`, filter.toMs);
  const start = greatest(db, sql.ref("u.started_at_ms"), filter.fromMs);
  const full = sql`(coalesce(u.ended_at_ms, ${nowMs}) - u.started_at_ms)`;
  const share = (column: string) =>
    sql`sum(CASE WHEN ${full} > 0 THEN ${sql.ref(`u.${column}`)} * (${end} - ${start}) / ${full} ELSE ${sql.ref(`u.${column}`)} END)`;
  // Integer division by literals (a bound JS number is a REAL in SQLite, whose division is exact).
  const period = columns.includes("hour")
    ? sql`(u.started_at_ms / ${sql.lit(HOUR_MS)}) * ${sql.lit(HOUR_MS)}`
    : columns.includes("day")
      ? sql`(u.started_at_ms / ${sql.lit(DAY_MS)}) * ${sql.lit(DAY_MS)}`
      : sql`NULL`;
  const keyed = (column: UsageGroupColumn, expression: string) =>
    columns.includes(column) ? sql.ref(expression) : sql`NULL`;
  const where = [
    sql`u.org_id = ${orgId}`,
    sql`u.started_at_ms < ${filter.toMs}`,
    sql`coalesce(u.ended_at_ms, ${nowMs}) > ${filter.fromMs}`,
    // A state left the moment it was entered took no time.
    sql`coalesce(u.ended_at_ms, ${nowMs}) > u.started_at_ms`,
  ];
  if (filter.projectId) where.push(sql`u.project_id = ${filter.projectId}`);
  if (filter.shellId) where.push(sql`u.shell_id = ${filter.shellId}`);
  if (filter.actorId) where.push(sql`u.actor_id = ${filter.actorId}`);
  if (filter.runtime) where.push(sql`u.runtime = ${filter.runtime}`);
  if (filter.state) where.push(sql`u.state = ${filter.state}`);
  const result = await sql<UsageSumRow>`SELECT
      ${period} AS period_ms,
      ${keyed("project", "p.name")} AS project,
      ${keyed("shell", "u.shell_id")} AS shell_id,
      ${keyed("actor", "u.actor_id")} AS actor_id,
      u.runtime AS runtime, u.state AS state, u.rates_id AS rates_id,
      sum(${end} - ${start}) AS ms,
      ${share("cpu_usec")} AS cpu_usec,
      ${share("memory_mb_ms")} AS memory_mb_ms,
      ${share("egress_bytes")} AS egress_bytes
    FROM usage_intervals u INNER JOIN projects p ON p.id = u.project_id
    WHERE ${sql.join(where, sql` AND `)}
    GROUP BY 1, 2, 3, 4, u.runtime, u.state, u.rates_id`.execute(db);
  return result.rows;
}

/** A stored rate card: its id, JSON and when it took effect. */
export interface RatesRow {
  id: number;
  rates: string;
  effective_at_ms: number;
}

/** The org's current rate card, or undefined when it never set one. */
export async function currentRates(
  db: Kysely<Database>,
  orgId: string,
): Promise<RatesRow | undefined> {
  return db
    .selectFrom("usage_rates")
    .select(["id", "rates", "effective_at_ms"])
    .where("org_id", "=", orgId)
    .orderBy("id", "desc")
    .limit(1)
    .executeTakeFirst();
}

/** Rate cards by id (the ones a report's intervals were metered under). */
export async function ratesByIds(
  db: Kysely<Database>,
  orgId: string,
  ids: readonly number[],
): Promise<RatesRow[]> {
  if (ids.length === 0) return [];
  return db
    .selectFrom("usage_rates")
    .select(["id", "rates", "effective_at_ms"])
    .where("org_id", "=", orgId)
    .where("id", "in", [...ids])
    .execute();
}

/**
 * Makes `rates` the org's card from `nowMs` on: stored, then the org's open intervals are split at
 * `nowMs` so time before keeps the old rates and time after gets the new ones.
 */
export async function insertRates(
  db: Kysely<Database>,
  orgId: string,
  rates: string,
  nowMs: number,
): Promise<RatesRow> {
  const row = await db
    .insertInto("usage_rates")
    .values({ org_id: orgId, rates, effective_at_ms: nowMs })
    .returning(["id", "rates", "effective_at_ms"])
    .executeTakeFirstOrThrow();
  await rollOpenIntervals(db, nowMs, { orgId, nowMs });
  return row;
}
