import { describe, expect, it } from "vitest";
import { AppError } from "../errors.js";
import {
  checkBindingName,
  checkPathGlob,
  checkSecret,
  injectedValue,
  parseInjectTemplate,
  parseUpstream,
  pathMatches,
  requestPathProblem,
} from "./binding-policy.js";

function codeOf(fn: () => unknown): string | null {
  try {
    fn();
    return null;
  } catch (error) {
    return error instanceof AppError ? error.code : "not an AppError";
  }
}

describe("binding rules", () => {
  it("takes names that map to one variable each, and refuses the rest with binding_name_invalid", () => {
    for (const name of ["github", "api_v2", "a"])
      expect(codeOf(() => checkBindingName(name))).toBeNull();
    for (const name of ["GitHub", "my-api", "2fa", "_x", "a b", "x".repeat(64), ""])
      expect(
        codeOf(() => checkBindingName(name)),
        name,
      ).toBe("binding_name_invalid");
  });

  it("takes https upstreams with a base path, and refuses secrets, credentials, queries and plain http", () => {
    expect(parseUpstream("https://api.example.com/v1", { allowHttp: false }).pathname).toBe("/v1");
    expect(
      codeOf(() => parseUpstream("https://api.example.com/{secret}", { allowHttp: false })),
    ).toBe("binding_secret_in_url");
    expect(
      codeOf(() => parseUpstream("https://x.test/?k=%7Bsecret%7D", { allowHttp: false })),
    ).toBe("binding_secret_in_url");
    expect(codeOf(() => parseUpstream("http://api.example.com", { allowHttp: false }))).toBe(
      "binding_upstream_not_https",
    );
    expect(codeOf(() => parseUpstream("http://api.example.com", { allowHttp: true }))).toBeNull();
    expect(codeOf(() => parseUpstream("ftp://api.example.com", { allowHttp: true }))).toBe(
      "binding_upstream_not_https",
    );
    for (const bad of [
      "not a url",
      "https://u:p@x.test/",
      "https://x.test/?a=1",
      "https://x.test/#f",
    ])
      expect(
        codeOf(() => parseUpstream(bad, { allowHttp: false })),
        bad,
      ).toBe("binding_upstream_invalid");
  });

  it("takes one header with {secret} in its value, and refuses CR/LF, framing headers and templates without it", () => {
    expect(parseInjectTemplate("Authorization: Bearer {secret}")).toEqual({
      header: "authorization",
      value: "Bearer {secret}",
    });
    expect(injectedValue(parseInjectTemplate("X-Api-Key:{secret}"), "s3cret-value")).toBe(
      "s3cret-value",
    );
    for (const bad of [
      "Authorization: Bearer {secret}\r\nX-Evil: 1",
      "Authorization: Bearer {secret}\nHost: evil.test",
      "X-A: {secret}\u0000",
      "Authorization: Bearer token",
      "Bearer {secret}",
      ": {secret}",
      "Bad Header: {secret}",
      "Host: {secret}",
      "Content-Length: {secret}",
      "Transfer-Encoding: {secret}",
      "Proxy-Authorization: {secret}",
    ])
      expect(
        codeOf(() => parseInjectTemplate(bad)),
        JSON.stringify(bad),
      ).toBe("binding_header_invalid");
  });

  it("takes absolute path globs with few wildcards, and refuses the rest with binding_path_invalid", () => {
    for (const glob of ["/", "/**", "/v1/*", "/repos/*/issues/**", "/a*b/c"])
      expect(
        codeOf(() => checkPathGlob(glob)),
        glob,
      ).toBeNull();
    for (const glob of ["v1/*", "/v1/**x", "/a/../b", "/a?b", "/a b", "/*/*/*/*/*", "/a\\b"])
      expect(
        codeOf(() => checkPathGlob(glob)),
        glob,
      ).toBe("binding_path_invalid");
  });

  it("matches * within a segment and ** across segments", () => {
    expect(pathMatches("/v1/*", "/v1/echo")).toBe(true);
    expect(pathMatches("/v1/*", "/v1/echo/more")).toBe(false);
    expect(pathMatches("/v1/*", "/v2/echo")).toBe(false);
    expect(pathMatches("/v1/**", "/v1")).toBe(true);
    expect(pathMatches("/v1/**", "/v1/a/b/c")).toBe(true);
    expect(pathMatches("/v1/**", "/v10/a")).toBe(false);
    expect(pathMatches("/**", "/")).toBe(true);
    expect(pathMatches("/a.b", "/aXb")).toBe(false);
    expect(pathMatches("/repos/*/issues", "/repos/acme/issues")).toBe(true);
  });

  it("refuses request paths whose meaning an upstream could read differently than the proxy", () => {
    for (const path of ["/v1/echo", "/", "/v1/", "/a%20b"])
      expect(requestPathProblem(path), path).toBeNull();
    for (const path of [
      "/v1/../admin",
      "/v1/./echo",
      "/v1/%2e%2e/admin",
      "/v1%2fadmin",
      "/v1/%5cadmin",
      "/v1\\admin",
      "/v1//admin",
      "relative",
    ])
      expect(requestPathProblem(path), path).not.toBeNull();
  });

  it("refuses short or unprintable secrets, and one that appears in a field kept in the clear", () => {
    expect(codeOf(() => checkSecret("abcdefgh", []))).toBeNull();
    for (const bad of ["short", " padded-secret ", "new\nline-secret", "tab\tsecret-value"])
      expect(
        codeOf(() => checkSecret(bad, [])),
        JSON.stringify(bad),
      ).toBe("binding_secret_invalid");
    expect(codeOf(() => checkSecret("abcdefgh", ["https://x.test/abcdefgh"]))).toBe(
      "binding_secret_invalid",
    );
  });
});
