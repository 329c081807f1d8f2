import { describe, expect, it } from "vitest";
import { OUTPUT_LIMIT_CHARS, boundOutput, utf8Bytes } from "./bound-output.js";

describe("boundOutput", () => {
  it("returns output within the limit unchanged", () => {
    const text = "a".repeat(OUTPUT_LIMIT_CHARS);
    expect(boundOutput(text)).toBe(text);
    expect(boundOutput("")).toBe("");
  });

  it("keeps the start and the end of a long output and says how much was cut of how much", () => {
    const text = `BEGIN${"x".repeat(100_000)}END`;
    const bounded = boundOutput(text);
    expect(bounded.startsWith("BEGIN")).toBe(true);
    expect(bounded.endsWith("END")).toBe(true);
    expect(bounded.length).toBeLessThan(OUTPUT_LIMIT_CHARS + 100);
    const marker = /\n\[… ([\d,]+) of ([\d,]+) bytes cut …\]\n/.exec(bounded);
    expect(marker?.[2]).toBe("100,008");
    const shown = bounded.replace(marker?.[0] ?? "", "");
    expect(Number(marker?.[1]?.replaceAll(",", "")) + shown.length).toBe(100_008);
  });

  it("counts bytes, not characters, and never splits a character in two", () => {
    const text = "é😀".repeat(10_000);
    expect(utf8Bytes(text)).toBe(60_000);
    const lone = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;
    // Limits whose cut points fall between the two halves of an emoji, at the head and the tail.
    for (let limit = 1000; limit < 1006; limit++) {
      const bounded = boundOutput(text, limit);
      expect(bounded).not.toMatch(lone);
      expect(bounded).toContain("of 60,000 bytes cut");
    }
  });
});
