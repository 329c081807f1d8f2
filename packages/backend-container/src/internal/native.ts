import { execFile } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { access, chmod, mkdir, readFile, rename, rm, writeFile } from "node:fs/promises";
import { promisify } from "node:util";
import { fileURLToPath } from "node:url";
import { run } from "./proc.js";

/** The C sources of the helper, kept in the package beside `src/` (works from `src/` and `dist/`). */
export const NATIVE_DIR = fileURLToPath(new URL("../../native/", import.meta.url));
const SOURCES = [
  "shells-sandbox.c",
  "common.c",
  "holder.c",
  "enter.c",
  "relay.c",
  "exec.c",
  "spawn.c",
  "confine.c",
  "egress.c",
  "port.c",
  "sandbox.h",
  "confine.h",
];
const CFLAGS = ["-O2", "-Wall", "-Wextra", "-Wno-format-truncation", "-D_FORTIFY_SOURCE=2"];

const compiled = new Map<string, Promise<string>>();

/** Why the helper could not be compiled, with the packages that fix it. */
export class HelperBuildError extends Error {
  override readonly name = "HelperBuildError";
}

/**
 * Path of the compiled `shells-sandbox` helper for the current sources, compiling it on first use
 * into `<stateDir>/bin/` (named by a hash of the sources, so an upgrade compiles a fresh one and
 * running shells keep the binary they started with). Needs gcc and libseccomp-dev.
 */
export function ensureHelper(stateDir: string): Promise<string> {
  let pending = compiled.get(stateDir);
  if (!pending) {
    pending = compile(stateDir);
    // A failed compile is retried on the next call (the missing package may be installed by then).
    pending.catch(() => compiled.delete(stateDir));
    compiled.set(stateDir, pending);
  }
  return pending;
}

async function compile(stateDir: string): Promise<string> {
  const hash = createHash("sha256");
  for (const file of SOURCES) hash.update(file).update(await readFile(NATIVE_DIR + file));
  hash.update(CFLAGS.join(" "));
  const binDir = `${stateDir}/bin`;
  const binary = `${binDir}/shells-sandbox-${hash.digest("hex").slice(0, 16)}`;
  try {
    await access(binary);
    return binary;
  } catch {
    // not built yet
  }
  await mkdir(binDir, { recursive: true, mode: 0o700 });
  // Compile beside the target and rename: concurrent compiles (two control planes) both produce a
  // complete binary and the rename is atomic, so no reader ever sees half a file.
  const temporary = `${binary}.${randomBytes(4).toString("hex")}.tmp`;
  const sources = SOURCES.filter((f) => f.endsWith(".c")).map((f) => NATIVE_DIR + f);
  let result;
  try {
    result = await run("gcc", [...CFLAGS, "-o", temporary, ...sources, "-lseccomp"]);
  } catch (error) {
    throw new HelperBuildError(
      "gcc is not installed (apt-get install -y gcc libc6-dev libseccomp-dev)",
      {
        cause: error,
      },
    );
  }
  if (result.code !== 0) {
    await rm(temporary, { force: true });
    const hint = /seccomp\.h|lseccomp/.test(result.stderr)
      ? " (apt-get install -y libseccomp-dev)"
      : "";
    throw new HelperBuildError(
      `compiling shells-sandbox failed${hint}: ${result.stderr.trim().slice(-1500)}`,
    );
  }
  await chmod(temporary, 0o700);
  await rename(temporary, binary);
  return binary;
}

const execFileBuffer = promisify(execFile);

/**
 * Path of the seccomp policy every container sandbox process runs under (native/confine.c), as a
 * raw BPF program for a jail that loads the filter itself (bubblewrap's `--seccomp FD`): the wasm
 * backend's interpreter workers. Written beside the helper that exported it, so an upgraded policy
 * gets a file of its own.
 */
export async function ensureSeccompProgram(stateDir: string): Promise<string> {
  const helper = await ensureHelper(stateDir);
  const program = `${helper}.seccomp.bpf`;
  try {
    await access(program);
    return program;
  } catch {
    // not exported yet
  }
  const { stdout } = await execFileBuffer(helper, ["seccomp-bpf"], { encoding: "buffer" });
  // A BPF program is a whole number of 8-byte instructions; anything else is not one.
  if (stdout.length === 0 || stdout.length % 8 !== 0)
    throw new HelperBuildError(`shells-sandbox seccomp-bpf wrote ${stdout.length} bytes`);
  const temporary = `${program}.${randomBytes(4).toString("hex")}.tmp`;
  await writeFile(temporary, stdout, { mode: 0o644 });
  await rename(temporary, program);
  return program;
}
