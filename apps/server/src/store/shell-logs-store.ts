import type { LogEntry } from "@shells/contract";
import type { Kysely } from "kysely";
import { compiledOnce, type QueryParam } from "./compiled-query.js";
import type { Database, ShellLogTable } from "./schema.js";

/** The `shell_logs` table: each shell's execution log, scoped by org in every function. */

/** A log line's row (every shell's lines are written through it, one per exec). */
const insertLine = compiledOnce(
  (db: Kysely<Database>, param: QueryParam<"org_id" | "shell_id" | "time" | "kind" | "message">) =>
    db
      .insertInto("shell_logs")
      .values({
        org_id: param("org_id"),
        shell_id: param("shell_id"),
        time: param("time"),
        kind: param("kind") as ShellLogTable["kind"],
        message: param("message"),
      })
      .returning("id"),
);

/**
 * Appends a log line; every hundredth insert drops entries beyond the newest `retention`. `trx`:
 * one of `db`'s transactions to write it in.
 */
export async function appendShellLog(
  db: Kysely<Database>,
  orgId: string,
  shellId: string,
  entry: { kind: LogEntry["kind"]; message: string; retention: number },
  trx: Kysely<Database> = db,
): Promise<void> {
  const [inserted] = await insertLine(
    db,
    {
      org_id: orgId,
      shell_id: shellId,
      time: new Date().toISOString(),
      kind: entry.kind,
      message: entry.message,
    },
    trx,
  );
  if (!inserted) throw new Error(`no id for the log line of shell ${shellId}`);
  if (inserted.id % 100 === 0) {
    await trx
      .deleteFrom("shell_logs")
      .where("org_id", "=", orgId)
      .where("shell_id", "=", shellId)
      .where("id", "<=", inserted.id - entry.retention)
      .execute();
  }
}

/** The newest `tail` log entries of one of the org's shells, oldest first. */
export async function tailShellLogs(
  db: Kysely<Database>,
  orgId: string,
  shellId: string,
  tail: number,
): Promise<LogEntry[]> {
  const rows = await db
    .selectFrom("shell_logs")
    .selectAll()
    .where("org_id", "=", orgId)
    .where("shell_id", "=", shellId)
    .orderBy("id", "desc")
    .limit(tail)
    .execute();
  return rows.reverse().map((r) => ({ time: r.time, kind: r.kind, message: r.message }));
}
