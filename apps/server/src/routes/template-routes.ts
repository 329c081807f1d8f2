import type { TemplateService } from "../services/template-service.js";
import type { TemplateImageService } from "../templates/template-images.js";
import type { Handlers } from "./register-routes.js";

/** Templates: read for members, create and add versions (and build their images) for admins. */
export function templateHandlers(
  templates: TemplateService,
  images: TemplateImageService,
): Pick<
  Handlers,
  | "listTemplates"
  | "getTemplate"
  | "createTemplate"
  | "createTemplateVersion"
  | "listTemplateVersions"
  | "getTemplateVersion"
  | "diffTemplateVersions"
  | "getTemplateImage"
  | "buildTemplateImage"
> {
  return {
    listTemplates: async ({ caller }) => ({ items: await templates.list(caller) }),
    getTemplate: async ({ caller, params }) => templates.get(caller, params.name),
    createTemplate: async ({ caller, body }) => templates.create(caller, body),
    createTemplateVersion: async ({ caller, params, body }) =>
      templates.addVersion(caller, params.name, body),
    listTemplateVersions: async ({ caller, params }) => ({
      items: await templates.versions(caller, params.name),
    }),
    getTemplateVersion: async ({ caller, params }) =>
      templates.version(caller, params.name, params.version),
    diffTemplateVersions: async ({ caller, params, query }) =>
      templates.diff(caller, params.name, query.from, query.to),
    getTemplateImage: async ({ caller, params }) =>
      images.status(caller, params.name, params.version),
    buildTemplateImage: async ({ caller, params }) =>
      images.build(caller, params.name, params.version),
  };
}
