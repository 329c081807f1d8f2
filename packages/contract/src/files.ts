/** Wire types of the files inside a shell: paths, entries, seeded files, read content. */
import { z } from "zod";

/**
 * A path inside a shell: absolute, or relative to `/workspace`. `..` segments and NUL bytes are
 * refused rather than normalised away, so a request means exactly what it says.
 */
export const ShellPath = z
  .string()
  .min(1)
  .max(4096)
  .refine((p) => !p.includes("\0"), "a path without NUL bytes")
  .refine((p) => !p.split("/").includes(".."), "a path without `..` segments");

/** Query naming one path. */
export const PathQuery = z.strictObject({ path: ShellPath });

/** A filesystem entry inside a shell. */
export const FileInfo = z.strictObject({
  path: z.string(),
  type: z.enum(["file", "directory", "symlink", "other"]),
  sizeBytes: z.int(),
  /** Permission bits, e.g. 420 (0o644). */
  mode: z.int(),
  modifiedAt: z.iso.datetime(),
});
export type FileInfo = z.infer<typeof FileInfo>;

/** A file seeded into a run's or shell's workspace. */
export const SeedFile = z.strictObject({
  /** Relative to `/workspace`, or absolute inside it. */
  path: z.string().min(1).max(4096),
  content: z.string().max(8 * 1024 * 1024),
  encoding: z.enum(["utf8", "base64"]).default("utf8"),
  /** Octal permission bits as a number, e.g. 0o755 = 493. */
  mode: z.int().min(0).max(0o7777).optional(),
});
export type SeedFile = z.input<typeof SeedFile>;

/** A file's content as `shells_files` `read` answers it. */
export interface FileContent {
  path: string;
  sizeBytes: number;
  encoding: "utf8" | "base64";
  content: string;
}
