import type { Run } from "@l1fe/shells";
import { describe, expect, it } from "vitest";
import { formatRun } from "./runs-command.js";

const run: Run = {
  id: "run-1",
  status: "failed",
  language: "python",
  runtime: "container",
  shellId: "sh-1",
  exitCode: 1,
  killReason: null,
  result: null,
  artifacts: [],
  output: {
    stdout: "rows: 3\n",
    stderr: 'KeyError: "total"\n',
    stdoutBytes: 10_240,
    stderrBytes: 18,
  },
  error: null,
  createdAt: "2026-01-01T00:00:00.000Z",
  finishedAt: "2026-01-01T00:00:02.000Z",
};

describe("shells runs get", () => {
  it("ends with the run's output tail, saying when the start of a stream was cut", () => {
    const text = formatRun(run, Date.parse("2026-01-01T00:01:00.000Z"));
    expect(text).toMatch(/^id\s+run-1$/m);
    expect(
      text.endsWith(
        '--- stdout (the last 8 B of 10 KiB) ---\nrows: 3\n--- stderr ---\nKeyError: "total"',
      ),
    ).toBe(true);
  });

  it("shows no output section for a run that printed nothing or predates output tails", () => {
    const quiet = { ...run, output: { stdout: "", stderr: "", stdoutBytes: 0, stderrBytes: 0 } };
    expect(formatRun(quiet, 0)).not.toContain("---");
    expect(formatRun({ ...run, output: null }, 0)).not.toContain("---");
  });
});
