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
