/**
 * `shells.templates`: the org's sandbox definitions. A template has numbered versions that never
 * change; `shells.create({ template: "name" })` or `shells.run({ template: "name@2", … })` takes
 * its values as defaults, and the fields it locks may only be narrowed (`template_locked`).
 */
import type {
  Template,
  TemplateCreate as TemplateCreateSchema,
  TemplateDiff,
  TemplateImage,
  TemplateVersion,
  TemplateVersionCreate as TemplateVersionCreateSchema,
} from "@shells/contract";
import { segment, type ApiCall } from "./internal/api-call.js";
import type { SchemaInput } from "./internal/schema-types.js";
import type { RequestOptions } from "./shells-client.js";

/** Body of `templates.create()`: a name, an optional project scope, and version 1's definition. */
export type TemplateCreate = SchemaInput<typeof TemplateCreateSchema>;
/** Body of `templates.addVersion()`: the next version's definition. */
export type TemplateVersionCreate = SchemaInput<typeof TemplateVersionCreateSchema>;

/** Options of `templates.buildImage()`. */
export interface TemplateImageBuildOptions extends RequestOptions {
  /** Each step of the build as it changes (`downloading packages with apt...`, 20). */
  onProgress?: (image: TemplateImage) => void;
  /** How often to ask (default 1000 ms). */
  pollIntervalMs?: number;
}

/** `shells.templates`: list and read for every member; create and add versions for admins. */
export class TemplatesApi {
  readonly #call: ApiCall;

  /** @internal The client builds its namespaces; use `shells.templates`. */
  constructor(call: ApiCall) {
    this.#call = call;
  }

  /** The org's templates, by name. */
  async list(options: RequestOptions = {}): Promise<Template[]> {
    const { items } = await this.#call<{ items: Template[] }>("GET", "/api/v1/templates", options);
    return items;
  }

  /** One template and its latest version; `template_not_found` when the org has none by that name. */
  get(
    name: string,
    options: RequestOptions = {},
  ): Promise<{ template: Template; latest: TemplateVersion }> {
    return this.#call("GET", `/api/v1/templates/${segment(name)}`, options);
  }

  /**
   * Creates a template and its version 1 (admins). A definition that cannot work answers
   * `template_invalid`; a taken name `name_taken`.
   */
  create(body: TemplateCreate, options: RequestOptions = {}): Promise<TemplateVersion> {
    return this.#call<TemplateVersion>("POST", "/api/v1/templates", { ...options, body });
  }

  /** Adds the next version of a template (admins); earlier versions stay as they were. */
  addVersion(
    name: string,
    body: TemplateVersionCreate,
    options: RequestOptions = {},
  ): Promise<TemplateVersion> {
    return this.#call<TemplateVersion>("POST", `/api/v1/templates/${segment(name)}/versions`, {
      ...options,
      body,
    });
  }

  /** Every version of a template, oldest first. */
  async versions(name: string, options: RequestOptions = {}): Promise<TemplateVersion[]> {
    const { items } = await this.#call<{ items: TemplateVersion[] }>(
      "GET",
      `/api/v1/templates/${segment(name)}/versions`,
      options,
    );
    return items;
  }

  /** One version of a template. */
  version(name: string, version: number, options: RequestOptions = {}): Promise<TemplateVersion> {
    return this.#call<TemplateVersion>(
      "GET",
      `/api/v1/templates/${segment(name)}/versions/${version}`,
      options,
    );
  }

  /** The fields that differ from version `from` to version `to`. */
  diff(
    name: string,
    from: number,
    to: number,
    options: RequestOptions = {},
  ): Promise<TemplateDiff> {
    return this.#call<TemplateDiff>("GET", `/api/v1/templates/${segment(name)}/diff`, {
      ...options,
      query: { from, to },
    });
  }

  /** Where a version's custom image stands: `missing`, `building` (with its step), `ready`, `failed`. */
  image(name: string, version: number, options: RequestOptions = {}): Promise<TemplateImage> {
    return this.#call<TemplateImage>("GET", this.#imagePath(name, version), options);
  }

  /**
   * Builds a version's custom image ahead of its first shell (admins), following the build until
   * it is `ready` or `failed` (with the reason in `message`); every step goes to `onProgress`.
   * A version without an image recipe answers `template_invalid`.
   */
  async buildImage(
    name: string,
    version: number,
    options: TemplateImageBuildOptions = {},
  ): Promise<TemplateImage> {
    const { onProgress, pollIntervalMs = 1000, ...request } = options;
    let image = await this.#call<TemplateImage>("POST", this.#imagePath(name, version), request);
    let said = "";
    for (;;) {
      const step = `${image.state} ${image.message ?? ""} ${image.percent ?? ""}`;
      if (step !== said) onProgress?.(image);
      said = step;
      if (image.state !== "building") return image;
      await new Promise((resolve) => setTimeout(resolve, pollIntervalMs));
      request.signal?.throwIfAborted();
      image = await this.image(name, version, request);
    }
  }

  #imagePath(name: string, version: number): string {
    return `/api/v1/templates/${segment(name)}/versions/${version}/image`;
  }
}
