/**
 * Custom images of templates: a version's image recipe becomes a `SandboxImage` (named by the hash
 * of its language and recipe), built once by the backend and shared by every version, template and
 * org with the same recipe. This module tracks builds for the API, starts them ahead of use, and
 * sweeps away the images nothing uses any more.
 */
import {
  customImageId,
  normalizeImageRecipe,
  type ImageRecipe,
  type Language,
  type RuntimeClass,
  type TemplateImage,
} from "@shells/contract";
import type { SandboxBackend, SandboxImage, SandboxProgress } from "@shells/sandbox";
import type { FastifyBaseLogger } from "fastify";
import type { Kysely } from "kysely";
import { sha256 } from "../audit/sha256.js";
import { AppError } from "../errors.js";
import type { Caller } from "../iam/principal.js";
import { SYSTEM_ACTOR } from "../orchestrator/reconciler.js";
import type { RuntimeRegistry } from "../orchestrator/runtimes.js";
import { describeError } from "../orchestrator/sandbox-errors.js";
import type { ActivityService } from "../services/activity-service.js";
import type { TemplateService } from "../services/template-service.js";
import type { Database } from "../store/schema.js";

/** The image a backend builds for `recipe` on `language`: its content address and canonical form. */
export function sandboxImageOf(language: Language, recipe: ImageRecipe): SandboxImage {
  return { id: customImageId(sha256, language, recipe), ...normalizeImageRecipe(recipe) };
}

/**
 * Refuses a custom image on a backend that cannot build one (the wasm and microvm backends do not
 * yet): `runtime_unavailable`, naming the class and the backend.
 */
export function refuseWithoutCustomImages(backend: SandboxBackend, runtime: RuntimeClass): void {
  if (backend.customImages && backend.prepareLanguage) return;
  throw new AppError(
    "runtime_unavailable",
    `The ${runtime} runtime cannot run custom images on this server: its ${backend.name} backend builds none (custom images run in the container class).`,
    { runtime, missing: "custom images in the backend" },
  );
}

/** Dependencies of the template image service. */
export interface TemplateImageServiceDeps {
  db: Kysely<Database>;
  templates: TemplateService;
  runtimes: RuntimeRegistry;
  activity: ActivityService;
  logger: FastifyBaseLogger;
  /** How long an image outside every template's latest version and every shell is kept. */
  unusedForMs: number;
}

type Build = Pick<TemplateImage, "state" | "message" | "percent">;

/** A template version's image and the backend that builds it. */
interface ImageTarget {
  name: string;
  version: number;
  templateId: string;
  language: Language;
  image: SandboxImage;
  backend: SandboxBackend;
}

/**
 * Builds and sweeps template images. Every build of an image goes through `prepare` (a shell
 * waiting for its image, or an admin's build request), so the state the API shows is the state
 * of the one build the backend shares among them.
 */
export class TemplateImageService {
  /** Builds under way or failed on this server, by image id (a finished one is dropped). */
  readonly #builds = new Map<string, Build>();
  #timer: NodeJS.Timeout | null = null;
  #sweeping = false;

  constructor(private readonly deps: TemplateImageServiceDeps) {}

