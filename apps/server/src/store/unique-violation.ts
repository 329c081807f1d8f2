/**
 * True when `error` is a unique-constraint violation raised by the store's database, whatever the
 * dialect: SQLite (better-sqlite3) reports `SQLITE_CONSTRAINT_UNIQUE` or `SQLITE_CONSTRAINT_PRIMARYKEY`,
 * PostgreSQL SQLSTATE `23505`. With `constraint`, only a violation of that constraint counts:
 * PostgreSQL names it in `constraint`; SQLite names the columns (`table.column, …`) in its message,
 * so there `constraint` may be a table name, a column list, or an index name.
 */
export function isUniqueViolation(error: unknown, constraint?: string): boolean {
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
  if (code === "23505") return constraint === undefined || named === constraint;
  if (code !== "SQLITE_CONSTRAINT_UNIQUE" && code !== "SQLITE_CONSTRAINT_PRIMARYKEY") return false;
  return constraint === undefined || (typeof message === "string" && message.includes(constraint));
}
