import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { mkdir, readdir, rename, rm, stat } from "node:fs/promises";
import { dirname, join } from "node:path";
import { promisify } from "node:util";
import { pyodidePackageDir, WORKER_DIR } from "./jail.js";

const run = promisify(execFile);

/** Longest a snapshot may take to make (a full Pyodide start-up, ~2.5 s on an idle 2-core host). */
const MAKE_TIMEOUT_MS = 180_000;

/**
 * Pyodide memory snapshots that Python workers start from instead of a full start-up. One file per
 * Pyodide build and load options (its name carries both), made once by a child process that loads
 * Pyodide from the package's own files and runs nothing else in it — no guest code, no shell's
 * state — so every shell's worker may share it. The directory holds nothing but snapshots: it is
 * bound read-only into each Python worker's jail.
 */
export class PythonSnapshots {
  #current: Promise<string | null> | undefined;

  constructor(
    private readonly dir: string,
    private readonly warn: (message: string) => void = (message) =>
      process.emitWarning(message, "ShellsWasmWarning"),
  ) {}

  /** The snapshot's path, made on first use; null where it cannot be made (workers start fully). */
  ensure(): Promise<string | null> {
    this.#current ??= this.#ensure().catch((error: unknown) => {
      this.warn(`python workers start without a memory snapshot: ${(error as Error).message}`);
      return null;
    });
    return this.#current;
  }

  async #ensure(): Promise<string | null> {
    const pyodide = pyodidePackageDir();
    const file = join(this.dir, `${snapshotKey(pyodide)}.bin`);
    if (
      await stat(file).then(
        (s) => s.isFile() && s.size > 0,
        () => false,
      )
    )
      return file;
    await mkdir(this.dir, { recursive: true, mode: 0o755 });
    // Written beside the directory, not in it: a worker's jail sees only finished snapshots.
    const partial = `${this.dir}.partial-${process.pid}`;
    try {
      await run(
        process.execPath,
        [join(WORKER_DIR, "make-python-snapshot.mjs"), dirname(pyodide), partial],
        { timeout: MAKE_TIMEOUT_MS, killSignal: "SIGKILL", env: { PATH: "/usr/bin:/bin" } },
      );
      await rename(partial, file);
    } finally {
      await rm(partial, { force: true });
    }
    for (const name of await readdir(this.dir))
      if (join(this.dir, name) !== file) await rm(join(this.dir, name), { force: true });
    return file;
  }
}

/** The Pyodide version and a digest of the scripts that load it: a snapshot holds for both only. */
function snapshotKey(pyodideDir: string): string {
  const { version } = JSON.parse(readFileSync(join(pyodideDir, "package.json"), "utf8")) as {
    version: string;
  };
  const digest = createHash("sha256");
  for (const script of ["python-load.mjs", "make-python-snapshot.mjs"])
    digest.update(readFileSync(join(WORKER_DIR, script)));
  return `pyodide-${version.replace(/[^\w.-]/g, "_")}-${digest.digest("hex").slice(0, 16)}`;
}
