/**
 * Templates: an org's (or one project's) sandbox definitions. A template has numbered versions;
 * a version never changes once made. A shell or run created from a template takes its values as
 * defaults and may narrow — never loosen — the fields the version locks.
 */
import { z } from "zod";
import { BindingGrants } from "./bindings.js";
import { EgressRules } from "./egress-rules.js";
import { ImageRecipe } from "./image-recipes.js";
import {
  EnvMap,
  Language,
  NetworkMode,
  Resources,
  RuntimeClass,
  ShellEgress,
  TemplateRef,
} from "./shells.js";

export { TemplateRef };

/** Where a template's metadata files land inside a shell: `<dir>/<kind>s/<name>`. */
export const TEMPLATE_METADATA_DIR = "/workspace/.shells";

const templateName = z
  .string()
  .min(1)
  .max(63)
  .regex(/^[a-z0-9]([a-z0-9-]*[a-z0-9])?$/, "lowercase letters, digits and inner dashes");

/**
 * Fields a version can lock. A create or run from the template may narrow a locked field (a
 * sealed network where the template says internet, fewer allowlist hosts or bindings, a stronger
 * class, smaller resources, a shorter TTL) but never loosen it: that answers 422 `template_locked`.
 */
export const TemplateLock = z.enum([
  "runtime",
  "network",
  "egress",
  "bindings",
  "resources",
  "ttl",
]);
export type TemplateLock = z.infer<typeof TemplateLock>;

/**
 * A file the template places in every shell made from it, written when the shell is created.
 * `readOnly` files get mode 0444: the shell's processes cannot open them for writing (see the
 * README on what that does and does not hold against).
 */
export const ManagedFile = z.strictObject({
  /** Relative to `/workspace`, or absolute inside it. */
  path: z.string().min(1).max(1024),
  /** UTF-8 text. */
  content: z.string().max(256 * 1024),
  /** Octal permission bits as a number (default 0o644; read-only files are always 0o444). */
  mode: z.int().min(0).max(0o777).optional(),
  readOnly: z.boolean().optional(),
});
export type ManagedFile = z.infer<typeof ManagedFile>;

/**
 * A description of a tool, skill, prompt template or MCP connection the workload finds at
 * `/workspace/.shells/<kind>s/<name>` (read-only), e.g. `/workspace/.shells/mcps/github.json`.
 */
export const TemplateMetadataFile = z.strictObject({
  kind: z.enum(["tool", "skill", "prompt", "mcp"]),
  /** File name inside its kind's directory. */
  name: z
    .string()
    .min(1)
    .max(128)
    .regex(/^[A-Za-z0-9][A-Za-z0-9._-]*$/, "a file name (letters, digits, . _ -)"),
  content: z.string().max(256 * 1024),
});
export type TemplateMetadataFile = z.infer<typeof TemplateMetadataFile>;

/** What one version of a template defines. Secrets are never part of a template. */
export const TemplateDefinition = z.strictObject({
  description: z.string().max(2000).optional(),
  language: Language,
  runtime: RuntimeClass.optional(),
  network: NetworkMode.optional(),
  egress: ShellEgress.optional(),
  /**
   * Egress rules every shell and run made from this version keeps, whatever its request says: a
   * level between the project's rules and the shell's own allowlist, which can only narrow.
   */
  egressRules: EgressRules.optional(),
  resources: Resources.optional(),
  ttlSeconds: z
    .int()
    .min(10)
    .max(30 * 24 * 3600)
    .optional(),
  env: EnvMap.optional(),
  bindings: BindingGrants.optional(),
  files: z.array(ManagedFile).max(64).optional(),
  /**
   * A custom image for the version's shells and runs (container class only): extra Debian
   * packages and files baked in. Left out: the language's base image.
   */
  image: ImageRecipe.optional(),
  metadata: z.array(TemplateMetadataFile).max(64).optional(),
  /** Every run of this template waits for a listed approver of the org before it starts. */
  reviewBeforeRun: z.boolean().optional(),
  /**
   * Granting service bindings is a sensitive step: a run or a shell of this version that is
   * granted any (its own or the template's) waits for a listed approver, with the bindings in the
   * approval's context, and so does attaching a binding to a running shell made from it.
   */
  reviewBindings: z.boolean().optional(),
  /** Fields a create or run from this version may not loosen. */
  locks: z.array(TemplateLock).max(TemplateLock.options.length).optional(),
});
export type TemplateDefinition = z.infer<typeof TemplateDefinition>;

/** Body of `POST /api/v1/templates`: a template and its version 1. */
export const TemplateCreate = z.strictObject({
  name: templateName,
  /** Scope: only shells and runs of this project may use it. Left out: the whole org. */
  project: templateName.optional(),
  definition: TemplateDefinition,
});

/** Body of `POST /api/v1/templates/:name/versions`: the next version. */
export const TemplateVersionCreate = z.strictObject({ definition: TemplateDefinition });

const who = z.strictObject({ type: z.enum(["user", "agent"]), id: z.string() });

/** A template as the API lists it. */
export const Template = z.strictObject({
  id: z.string(),
  name: z.string(),
  /** The project it is scoped to, or null for the whole org. */
  project: z.string().nullable(),
  latestVersion: z.int(),
  createdBy: who,
  createdAt: z.iso.datetime(),
  updatedAt: z.iso.datetime(),
});
export type Template = z.infer<typeof Template>;

/** One immutable version of a template. */
export const TemplateVersion = z.strictObject({
  template: z.string(),
  version: z.int(),
  definition: TemplateDefinition,
  /** SHA-256 of the definition's canonical JSON. */
  sha256: z.string(),
  createdBy: who,
  createdAt: z.iso.datetime(),
});
export type TemplateVersion = z.infer<typeof TemplateVersion>;

/** One field that differs between two versions (`files[/workspace/a]`, `egress.allow`, …). */
export const TemplateFieldChange = z.strictObject({
  field: z.string(),
  change: z.enum(["added", "removed", "changed"]),
  from: z.unknown(),
  to: z.unknown(),
});
export type TemplateFieldChange = z.infer<typeof TemplateFieldChange>;

/** Answer of `GET /api/v1/templates/:name/diff?from=&to=`. */
export const TemplateDiff = z.strictObject({
  template: z.string(),
  from: z.int(),
  to: z.int(),
  changes: z.array(TemplateFieldChange),
});
export type TemplateDiff = z.infer<typeof TemplateDiff>;

/**
 * Where a template version's custom image stands on this server: `ready` (built and cached),
 * `building` (with the step and percentage), `failed` (with the reason), or `missing` (not built
 * yet; the first shell from the version, or a build request, builds it).
 */
export const TemplateImage = z.strictObject({
  template: z.string(),
  version: z.int(),
  /** The image's content address: the same recipe and language give the same id. */
  imageId: z.string(),
  state: z.enum(["missing", "building", "ready", "failed"]),
  /** The current step of a build, or why it failed. */
  message: z.string().nullable(),
  percent: z.number().min(0).max(100).nullable(),
});
export type TemplateImage = z.infer<typeof TemplateImage>;
