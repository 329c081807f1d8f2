import { describe, expect, it } from "vitest";
import { UNEXPECTED_FAILURE, renderToolError, toToolFailure } from "./tool-errors.js";

function textOf(result: ReturnType<typeof renderToolError>): string {
  return result.content.map((part) => (part.type === "text" ? part.text : "")).join("");
}

describe("tool errors", () => {
  it("carry the stable code, the message and the next step a model can take", () => {
    const result = renderToolError(
      toToolFailure({
        code: "entitlement_required",
        message: "The agent gate needs the shells.agent.invoke entitlement.",
        details: { entitlement: "shells.agent.invoke" },
        requestId: "req-1",
      }),
    );
    expect(result.isError).toBe(true);
    expect(textOf(result)).toBe(
      [
        "Error entitlement_required: The agent gate needs the shells.agent.invoke entitlement.",
        "Next step: ask an org admin to grant shells.agent.invoke to this agent (or user): `shells entitlements grant --agent <id>`. Retrying will not help until then.",
        "Request id: req-1",
      ].join("\n"),
    );
    expect(result.structuredContent).toMatchObject({
      error: {
        code: "entitlement_required",
        details: { entitlement: "shells.agent.invoke" },
        nextStep: expect.stringContaining("grant shells.agent.invoke"),
        requestId: "req-1",
      },
    });
  });

  it("tell a model to confirm only when the user asked for the destructive action", () => {
    const text = textOf(
      renderToolError({ code: "confirmation_required", message: "wipe_state is gated." }),
    );
    expect(text).toContain("Only if the user asked for it, call again with `confirm`");
  });

  it("leave out the next step for codes a model cannot act on", () => {
    const result = renderToolError({ code: "last_owner", message: "Keep an owner." });
    expect(textOf(result)).toBe("Error last_owner: Keep an owner.");
  });

  it("never show a stack trace or the text of an error without a stable code", () => {
    const bug = new TypeError("Cannot read properties of undefined (reading 'secret')");
    const system = Object.assign(new Error("connect ECONNREFUSED 10.0.0.7:5432"), {
      code: "ECONNREFUSED",
    });
    for (const error of [bug, system, "a string", null]) {
      const failure = toToolFailure(error);
      expect(failure).toBe(UNEXPECTED_FAILURE);
      const text = textOf(renderToolError(failure));
      expect(text).toMatch(/^Error internal: /);
      expect(text).not.toContain("secret");
      expect(text).not.toContain("10.0.0.7");
      expect(text).not.toMatch(/\bat .*:\d+:\d+/);
    }
  });
});
