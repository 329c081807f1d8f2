// Small statistics and measuring helpers shared by the benchmarks.
import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";

/** The p-th percentile (0–100) of a list of numbers, by nearest rank. */
export function percentile(values, p) {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[rank];
}

/** `{ p50, p99, n }` of a list of milliseconds. */
export function summary(values) {
  return { n: values.length, p50: percentile(values, 50), p99: percentile(values, 99) };
}

/** Times `fn` `n` times, sequentially; returns the durations in milliseconds. */
export async function timeRuns(n, fn) {
  const out = [];
  for (let i = 0; i < n; i += 1) {
    const t0 = performance.now();
    await fn(i);
    out.push(performance.now() - t0);
  }
  return out;
}

/** Formats milliseconds to two decimals. */
export const ms = (v) => `${v.toFixed(2)} ms`;

/** Prints one line of a benchmark's report. */
export function log(line = "") {
  process.stdout.write(`${line}\n`);
}

/** Runs `argv` to completion with no output; returns its wall time in milliseconds (a baseline). */
export function rawSpawn(argv) {
  const t0 = performance.now();
  const r = spawnSync(argv[0], argv.slice(1), { stdio: "ignore" });
  if (r.status !== 0) throw new Error(`${argv.join(" ")} exited ${r.status}`);
  return performance.now() - t0;
}

/** A bare bubblewrap sandbox that runs `true`: the raw baseline of the container benchmarks. */
export const RAW_BWRAP_ARGV = [
  "bwrap",
  "--ro-bind",
  "/",
  "/",
  "--dev",
  "/dev",
  "--proc",
  "/proc",
  "--unshare-all",
  "--die-with-parent",
  "true",
];

/** `n` raw `bwrap … true` spawns, one after another, summarised. */
export function rawBwrap(n) {
  return summary(Array.from({ length: n }, () => rawSpawn(RAW_BWRAP_ARGV)));
}

/**
 * `n` rounds of one raw `bwrap … true` spawn then one `op(i)`, alternating: on a host whose speed
 * drifts within a run, both then see the same moments. Each summarised; `ratio` is op p50 / raw p50.
 * `op` may answer the milliseconds it timed itself (when part of it is a wait not to count).
 */
export async function pairedWithRawBwrap(n, op) {
  const raw = [];
  const timed = [];
  for (let i = 0; i < n; i += 1) {
    raw.push(rawSpawn(RAW_BWRAP_ARGV));
    const t0 = performance.now();
    const own = await op(i);
    // An op that times only part of itself (after an untimed wait) answers its own milliseconds.
    timed.push(typeof own === "number" ? own : performance.now() - t0);
  }
  const rawSummary = summary(raw);
  const opSummary = summary(timed);
  return { raw: rawSummary, op: opSummary, ratio: opSummary.p50 / rawSummary.p50 };
}

/** A field of /proc/meminfo, in KiB. */
export function meminfoKb(field) {
  const line = readFileSync("/proc/meminfo", "utf8")
    .split("\n")
    .find((l) => l.startsWith(`${field}:`));
  return Number(line?.split(/\s+/)[1] ?? 0);
}
