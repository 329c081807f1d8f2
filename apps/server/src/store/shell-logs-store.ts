import type { LogEntry } from "@shells/contract";
import type { Kysely } from "kysely";
import type { Database } from "./schema.js";

/** The `shell_logs` table: each shell's execution log, scoped by org in every function. */

/** Appends a log line; every hundredth insert drops entries beyond the newest `retention`. */
export async function appendShellLog(
  db: Kysely<Database>,
  orgId: string,
  shellId: string,
  entry: { kind: LogEntry["kind"]; message: string; retention: number },
): Promise<void> {
  const inserted = await db
    .insertInto("shell_logs")
    .values({
      org_id: orgId,
      shell_id: shellId,
      time: new Date().toISOString(),
      kind: entry.kind,
      message: entry.message,
    })
    .returning("id")
    .executeTakeFirstOrThrow();
  if (inserted.id % 100 === 0) {
    await db
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
