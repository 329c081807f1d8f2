import { describe, expect, it } from "vitest";
import { redactingOutput } from "./secret-output.js";

async function streamThrough(chunks: string[], secrets: string[]): Promise<string[]> {
  const seen: string[] = [];
  const { hooks, flush } = redactingOutput(
    { onOutput: (_stream, chunk) => void seen.push(Buffer.from(chunk).toString()) },
    secrets,
  );
  for (const chunk of chunks) await hooks.onOutput?.("stdout", Buffer.from(chunk));
  await flush();
  return seen;
}

describe("streamed output with secrets", () => {
  it("masks a secret split across chunks, and never emits any part of it", async () => {
    const seen = await streamThrough(["token is hun", "ter2-xy and more"], ["hunter2-xy"]);
    expect(seen.join("")).toBe("token is [redacted] and more");
    for (const chunk of seen) expect(chunk).not.toMatch(/hun|ter2/);
  });

  it("passes output without a possible secret through chunk for chunk", async () => {
    expect(await streamThrough(["one\n", "two\n"], ["hunter2-xy"])).toEqual(["one\n", "two\n"]);
  });

  it("emits a held-back tail that turned out not to be a secret at the end", async () => {
    expect((await streamThrough(["ends with hun"], ["hunter2-xy"])).join("")).toBe("ends with hun");
  });
});
