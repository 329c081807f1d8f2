import { describe, expect, it } from "vitest";
import { AppError } from "../errors.js";
import { artifactMatcher } from "./run-artifacts.js";

describe("artifactMatcher", () => {
  it("matches globs the way a shell user expects", () => {
    const cases: [string[], string, boolean][] = [
      [["*.txt"], "report.txt", true],
      [["*.txt"], "out/report.txt", false],
      [["**/*.txt"], "report.txt", true],
      [["**/*.txt"], "a/b/c/report.txt", true],
      [["out/**"], "out/a/b.bin", true],
      [["out/**"], "other/a.bin", false],
      [["/workspace/*.csv"], "data.csv", true],
      [["./img/*.{png,jpg}"], "img/a.jpg", true],
      [["out/*.{png,svg}"], "out/chart.png", true],
      [["out/*.{png,svg}"], "out/chart.svg", true],
      [["out/*.{png,svg}"], "out/chart.txt", false],
      [["out/*.{png,svg}"], "out/sub/chart.svg", false],
      [["img/?.png"], "img/ab.png", false],
      [[".*"], ".hidden", true],
      [["a/**/z/*.log"], "a/z/x.log", true],
      [["a/**/z/*.log"], "a/b/c/z/x.log", true],
      [["a/**/z/*.log"], "a/b/c/x.log", false],
    ];
    for (const [globs, path, expected] of cases)
      expect(artifactMatcher(globs)(path), `${globs.join(",")} ~ ${path}`).toBe(expected);
  });

  it("refuses patterns that would make matching backtrack, with validation_failed", () => {
    for (const glob of ["*a*a*a*b", "{a,b}*{c,d}*e", "+(a|aa)*b", "x".repeat(257), "{a,b/c}"]) {
      const error = (() => {
        try {
          artifactMatcher([glob]);
          return null;
        } catch (e) {
          return e;
        }
      })();
      expect(error, glob).toBeInstanceOf(AppError);
      expect((error as AppError).code).toBe("validation_failed");
    }
    expect(() => artifactMatcher(Array.from({ length: 33 }, (_, i) => `${i}.txt`))).toThrow();
  });

  it("matches the worst allowed patterns against long paths quickly", () => {
    const globs = Array.from({ length: 32 }, (_, i) =>
      `${"**/".repeat(20)}*a*${"a".repeat(i)}b/**/*a*a`.slice(0, 256),
    );
    const matches = artifactMatcher(globs);
    const path = Array.from({ length: 16 }, () => "a".repeat(255)).join("/");
    const started = performance.now();
    for (let i = 0; i < 20; i += 1) expect(matches(path)).toBe(false);
    expect(performance.now() - started).toBeLessThan(2000);
  });
});
