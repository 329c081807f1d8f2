import type { z } from "zod";
import { AppError } from "../errors.js";

/**
 * Parses one part of a request (`where`: `path`, `query`, `body`, a tool's `arguments`) with its
 * schema, or throws `validation_failed` with every issue as `{ path, message, code }`. Every door —
 * REST routes, the agent gate, MCP tool calls — validates through here, so a caller sees one shape
 * of refusal whichever door it used.
 */
export function parseInput<T extends z.ZodType>(
  schema: T,
  value: unknown,
  where: string,
): z.output<T> {
  const parsed = schema.safeParse(value);
  if (parsed.success) return parsed.data;
  const issues = parsed.error.issues.map((i) => ({
    path: [where, ...i.path.map(String)].join("."),
    message: i.message,
    code: i.code,
  }));
  throw new AppError(
    "validation_failed",
    `Invalid ${where}: ${issues.map((i) => `${i.path}: ${i.message}`).join("; ")}`,
    { issues },
  );
}
