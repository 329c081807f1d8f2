import type { TerminalCredential } from "@l1fe/shells";
import { describe, expect, it } from "vitest";
import { displayedCredential } from "./term-command.js";

describe("shells term --print-credential", () => {
  const token = "sht_dGhpcyBpcyBhIHRlcm1pbmFsIHRva2VuIGZvciB0ZXN0c9xyz";
  const credential: TerminalCredential = {
    id: "term-1",
    token,
    url: "ws://127.0.0.1:8080/api/v1/term/attach",
    expiresAt: "2025-06-01T12:05:00.000Z",
    attach: () => Promise.reject(new Error("not in this test")),
  };

  it("masks the token everywhere it appears, the subprotocols included", () => {
    const shown = displayedCredential(credential, false);
    expect(shown).toEqual({
      id: "term-1",
      token: "sht_…9xyz",
      url: "ws://127.0.0.1:8080/api/v1/term/attach",
      protocols: "shells.term.v1, shells.token.sht_…9xyz",
      expiresAt: "2025-06-01T12:05:00.000Z",
    });
    expect(JSON.stringify(shown)).not.toContain(token);
  });

  it("shows the token itself only with --reveal", () => {
    expect(displayedCredential(credential, true)).toMatchObject({
      token,
      url: credential.url,
      protocols: `shells.term.v1, shells.token.${token}`,
    });
  });
});
