/**
 * The image recipe of the custom-image end-to-end test: the bash preset's base image (Debian's
 * essential set, which has no jq) plus jq and one baked-in file. `test/global-setup.ts` builds it
 * before any test timeout starts; the test then finds it in the shared image cache.
 */
import type { ImageRecipe, Language } from "@shells/contract";

export const TEMPLATE_IMAGE_LANGUAGE: Language = "bash";

export const TEMPLATE_IMAGE_RECIPE: ImageRecipe = {
  packages: ["jq"],
  files: [
    {
      path: "/etc/shells-e2e/motd.json",
      content: '{"greeting":"baked into the image"}\n',
      mode: 0o644,
    },
  ],
};

/**
 * Whether the end-to-end test of toolchains in images runs: it fetches Node.js (about 50 MB) from
 * the public npm registry and builds an image with it, so it is opt-in (`SHELLS_TEST_TOOLCHAINS=1`).
 */
export const TOOLCHAIN_TEST_ENABLED = process.env["SHELLS_TEST_TOOLCHAINS"] === "1";

/** The recipe of that test: the bash preset's base image plus Node.js 22 from the npm registry. */
export const TOOLCHAIN_IMAGE_RECIPE: ImageRecipe = { packages: [], toolchains: { node: "22" } };
