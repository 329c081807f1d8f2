import { Readable } from "node:stream";
import { text } from "node:stream/consumers";
import { describe, expect, it } from "vitest";
import { SecretMask } from "./secret-mask.js";

async function masked(chunks: string[], forms: string[]): Promise<string> {
  return text(Readable.from(chunks.map((c) => Buffer.from(c))).pipe(new SecretMask(forms)));
}

describe("the secret mask", () => {
  it("masks every occurrence, also one split across chunks at any point", async () => {
    const secret = "sk_live_0123456789";
    const body = `a ${secret} b ${secret}${secret} c`;
    for (let cut = 0; cut <= body.length; cut++) {
      const out = await masked([body.slice(0, cut), body.slice(cut)], [secret]);
      expect(out, `cut at ${cut}`).toBe("a [redacted] b [redacted][redacted] c");
    }
    const byteByByte = await masked([...body], [secret]);
    expect(byteByByte).toBe("a [redacted] b [redacted][redacted] c");
  });

  it("masks the longest form where forms overlap, and leaves other bytes as they are", async () => {
    const out = await masked(
      ["Bearer sk_secret_1 and sk_secret_1 and sk_secret_"],
      ["Bearer sk_secret_1", "sk_secret_1"],
    );
    expect(out).toBe("[redacted] and [redacted] and sk_secret_");
  });
});
