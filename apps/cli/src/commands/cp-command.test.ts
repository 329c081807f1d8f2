import { describe, expect, it } from "vitest";
import { parseRemoteOperand } from "./cp-command.js";

describe("shells cp operands", () => {
  it("reads ID:PATH as inside a shell, an empty path as /workspace", () => {
    expect(parseRemoteOperand("sh-1:/workspace/a")).toEqual({
      shellId: "sh-1",
      path: "/workspace/a",
    });
    expect(parseRemoteOperand("demo:notes.txt")).toEqual({ shellId: "demo", path: "notes.txt" });
    expect(parseRemoteOperand("demo:")).toEqual({ shellId: "demo", path: "/workspace" });
  });

  it("keeps local paths local, even with a colon in them", () => {
    for (const local of ["./a:b", "/tmp/x:y", "file.txt", "../up", "dir/sub:x"]) {
      expect(parseRemoteOperand(local), local).toBeNull();
    }
  });
});
