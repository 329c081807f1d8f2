import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { resolveConnection, resolveUrl } from "./connection.js";

describe("resolveUrl", () => {
  it("prefers --url, then SHELLS_URL", () => {
    expect(resolveUrl({ url: "http://flag" }, { SHELLS_URL: "http://env" })).toBe("http://flag");
    expect(resolveUrl({}, { SHELLS_URL: "http://env" })).toBe("http://env");
  });

  it("falls back to the local server's address from SHELLS_HOST and SHELLS_PORT", () => {
    expect(resolveUrl({}, {})).toBe("http://127.0.0.1:8080");
    expect(resolveUrl({}, { SHELLS_PORT: "9000", SHELLS_HOST: "localhost" })).toBe(
      "http://localhost:9000",
    );
  });

  it("reaches a server bound to a wildcard address through loopback", () => {
    expect(resolveUrl({}, { SHELLS_HOST: "0.0.0.0" })).toBe("http://127.0.0.1:8080");
    expect(resolveUrl({}, { SHELLS_HOST: "::" })).toBe("http://[::1]:8080");
  });
});

describe("resolveConnection", () => {
  let cwd: string;
  beforeEach(() => {
    cwd = mkdtempSync(join(tmpdir(), "shells-cli-"));
  });
  afterEach(() => {
    rmSync(cwd, { recursive: true, force: true });
  });

  it("prefers --token, then SHELLS_API_TOKEN", () => {
    expect(resolveConnection({ token: "flag" }, { SHELLS_API_TOKEN: "env" }, cwd).token).toBe(
      "flag",
    );
    expect(resolveConnection({}, { SHELLS_API_TOKEN: "env" }, cwd).token).toBe("env");
  });

  it("reads the local admin key from ./.shells/admin-token by default", () => {
    writeFileSync(join(mkdirp(join(cwd, ".shells")), "admin-token"), "key-from-file\n");
    expect(resolveConnection({}, {}, cwd)).toEqual({
      url: "http://127.0.0.1:8080",
      token: "key-from-file",
    });
  });

  it("reads the admin key from --data-dir before SHELLS_DATA_DIR", () => {
    writeFileSync(join(mkdirp(join(cwd, "flag-dir")), "admin-token"), "flag-key");
    writeFileSync(join(mkdirp(join(cwd, "env-dir")), "admin-token"), "env-key");
    const env = { SHELLS_DATA_DIR: "env-dir" };
    expect(resolveConnection({ dataDir: "flag-dir" }, env, cwd).token).toBe("flag-key");
    expect(resolveConnection({}, env, cwd).token).toBe("env-key");
  });

  it("says where the admin key was looked for, and how to get a token, when there is none", () => {
    expect(() => resolveConnection({}, {}, cwd)).toThrow(
      expect.objectContaining({
        code: "missing_token",
        message: expect.stringContaining(join(cwd, ".shells", "admin-token")),
        hint: expect.stringContaining("SHELLS_API_TOKEN"),
      }),
    );
  });

  it("never sends the local admin key to a server on another machine", () => {
    writeFileSync(join(mkdirp(join(cwd, ".shells")), "admin-token"), "local-admin-key");
    expect(() => resolveConnection({ url: "https://shells.example.com" }, {}, cwd)).toThrow(
      expect.objectContaining({ code: "missing_token" }),
    );
    expect(resolveConnection({ url: "http://localhost:9000" }, {}, cwd).token).toBe(
      "local-admin-key",
    );
  });
});

function mkdirp(dir: string): string {
  mkdirSync(dir, { recursive: true });
  return dir;
}
