import { z } from "zod";
import { AppError } from "../errors.js";

/** Encodes a position in a list as an opaque cursor. */
export function encodeCursor(position: Record<string, string | number>): string {
  return Buffer.from(JSON.stringify(position)).toString("base64url");
}

/** Decodes a cursor this server issued; anything else is `invalid_cursor`. */
export function decodeCursor<T extends z.ZodType>(cursor: string, shape: T): z.output<T> {
  try {
    const parsed = shape.safeParse(JSON.parse(Buffer.from(cursor, "base64url").toString("utf8")));
    if (parsed.success) return parsed.data;
  } catch {
    // fall through: not base64url JSON
  }
  throw new AppError(
    "invalid_cursor",
    "The cursor is not one this server issued; start again without it.",
  );
}
