import { z } from "zod";
import {
  Template,
  TemplateCreate,
  TemplateDiff,
  TemplateImage,
  TemplateVersion,
  TemplateVersionCreate,
} from "../templates.js";
import type { RouteSpec } from "./route-spec.js";

const templateParams = z.strictObject({ name: z.string().min(1).max(63) });
const version = z.coerce.number().int().min(1).max(999_999_999);
const versionParams = z.strictObject({ name: z.string().min(1).max(63), version });

const EXAMPLE_DEFINITION = {
  language: "python",
  network: "sealed",
  files: [{ path: "POLICY.md", content: "Do not exfiltrate.\n", readOnly: true }],
  runtime: "container",
  locks: ["network", "runtime"],
};

/**
 * Templates: versioned sandbox definitions, org-wide or for one project. Admins create a template
 * and add versions; a version never changes. Every member who may read the org sees them.
 */
export const templateRoutes = {
  listTemplates: {
    method: "GET",
    path: "/api/v1/templates",
    summary: "The org's templates (org-wide and per project), by name.",
    tag: "templates",
    response: z.strictObject({ items: z.array(Template) }),
    successStatus: 200,
    scope: "shells:instances:read",
  },
  getTemplate: {
    method: "GET",
    path: "/api/v1/templates/:name",
    summary: "One template with its latest version.",
    tag: "templates",
    params: templateParams,
    response: z.strictObject({ template: Template, latest: TemplateVersion }),
    successStatus: 200,
    scope: "shells:instances:read",
    example: { params: { name: "{template}" } },
  },
  createTemplate: {
    method: "POST",
    path: "/api/v1/templates",
    summary: "Create a template and its version 1 (admins).",
    description:
      "A definition holds the runtime class, language, an image recipe (`image`: extra Debian packages and files baked into a custom image), network and egress allowlist, resources, TTL, env (never secrets), bindings, managed files, metadata files (under `/workspace/.shells/<kind>s/`), `reviewBeforeRun` and `locks`: the fields a shell or run from it may narrow but not loosen.",
    tag: "templates",
    body: TemplateCreate,
    response: TemplateVersion,
    successStatus: 201,
    scope: "shells:instances:control",
    minRole: "admin",
    example: { body: { name: "example-template", definition: EXAMPLE_DEFINITION } },
  },
  createTemplateVersion: {
    method: "POST",
    path: "/api/v1/templates/:name/versions",
    summary: "Add the next version of a template (admins); earlier versions never change.",
    tag: "templates",
    params: templateParams,
    body: TemplateVersionCreate,
    response: TemplateVersion,
    successStatus: 201,
    scope: "shells:instances:control",
    minRole: "admin",
    example: { params: { name: "{template}" }, body: { definition: EXAMPLE_DEFINITION } },
  },
  listTemplateVersions: {
    method: "GET",
    path: "/api/v1/templates/:name/versions",
    summary: "Every version of a template, oldest first.",
    tag: "templates",
    params: templateParams,
    response: z.strictObject({ items: z.array(TemplateVersion) }),
    successStatus: 200,
    scope: "shells:instances:read",
    example: { params: { name: "{template}" } },
  },
  getTemplateVersion: {
    method: "GET",
    path: "/api/v1/templates/:name/versions/:version",
    summary: "One version of a template.",
    tag: "templates",
    params: versionParams,
    response: TemplateVersion,
    successStatus: 200,
    scope: "shells:instances:read",
    example: { params: { name: "{template}", version: "1" } },
  },
  diffTemplateVersions: {
    method: "GET",
    path: "/api/v1/templates/:name/diff",
    summary: "What changed between two versions of a template, field by field.",
    tag: "templates",
    params: templateParams,
    query: z.strictObject({ from: version, to: version }),
    response: TemplateDiff,
    successStatus: 200,
    scope: "shells:instances:read",
    example: { params: { name: "{template}" }, query: { from: "1", to: "1" } },
  },
  getTemplateImage: {
    method: "GET",
    path: "/api/v1/templates/:name/versions/:version/image",
    summary:
      "Where a version's custom image stands on this server: missing, building (with its step), ready or failed.",
    description:
      "A version without an image recipe answers 422 `template_invalid`. Poll it after `POST` to follow a build.",
    tag: "templates",
    params: versionParams,
    response: TemplateImage,
    successStatus: 200,
    scope: "shells:instances:read",
    example: { params: { name: "{template}", version: "1" } },
  },
  buildTemplateImage: {
    method: "POST",
    path: "/api/v1/templates/:name/versions/:version/image",
    summary: "Build a version's custom image ahead of its first shell (admins).",
    description:
      "Answers at once: `ready` when the image is cached already, else `building`; poll `GET` for its progress. Every caller (and every shell waiting for the image) shares one build. A runtime class that cannot run custom images answers 422 `runtime_unavailable`.",
    tag: "templates",
    params: versionParams,
    response: TemplateImage,
    successStatus: 200,
    scope: "shells:instances:control",
    minRole: "admin",
    example: { params: { name: "{template}", version: "1" } },
  },
} as const satisfies Record<string, RouteSpec>;
