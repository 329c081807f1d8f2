/** A unique constraint (or unique index) as each dialect reports its violation. */
export interface UniqueConstraint {
  /** Its name: PostgreSQL reports it in the error's `constraint`. */
  name: string;
  /** Its table and columns: SQLite reports them (`table.column, …`) in the error's message. */
  table: string;
  columns: readonly string[];
}

/** The unique constraints whose violation a service turns into an error of its own. */
export const UNIQUE_CONSTRAINTS = {
  /** A live shell's name within its org (a partial unique index). */
  shellName: { name: "shells_org_live_name", table: "shells", columns: ["org_id", "name"] },
  templateName: { name: "templates_org_name", table: "templates", columns: ["org_id", "name"] },
  bindingName: { name: "bindings_org_name", table: "bindings", columns: ["org_id", "name"] },
} as const satisfies Record<string, UniqueConstraint>;

/**
 * True when `error` is a unique-constraint violation raised by the store's database, whatever the
 * dialect: SQLite (better-sqlite3) reports `SQLITE_CONSTRAINT_UNIQUE` or
 * `SQLITE_CONSTRAINT_PRIMARYKEY`, PostgreSQL SQLSTATE `23505`. With `constraint`, only a violation
 * of that one counts.
 */
export function isUniqueViolation(error: unknown, constraint?: UniqueConstraint): boolean {
  if (typeof error !== "object" || error === null) return false;
  const {
    code,
    constraint: named,
    message,
  } = error as {
    code?: unknown;
    constraint?: unknown;
    message?: unknown;
  };
  if (code === "23505") return constraint === undefined || named === constraint.name;
  if (code !== "SQLITE_CONSTRAINT_UNIQUE" && code !== "SQLITE_CONSTRAINT_PRIMARYKEY") return false;
  if (constraint === undefined) return true;
  const columns = constraint.columns.map((c) => `${constraint.table}.${c}`).join(", ");
  return typeof message === "string" && message.endsWith(`constraint failed: ${columns}`);
}
