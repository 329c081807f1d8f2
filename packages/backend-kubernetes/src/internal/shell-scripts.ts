/**
 * The fixed POSIX scripts the backend runs through the exec subresource. Paths, names and commands
 * are always passed as arguments (`"$1"`), never spliced into a script, so no input can change what
 * a script does.
 */

/**
 * Where the exec wrapper keeps its bookkeeping inside the shell container (an emptyDir); tests that
 * run the scripts on a host point `SHELLS_EXEC_DIR` elsewhere.
 */
const EXEC_DIR = "${SHELLS_EXEC_DIR:-/tmp/.shells}";

/** The cgroup's OOM kill count, or nothing where the runtime has no memory.events (gVisor may not). */
const OOM_COUNT = "sed -n 's/^oom_kill //p' /sys/fs/cgroup/memory.events 2>/dev/null";

/**
 * Runs one exec: `$1` its id, `$2` its working directory, `$3` the stdin length in bytes, `$4` the
 * wall clock in seconds, then `env NAME=VALUE… command…`.
 *
 * - stdin: exactly `$3` bytes reach the command, then EOF (`head -c`), so EOF needs no close frame
 *   and works on every protocol version;
 * - the wall clock: GNU `timeout -s KILL` makes itself a process group leader and kills the whole
 *   group when the time is up; its pid is written to `<id>.pid` first, so the backend can end the
 *   exec early (output limit, abort) by sending it ALRM, which `timeout` takes as "time is up";
 * - OOM: when the cgroup's `oom_kill` count grew while the command ran, `<id>.oom` says so, and the
 *   backend reads it for a command that died of SIGKILL.
 */
export const EXEC_WRAPPER = [
  `d=${EXEC_DIR}; mkdir -p "$d"; f="$d/$1"; before=$(${OOM_COUNT})`,
  `cd -- "$2" || exit 1`,
  `n=$3; shift 3`,
  `head -c "$n" | sh -c 'echo $$ > "$0"; exec timeout -s KILL "$@"' "$f.pid" "$@"`,
  `s=$?; after=$(${OOM_COUNT}); rm -f "$f.pid"`,
  `if [ "$s" -eq 137 ] && [ -n "$after" ] && [ "$after" != "$before" ]; then echo oom > "$f.oom"; fi`,
  `exit "$s"`,
].join("\n");

/** The argv of one exec through `EXEC_WRAPPER`. */
export function execArgv(options: {
  execId: string;
  cwd: string;
  stdinBytes: number;
  timeoutMs: number;
  env: Record<string, string>;
  command: readonly string[];
}): string[] {
  const seconds = Math.max(0.001, options.timeoutMs / 1000).toFixed(3);
  return [
    "/bin/sh",
    "-c",
    EXEC_WRAPPER,
    "sh",
    options.execId,
    options.cwd,
    String(options.stdinBytes),
    seconds,
    "env",
    ...Object.entries(options.env).map(([name, value]) => `${name}=${value}`),
    ...options.command,
  ];
}

/**
 * Starts a long-lived process: `$1` its id, `$2` its working directory, then `env NAME=VALUE…
 * command…`. On pipes it runs under `setsid`, so it leads its own process group and a signal
 * reaches its children too; on a terminal the runtime already made it a session leader with the
 * terminal as its controlling tty (setsid would take the terminal away).
 */
export const SPAWN_WRAPPER = [
  `d=${EXEC_DIR}; mkdir -p "$d"; f="$d/$1.pid"; tty=$3`,
  `cd -- "$2" || exit 1`,
  `shift 3`,
  `if [ "$tty" = 1 ]; then echo $$ > "$f"; exec "$@"; fi`,
  `exec setsid -w sh -c 'echo $$ > "$0"; exec "$@"' "$f" "$@"`,
].join("\n");

/** The argv of one spawn through `SPAWN_WRAPPER`. */
export function spawnArgv(options: {
  spawnId: string;
  cwd: string;
  tty: boolean;
  env: Record<string, string>;
  command: readonly string[];
}): string[] {
  return [
    "/bin/sh",
    "-c",
    SPAWN_WRAPPER,
    "sh",
    options.spawnId,
    options.cwd,
    options.tty ? "1" : "0",
    "env",
    ...Object.entries(options.env).map(([name, value]) => `${name}=${value}`),
    ...options.command,
  ];
}

/**
 * Sends a signal to an exec or spawn by its id: `$1` the id, `$2` the signal, `$3` `-` to signal its
 * whole process group. It waits up to 10 s for the pid file (the process may still be starting).
 */
export const SIGNAL_SCRIPT = [
  `f=${EXEC_DIR}/$1.pid; i=0`,
  `while [ ! -s "$f" ] && [ "$i" -lt 100 ]; do sleep 0.1; i=$((i+1)); done`,
  `[ -s "$f" ] || exit 0`,
  `kill -s "$2" -- "$3$(cat "$f")" 2>/dev/null || true`,
].join("\n");

/** Prints `oom` when exec `$1` died of the cgroup's OOM killer (and forgets it). */
export const OOM_CHECK_SCRIPT = `f=${EXEC_DIR}/$1.oom; [ -f "$f" ] && cat "$f" && rm -f "$f"; exit 0`;

/** Snapshot names: they become file names on the snapshots volume. */
export const SNAPSHOT_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/;

/**
 * Archives the workspace as snapshot `$1` (run in the agent container) and prints its size. The
 * archive is written beside its final name and renamed when complete, so a cut snapshot never
 * replaces a good one.
 */
export const SNAPSHOT_SCRIPT = [
  `set -e; a="/snapshots/$1.tar"`,
  `tar -C /state/workspace -cf "$a.tmp" .`,
  `mv "$a.tmp" "$a"`,
  `stat -c %s "$a"`,
].join("\n");

/**
 * Puts snapshot `$1` back as the workspace (run in a maintenance Pod while the shell's own Pod is
 * down). It unpacks beside the workspace, then swaps directories; a crash at any point leaves the
 * old workspace, or the new one (the init container finishes a swap it finds half done:
 * `PREPARE_STATE_SCRIPT`).
 */
export const RESTORE_SCRIPT = [
  `set -e; a="/snapshots/$1.tar"; cd /state`,
  `[ -f "$a" ] || { echo "no snapshot $1" >&2; exit 3; }`,
  `rm -rf workspace.restore; mkdir workspace.restore`,
  `tar -C workspace.restore -xf "$a"`,
  `rm -rf workspace.old; if [ -d workspace ]; then mv workspace workspace.old; fi`,
  `mv workspace.restore workspace`,
  `rm -rf workspace.old`,
].join("\n");

/** Removes snapshot `$1`'s archive (a snapshot replaced by name keeps only the new one). */
export const DROP_SNAPSHOT_SCRIPT = `rm -f "/snapshots/$1.tar" "/snapshots/$1.tar.tmp"`;
