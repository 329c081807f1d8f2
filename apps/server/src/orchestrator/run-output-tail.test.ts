import { describe, expect, it } from "vitest";
import { RunOutputTail } from "./run-output-tail.js";

const bytes = (text: string) => Buffer.from(text, "utf8");

describe("RunOutputTail", () => {
  it("keeps all of a short output and counts its bytes, each stream apart", () => {
    const tail = new RunOutputTail(64);
    tail.push("stdout", bytes("hello "));
    tail.push("stderr", bytes("warning\n"));
    tail.push("stdout", bytes("world\n"));
    expect(tail.snapshot()).toEqual({
      stdout: "hello world\n",
      stderr: "warning\n",
      stdoutBytes: 12,
      stderrBytes: 8,
    });
  });

  it("keeps only the last bytes of a long output, however it was chunked", () => {
    const tail = new RunOutputTail(10);
    for (let i = 0; i < 100; i += 1) tail.push("stdout", bytes(`${i % 10}`));
    tail.push("stdout", bytes("x".repeat(25) + "0123456789"));
    expect(tail.snapshot()).toMatchObject({ stdout: "0123456789", stdoutBytes: 135 });
    tail.push("stdout", bytes("ab"));
    expect(tail.snapshot().stdout).toBe("23456789ab");
  });

  it("drops a character the cut went through instead of showing it broken", () => {
    const tail = new RunOutputTail(5);
    // "é" is two bytes, "€" three: a 5-byte tail of "aé€" + "b" starts inside "é".
    tail.push("stdout", bytes("aé€b"));
    expect(tail.snapshot().stdout).toBe("€b");
    expect(tail.snapshot().stdoutBytes).toBe(7);
  });
});
