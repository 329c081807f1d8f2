import { describe, expect, it } from "vitest";
import { formatAge, formatBytes, formatKeyValues, formatTable } from "./format.js";

describe("formatTable", () => {
  it("aligns columns under upper-case headers without trailing blanks", () => {
    const table = formatTable(
      ["id", "status", "note"],
      [
        ["sh-1", "running", ""],
        ["sh-long-id", "stopped", "ttl"],
      ],
    );
    expect(table.split("\n")).toEqual([
      "ID          STATUS   NOTE",
      "sh-1        running",
      "sh-long-id  stopped  ttl",
    ]);
  });
});

describe("formatKeyValues", () => {
  it("aligns values after the longest label", () => {
    expect(
      formatKeyValues([
        ["id", "sh-1"],
        ["status", "running"],
      ]),
    ).toBe("id      sh-1\nstatus  running");
  });
});

describe("formatAge", () => {
  const now = Date.parse("2025-06-01T12:00:00Z");
  it.each([
    ["2025-06-01T11:59:55Z", "5s"],
    ["2025-06-01T11:58:30Z", "90s"],
    ["2025-06-01T11:15:00Z", "45m"],
    ["2025-06-01T06:00:00Z", "6h"],
    ["2025-05-25T12:00:00Z", "7d"],
    ["2022-06-01T12:00:00Z", "3y"],
  ])("reads %s as %s ago", (time, age) => {
    expect(formatAge(time, now)).toBe(age);
  });

  it("reads a time slightly in the future (clock skew) as 0s", () => {
    expect(formatAge("2025-06-01T12:00:03Z", now)).toBe("0s");
  });

  it("reads an unparseable time as ?", () => {
    expect(formatAge("yesterday", now)).toBe("?");
  });
});

describe("formatBytes", () => {
  it.each([
    [0, "0 B"],
    [1023, "1023 B"],
    [1536, "1.5 KiB"],
    [20 * 1024 * 1024, "20 MiB"],
  ])("writes %i as %s", (bytes, text) => {
    expect(formatBytes(bytes)).toBe(text);
  });
});