  /** Builds `image` on `backend` (joining a build under way), reporting each step. */
  async prepare(
    backend: SandboxBackend,
    language: Language,
    image: SandboxImage,
    onProgress: (progress: SandboxProgress) => void,
  ): Promise<void> {
    const build: Build = { state: "building", message: "starting the build", percent: 0 };
    this.#builds.set(image.id, build);
    try {
      await backend.prepareLanguage!(
        language,
        (progress) => {
          build.message = progress.message;
          build.percent = progress.percent ?? build.percent;
          onProgress(progress);
        },
        image,
      );
      if (this.#builds.get(image.id) === build) this.#builds.delete(image.id);
    } catch (error) {
      this.#builds.set(image.id, { state: "failed", message: describeError(error), percent: null });
      throw error;
    }
  }

  /** Where the image of `name@version` stands on this server. */
  async status(caller: Caller, name: string, version: number): Promise<TemplateImage> {
    const target = await this.#target(caller, name, version);
    return this.#statusOf(target);
  }

  /**
   * Starts building the image of `name@version` unless it is cached or being built; answers its
   * state. The request is recorded as `template.image.build`.
   */
  async build(caller: Caller, name: string, version: number): Promise<TemplateImage> {
    const target = await this.#target(caller, name, version);
    const status = await this.#statusOf(target);
    if (status.state === "ready" || status.state === "building") return status;
    await this.deps.activity.recordFor(
      caller,
      "template.image.build",
      { type: "template", id: target.templateId },
      {
        name,
        version,
        imageId: target.image.id,
        packages: target.image.packages,
        ...(target.image.toolchains ? { toolchains: target.image.toolchains } : {}),
      },
    );
    const { backend, language, image } = target;
    this.prepare(backend, language, image, () => undefined).catch((error: unknown) =>
      this.deps.logger.warn(
        { imageId: image.id, reason: describeError(error) },
        "image build failed",
      ),
    );
    return this.#statusOf(target);
  }

  /**
   * One sweep: every backend removes the custom images that no template's latest version names,
   * no shell runs on, and nothing used for `unusedForMs`. Each removal is recorded as
   * `template.image.remove` in the history of every org with a template version of that image
   * (such a version still works: its next shell builds the image again).
   */
  async sweep(): Promise<string[]> {
    if (this.#sweeping) return [];
    this.#sweeping = true;
    try {
      const { db } = this.deps;
      const versions = await db
        .selectFrom("template_versions")
        .innerJoin("templates", "templates.id", "template_versions.template_id")
        .select([
          "templates.org_id as orgId",
          "templates.id as templateId",
          "templates.name as name",
          "templates.latest_version as latest",
          "template_versions.version as version",
          "template_versions.definition as definition",
        ])
        .where("template_versions.definition", "like", '%"image"%')
        .execute();
      const keep = new Set<string>();
      const owners = new Map<
        string,
        Map<string, { orgId: string; name: string; versions: number[] }>
      >();
      for (const row of versions) {
        const definition = JSON.parse(row.definition) as {
          language: Language;
          image?: ImageRecipe;
        };
        if (!definition.image) continue;
        const id = sandboxImageOf(definition.language, definition.image).id;
        if (row.version === row.latest) keep.add(id);
        const byTemplate = owners.get(id) ?? new Map();
        owners.set(id, byTemplate);
        const owner = byTemplate.get(row.templateId) ?? {
          orgId: row.orgId,
          name: row.name,
          versions: [],
        };
        owner.versions.push(row.version);
        byTemplate.set(row.templateId, owner);
      }
      const shells = await db
        .selectFrom("shells")
        .select("image_version")
        .where("deleted_at", "is", null)
        .where("image_version", "like", "img-%")
        .execute();
      for (const shell of shells) if (shell.image_version) keep.add(shell.image_version);

      const removed: string[] = [];
      for (const backend of this.deps.runtimes.backends) {
        if (!backend.pruneImages) continue;
        removed.push(...(await backend.pruneImages(keep, this.deps.unusedForMs)));
      }
      for (const imageId of removed) {
        for (const [templateId, owner] of owners.get(imageId) ?? []) {
          await this.deps.activity.record({
            orgId: owner.orgId,
            actor: SYSTEM_ACTOR,
            action: "template.image.remove",
            target: { type: "template", id: templateId },
            outcome: "success",
            details: {
              name: owner.name,
              versions: owner.versions.sort((a, b) => a - b),
              imageId,
              reason: "unused",
            },
          });
        }
      }
      if (removed.length) this.deps.logger.info({ removed }, "removed unused custom images");
      return removed;
    } finally {
      this.#sweeping = false;
    }
  }

  /** Sweeps every `intervalMs` (0: never) until `stop`. */
  start(intervalMs: number): void {
    this.stop();
    if (intervalMs <= 0) return;
    this.#timer = setInterval(() => {
      this.sweep().catch((error: unknown) =>
        this.deps.logger.error({ err: error }, "image sweep failed"),
      );
    }, intervalMs);
    this.#timer.unref();
  }

  /** Stops the timer started by `start`. */
  stop(): void {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = null;
  }

  async #statusOf(target: ImageTarget): Promise<TemplateImage> {
    const { name, version, image, backend, language } = target;
    const build = this.#builds.get(image.id);
    const ready = !build && (await backend.languageReady?.(language, image));
    return {
      template: name,
      version,
      imageId: image.id,
      ...(build ?? {
        state: ready ? "ready" : "missing",
        message: null,
        percent: ready ? 100 : null,
      }),
    };
  }

  /** The version's image and the backend that builds it; refuses a version without a recipe. */
  async #target(caller: Caller, name: string, version: number): Promise<ImageTarget> {
    const found = await this.deps.templates.version(caller, name, version);
    const { definition } = found;
    if (!definition.image)
      throw new AppError(
        "template_invalid",
        `Template ${name}@${version} has no image recipe; its shells run on the ${definition.language} base image.`,
        { field: "image" },
      );
    const runtime = definition.runtime ?? "container";
    const placement = await this.deps.runtimes.backendFor(runtime);
    if ("refusal" in placement)
      throw new AppError(
        "runtime_unavailable",
        `Runtime ${runtime} is not available: ${placement.refusal.reason ?? "no backend"}.`,
        { runtime },
      );
    refuseWithoutCustomImages(placement.backend, runtime);
    const templateId = (await this.deps.templates.get(caller, name)).template.id;
    return {
      name,
      version,
      templateId,
      language: definition.language,
      image: sandboxImageOf(definition.language, definition.image),
      backend: placement.backend,
    };
  }
}
