import { mkdtempSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { SealedBox } from "./sealed-box.js";

const dirs: string[] = [];
afterEach(() => {
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

function dataDir(): string {
  const dir = mkdtempSync(join(tmpdir(), "sealed-box-"));
  dirs.push(dir);
  return dir;
}

describe("sealed boxes", () => {
  it("creates a 0600 key file on first use and opens what it sealed after a reopen", () => {
    const dir = dataDir();
    const sealed = SealedBox.open(dir).seal("db-pass-1");
    expect(sealed).not.toContain("db-pass-1");
    expect(statSync(join(dir, "sealing-key")).mode & 0o777).toBe(0o600);
    expect(SealedBox.open(dir).unseal(sealed)).toBe("db-pass-1");
  });

  it("still opens values sealed under an old key after rotation, and seals under the new one", () => {
    const dir = dataDir();
    const before = SealedBox.open(dir);
    const old = before.seal("kept");
    SealedBox.rotate(dir);
    const after = SealedBox.open(dir);
    expect(after.currentKeyId).not.toBe(before.currentKeyId);
    expect(after.unseal(old)).toBe("kept");
    expect(after.seal("new").split(".")[1]).toBe(after.currentKeyId);
    expect(readFileSync(join(dir, "sealing-key"), "utf8").trim().split("\n")).toHaveLength(2);
  });

  it("refuses an altered value and a value sealed under a key it does not hold", () => {
    const box = SealedBox.open(dataDir());
    const sealed = box.seal("secret");
    const parts = sealed.split(".");
    parts[4] = Buffer.from("tampered").toString("base64url");
    expect(() => box.unseal(parts.join("."))).toThrow();
    expect(() => SealedBox.open(dataDir()).unseal(sealed)).toThrow(/not configured/);
  });

  it("takes its keys from SHELLS_SEALING_KEY when given", () => {
    const key = Buffer.alloc(32, 7).toString("base64");
    const sealed = SealedBox.open(dataDir(), key).seal("x");
    expect(
      SealedBox.open(dataDir(), `${Buffer.alloc(32, 9).toString("base64")},${key}`).unseal(sealed),
    ).toBe("x");
  });
});
