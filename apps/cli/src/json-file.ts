import { readFile, writeFile } from "node:fs/promises";
import { resolve } from "node:path";
import { CliError, USAGE_EXIT_CODE } from "./errors.js";

/** A contract schema, as far as reading a file needs one. */
export interface FileSchema<T> {
  safeParse(
    value: unknown,
  ):
    | { success: true; data: T }
    | { success: false; error: { issues: { path: PropertyKey[]; message: string }[] } };
}

/**
 * Reads a JSON file the user names and checks it against `schema`; a missing, unreadable or
 * malformed file is a usage error that says which and why.
 */
export async function readJsonFile<T>(
  cwd: string,
  path: string,
  schema: FileSchema<T>,
  what: string,
): Promise<T> {
  const target = resolve(cwd, path);
  let text: string;
  try {
    text = await readFile(target, "utf8");
  } catch (error) {
    throw new CliError("file_unreadable", `cannot read ${path}: ${(error as Error).message}`, {
      exitCode: USAGE_EXIT_CODE,
    });
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw new CliError("invalid_file", `${path} is not JSON (expected ${what})`, {
      exitCode: USAGE_EXIT_CODE,
    });
  }
  const parsed = schema.safeParse(value);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new CliError(
      "invalid_file",
      `${path} is not ${what}: ${issue ? `${issue.path.map(String).join(".") || "(top)"}: ${issue.message}` : "it does not match"}`,
      { exitCode: USAGE_EXIT_CODE },
    );
  }
  return parsed.data;
}

/** Writes `value` as indented JSON to `path` (relative to `cwd`), readable by its owner only. */
export async function writeJsonFile(cwd: string, path: string, value: unknown): Promise<string> {
  const target = resolve(cwd, path);
  await writeFile(target, `${JSON.stringify(value, null, 2)}\n`, { mode: 0o600 });
  return target;
}
