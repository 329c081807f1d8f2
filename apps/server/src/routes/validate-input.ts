import type { z } from "zod";
import { AppError } from "../errors.js";

/**
 * Parses one part of a request (`path`, `query`, `body`, or a tool's arguments) strictly against its
 * schema, or throws `validation_failed` listing every issue with its path prefixed by `where`. Every
 * door into the API (REST routes, the agent gate, MCP) validates through here, so they all answer
 * bad input in the same shape.
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
