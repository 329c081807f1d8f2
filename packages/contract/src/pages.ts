import { z } from "zod";

/** A page of a list. `nextCursor` is null on the last page. */
export function pageOf<T extends z.ZodType>(item: T) {
  return z.strictObject({ items: z.array(item), nextCursor: z.string().nullable() });
}

/** A page of a list, as a type. */
export interface Page<T> {
  items: T[];
  nextCursor: string | null;
}
