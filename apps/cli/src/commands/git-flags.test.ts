import { describe, expect, it } from "vitest";
import { CliError } from "../errors.js";
import { createBodyFrom } from "./create-command.js";
import { gitSourceFrom } from "./git-flags.js";

describe("the --git-* flags", () => {
  it("give `shells create` a git source without an entrypoint", () => {
    expect(
      createBodyFrom({
        language: "bash",
        gitRepo: "https://git.example.test/a.git",
        gitRef: "v2",
        gitSubpath: "web",
        gitBinding: "gh",
        wait: true,
      }),
    ).toEqual({
      language: "bash",
      git: { repo: "https://git.example.test/a.git", ref: "v2", subpath: "web", binding: "gh" },
    });
    expect(createBodyFrom({ language: "bash", wait: true })).toEqual({ language: "bash" });
  });

  it("default the ref to main and name every flag given without --git-repo", () => {
    expect(gitSourceFrom({ gitRepo: "https://git.example.test/a.git" })).toEqual({
      repo: "https://git.example.test/a.git",
      ref: "main",
    });
    expect(() => gitSourceFrom({ gitRef: "v1", gitBinding: "gh" })).toThrow(CliError);
    expect(() => gitSourceFrom({ gitRef: "v1", gitBinding: "gh" })).toThrow(
      "--git-ref, --git-binding need --git-repo",
    );
  });
});
