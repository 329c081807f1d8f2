#!/usr/bin/env node
// Runs the whole suite: builds (incrementally) so the CLI's end-to-end tests have a binary, runs
// vitest, and ends with the plain `N passed, N failed` line CI reads.
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, rmSync } from "node:fs";

// The live end-to-end tests (SDK and CLI) run on real container sandboxes where this host can run
// them (as root); elsewhere they fall back to the simulator for what it models.
if (process.env.SHELLS_TEST_BACKEND === undefined && process.getuid?.() === 0) {
  process.env.SHELLS_TEST_BACKEND = "container";
}
const run = (cmd, args) => spawnSync(cmd, args, { stdio: "inherit", env: process.env });

const build = run("npx", ["tsc", "-b"]);
if (build.status !== 0) {
  console.log("0 passed, 1 failed");
  process.exit(1);
}
mkdirSync("test-results", { recursive: true });
const report = "test-results/vitest.json";
rmSync(report, { force: true });
const vitest = run("npx", [
  "vitest",
  "run",
  "--reporter=default",
  "--reporter=json",
  `--outputFile.json=${report}`,
  ...process.argv.slice(2),
]);
let passed = 0;
let failed = 0;
if (existsSync(report)) {
  const result = JSON.parse(readFileSync(report, "utf8"));
  passed = result.numPassedTests;
  failed =
    result.numFailedTests +
    (result.numFailedTestSuites && !result.numFailedTests ? result.numFailedTestSuites : 0);
} else {
  failed = 1;
}
if (vitest.status !== 0 && failed === 0) failed = 1;
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed === 0 && vitest.status === 0 ? 0 : 1);
