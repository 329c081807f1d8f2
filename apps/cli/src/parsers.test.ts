import { describe, expect, it } from "vitest";
import {
  parseCommaList,
  parseDurationMs,
  parseDurationSeconds,
  parseEnvPair,
  parseGate,
  parsePositiveInt,
  parsePositiveNumber,
} from "./parsers.js";

describe("parseEnvPair", () => {
  it("collects repeated KEY=VALUE pairs, keeping = inside values", () => {
    const first = parseEnvPair("A=1");
    expect(parseEnvPair("URL=http://x/?a=b", first)).toEqual({ A: "1", URL: "http://x/?a=b" });
  });

  it("accepts an empty value", () => {
    expect(parseEnvPair("EMPTY=")).toEqual({ EMPTY: "" });
  });

  it.each(["NOVALUE", "=1", "1A=2", "A-B=3"])("rejects %s", (value) => {
    expect(() => parseEnvPair(value)).toThrow(/KEY=VALUE/);
  });
});

describe("parseDurationMs", () => {
  it.each([
    ["500ms", 500],
    ["30s", 30_000],
    ["1.5s", 1_500],
    ["5m", 300_000],
    ["1h", 3_600_000],
    ["10", 10_000],
  ])("reads %s as %i ms", (value, ms) => {
    expect(parseDurationMs(value)).toBe(ms);
  });

  it.each(["", "soon", "-1s", "5d", "0", "0.0001ms"])("rejects %j", (value) => {
    expect(() => parseDurationMs(value)).toThrow(/duration/);
  });
});

describe("number parsers", () => {
  it("reads whole and fractional numbers", () => {
    expect(parsePositiveInt("512")).toBe(512);
    expect(parsePositiveNumber("0.5")).toBe(0.5);
  });

  it("rejects zero, negatives and words", () => {
    for (const value of ["0", "-3", "1.5", "lots", ""])
      expect(() => parsePositiveInt(value)).toThrow();
    for (const value of ["0", "-1", "x", ""]) expect(() => parsePositiveNumber(value)).toThrow();
  });
});

describe("parseGate", () => {
  it("collects repeated ACTION=MODE pairs", () => {
    const first = parseGate("wipe_state=approvers");
    expect(parseGate("delete=confirm", first)).toEqual({
      wipe_state: "approvers",
      delete: "confirm",
    });
  });

  it.each(["wipe_state", "wipe_state=maybe", "explode=confirm", "stop=none=x"])(
    "rejects %s, naming the actions and modes",
    (value) => {
      expect(() => parseGate(value)).toThrow(/stop, wipe_state, reinstall_os, delete/);
    },
  );
});

describe("parseCommaList", () => {
  it("splits on commas and drops blanks", () => {
    expect(parseCommaList(" eu-west, us-east ,")).toEqual(["eu-west", "us-east"]);
  });

  it("reads an empty string as the empty list", () => {
    expect(parseCommaList("")).toEqual([]);
  });
});

describe("parseDurationSeconds", () => {
  it.each([
    ["90", 90],
    ["5m", 300],
    ["1h", 3600],
  ])("reads %s as %i seconds", (value, seconds) => {
    expect(parseDurationSeconds(value)).toBe(seconds);
  });

  it("refuses a fraction of a second", () => {
    expect(() => parseDurationSeconds("1500ms")).toThrow(/whole seconds/);
  });
});
