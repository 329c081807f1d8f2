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
 * A custom image: the language's base image plus extra Debian packages and files baked in. It is
 * built once (by the container backend's image builder), named by the hash of the language and the
 * recipe, and shared by every template version with the same recipe.
 */
export const ImageRecipe = z.strictObject({
  packages: z.array(DebianPackageName).max(IMAGE_RECIPE_MAX_PACKAGES),
  files: z.array(ImageFile).max(32).optional(),
});
export type ImageRecipe = z.infer<typeof ImageRecipe>;

/** A recipe in its one canonical form: packages sorted and unique, files sorted, modes filled in. */
export interface NormalizedImageRecipe {
  packages: string[];
  files: { path: string; content: string; mode: number }[];
}

/** The canonical form of a recipe, which its id is the hash of. */
export function normalizeImageRecipe(recipe: ImageRecipe): NormalizedImageRecipe {
  return {
    packages: [...new Set(recipe.packages)].sort(),
    files: (recipe.files ?? [])
      .map((file) => ({ path: file.path, content: file.content, mode: file.mode ?? 0o644 }))
      .sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0)),
  };
}

/**
 * The content address of a custom image: `img-` and 32 hex digits of the SHA-256 of the base
 * (the language preset whose image it starts from) and the normalized recipe. Equal recipes on
 * the same language get the same id, whichever template or org they come from.
 */
export function customImageId(sha256: Sha256, language: Language, recipe: ImageRecipe): string {
  const canonical = canonicalJson({ base: language, ...normalizeImageRecipe(recipe) });
  const hash = toHex(sha256(new TextEncoder().encode(canonical)));
  return `img-${hash.slice(0, 32)}`;
}
