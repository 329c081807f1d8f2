import { describe, expect, it } from "vitest";
import { parseFileIn } from "./run-command.js";

describe("shells run --file-in", () => {
  it("splits LOCAL:REMOTE at the last colon and defaults REMOTE to the file's name", () => {
    expect(parseFileIn("./data.csv:input/data.csv")).toEqual([
      { local: "./data.csv", remote: "input/data.csv" },
    ]);
    expect(parseFileIn("/tmp/a:b/c.txt:in.txt", [{ local: "x", remote: "x" }])).toEqual([
      { local: "x", remote: "x" },
      { local: "/tmp/a:b/c.txt", remote: "in.txt" },
    ]);
    expect(parseFileIn("dir/report.txt")).toEqual([
      { local: "dir/report.txt", remote: "report.txt" },
    ]);
    expect(() => parseFileIn("local:")).toThrow(/LOCAL\[:REMOTE\]/);
  });
});
