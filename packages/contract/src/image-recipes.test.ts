import { createHash } from "node:crypto";
import { describe, expect, it } from "vitest";
import { ImageRecipe, customImageId, normalizeImageRecipe } from "./image-recipes.js";
import type { Sha256 } from "./merkle.js";

const sha256: Sha256 = (data) => createHash("sha256").update(data).digest();

describe("image recipes", () => {
  it("accept Debian package names only, and a bounded number of them", () => {
    for (const name of ["jq", "g++", "libxml2-dev", "python3.11", "0ad"])
      expect(ImageRecipe.safeParse({ packages: [name] }).success, name).toBe(true);
    for (const name of [
      "j",
      "JQ",
      "-jq",
      "--force-yes",
      "jq=1.6",
      "jq/bookworm",
      "a b",
      "jq;id",
      "../x",
    ])
      expect(ImageRecipe.safeParse({ packages: [name] }).success, name).toBe(false);
    const many = Array.from({ length: 33 }, (_, i) => `pkg${i}`);
    expect(ImageRecipe.safeParse({ packages: many }).success).toBe(false);
    expect(
      ImageRecipe.safeParse({ packages: [], files: [{ path: "etc/x", content: "" }] }).success,
    ).toBe(false);
  });

  it("name equal recipes alike whatever their order, and anything else differently", () => {
    const a = customImageId(sha256, "bash", {
      packages: ["tree", "jq"],
      files: [
        { path: "/etc/b", content: "2" },
        { path: "/etc/a", content: "1", mode: 0o644 },
      ],
    });
    const b = customImageId(sha256, "bash", {
      packages: ["jq", "tree"],
      files: [
        { path: "/etc/a", content: "1" },
        { path: "/etc/b", content: "2" },
      ],
    });
    expect(a).toMatch(/^img-[0-9a-f]{32}$/);
    expect(b).toBe(a);
    const others = [
      customImageId(sha256, "python", { packages: ["jq", "tree"], files: [] }),
      customImageId(sha256, "bash", { packages: ["jq"] }),
      customImageId(sha256, "bash", {
        packages: ["jq", "tree"],
        files: [
          { path: "/etc/a", content: "1", mode: 0o600 },
          { path: "/etc/b", content: "2" },
        ],
      }),
    ];
    expect(new Set([a, ...others]).size).toBe(4);
  });

  it("accept toolchains as a name and a major or exact version, nothing else", () => {
    for (const toolchains of [{ node: "22" }, { node: "24" }, { node: "22.23.3" }, { go: "1" }])
      expect(ImageRecipe.safeParse({ packages: [], toolchains }).success).toBe(true);
    for (const toolchains of [
      { node: "latest" },
      { node: "^22" },
      { node: "22.1" },
      { node: "22 && id" },
      { node: "" },
      { Node: "22" },
      { "../node": "22" },
    ])
      expect(
        ImageRecipe.safeParse({ packages: [], toolchains }).success,
        JSON.stringify(toolchains),
      ).toBe(false);
  });

  it("address a toolchain as asked, and leave the address of a recipe without one as it was", () => {
    const plain = customImageId(sha256, "bash", { packages: ["jq"] });
    // The id a recipe had before toolchains existed: the hash of base, packages and files only.
    const before = createHash("sha256")
      .update('{"base":"bash","files":[],"packages":["jq"]}')
      .digest("hex");
    expect(plain).toBe(`img-${before.slice(0, 32)}`);
    expect(customImageId(sha256, "bash", { packages: ["jq"], toolchains: {} })).toBe(plain);
    const node22 = customImageId(sha256, "bash", { packages: ["jq"], toolchains: { node: "22" } });
    const ids = [
      plain,
      node22,
      customImageId(sha256, "bash", { packages: ["jq"], toolchains: { node: "24" } }),
      customImageId(sha256, "bash", { packages: ["jq"], toolchains: { node: "22.23.3" } }),
      customImageId(sha256, "node", { packages: ["jq"], toolchains: { node: "22" } }),
    ];
    expect(new Set(ids).size).toBe(ids.length);
    expect(normalizeImageRecipe({ packages: [], toolchains: { node: "22" } })).toEqual({
      packages: [],
      files: [],
      toolchains: { node: "22" },
    });
  });
});
