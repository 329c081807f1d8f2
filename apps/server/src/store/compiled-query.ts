import type { Compilable, CompiledQuery, Kysely } from "kysely";

/** Marks where a named value goes in a query built once by `compiledOnce`. */
export type QueryParam<P extends string> = (name: P) => string;

/** Prefix of the stand-in values; a control character no id or name can hold. */
const SENTINEL = "\u0000param:";

/**
 * A query whose SQL is built and compiled once per database, then run with new values bound in
 * their places. Kysely builds an operation tree and compiles it to SQL on every call, which for a
 * point read costs as much as the read itself; the hot reads (a shell by id on every shell route)
 * skip that. `build` receives `param(name)`, a stand-in value placed wherever the query takes the
 * named value; it must be used as a bound value only (never as an identifier or raw SQL), and every
 * name in `P` is given at run time. The SQL is the dialect's own (compiled by `db`), so SQLite and
 * PostgreSQL both run it. `trx`: one of `db`'s transactions to run it in (a transaction is a new
 * object each time, so the query is compiled once for `db` and run in each of its transactions).
 */
export function compiledOnce<DB, P extends string, R>(
  build: (db: Kysely<DB>, param: QueryParam<P>) => Compilable<R>,
): (db: Kysely<DB>, values: Record<P, unknown>, trx?: Kysely<DB>) => Promise<R[]> {
  const compiled = new WeakMap<object, { query: CompiledQuery<R>; slots: (P | null)[] }>();
  return async (db, values, trx = db) => {
    let entry = compiled.get(db);
    if (!entry) {
      const query = build(db, (name) => `${SENTINEL}${name}`).compile();
      const slots = query.parameters.map((value) =>
        typeof value === "string" && value.startsWith(SENTINEL)
          ? (value.slice(SENTINEL.length) as P)
          : null,
      );
      entry = { query, slots };
      compiled.set(db, entry);
    }
    const { query, slots } = entry;
    const parameters = slots.map((name, i) => (name === null ? query.parameters[i] : values[name]));
    return (await trx.executeQuery<R>({ ...query, parameters })).rows;
  };
}
