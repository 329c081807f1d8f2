import { describe, expect, it } from "vitest";
import {
  PORT_SANDBOX_CSP,
  forwardedRequestHeaders,
  returnedResponseHeaders,
} from "./port-routes.js";

/** A flat name/value list as an object of lower-case names to their values. */
function byName(flat: readonly string[]): Record<string, string[]> {
  const out: Record<string, string[]> = {};
  for (let i = 0; i + 1 < flat.length; i += 2)
    (out[flat[i]!.toLowerCase()] ??= []).push(flat[i + 1]!);
  return out;
}

describe("what crosses an exposed port", () => {
  const request = [
    ["Host", "control.example:8080"],
    ["Cookie", "shs_session=secret"],
    ["Authorization", "Bearer shk_x"],
    ["Referer", "http://control.example:8080/ports/shp_token/page"],
    ["X-Forwarded-For", "10.0.0.1"],
    ["Connection", "Upgrade"],
    ["Upgrade", "websocket"],
    ["Accept", "text/html"],
    ["Sec-WebSocket-Key", "abc"],
  ].flat();

  it("sends the shell no credential, no cookie, no token, and its own Host", () => {
    const sent = byName(forwardedRequestHeaders(request, 8000, false));
    expect(Object.keys(sent).sort()).toEqual(["accept", "host", "sec-websocket-key"]);
    expect(sent["host"]).toEqual(["localhost:8000"]);
  });

  it("keeps Connection and Upgrade only for an upgrade", () => {
    const sent = byName(forwardedRequestHeaders(request, 8000, true));
    expect(sent["upgrade"]).toEqual(["websocket"]);
    expect(sent["connection"]).toEqual(["Upgrade"]);
    expect(sent["cookie"]).toBeUndefined();
  });

  it("gives the browser no cookie or origin-wide header of the shell's, and the sandbox policy", () => {
    const returned = byName(
      returnedResponseHeaders(
        [
          ["Content-Type", "text/html"],
          ["Set-Cookie", "shs_session=fixated; Path=/"],
          ["Strict-Transport-Security", "max-age=31536000"],
          ["Clear-Site-Data", '"*"'],
          ["Service-Worker-Allowed", "/"],
          ["Content-Security-Policy", "default-src 'self'"],
          ["Transfer-Encoding", "chunked"],
        ].flat(),
        "/ports/shp_t",
      ),
    );
    expect(returned["set-cookie"]).toBeUndefined();
    expect(returned["strict-transport-security"]).toBeUndefined();
    expect(returned["clear-site-data"]).toBeUndefined();
    expect(returned["service-worker-allowed"]).toBeUndefined();
    expect(returned["transfer-encoding"]).toBeUndefined();
    // The shell's own policy stays, and ours is added: both apply.
    expect(returned["content-security-policy"]).toEqual(["default-src 'self'", PORT_SANDBOX_CSP]);
    expect(PORT_SANDBOX_CSP).not.toMatch(/allow-same-origin/);
  });

  it("keeps redirects to the shell's own paths under the port's URL, and others as they are", () => {
    const location = (value: string) =>
      byName(returnedResponseHeaders(["Location", value], "/ports/shp_t"))["location"]?.[0];
    expect(location("/login?next=/")).toBe("/ports/shp_t/login?next=/");
    expect(location("http://localhost:8000/a")).toBe("/ports/shp_t/a");
    expect(location("http://127.0.0.1:3000")).toBe("/ports/shp_t/");
    expect(location("https://example.com/x")).toBe("https://example.com/x");
    expect(location("//evil.example/x")).toBe("//evil.example/x");
    expect(location("relative/path")).toBe("relative/path");
  });
});
