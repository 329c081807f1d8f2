import { Language } from "@shells/contract";
import {
  buildImage,
  ensureImage,
  imagesDirOf,
  listImages,
  presetVersions,
} from "@shells/backend-container";
import { MicrovmBackend, type BuildProgress } from "@shells/backend-microvm";
import type { Command } from "commander";
import { join } from "node:path";
import type { CliContext } from "../context.js";
import { formatTable } from "../format.js";

/**
 * `shells images build [LANG…]` and `shells images ls`: the container backend's base images in the
 * local data dir (`<data dir>/container/images`, or `SHELLS_IMAGES_DIR`). Building needs root and
 * the Debian mirror; it shows progress as it goes. `shells images build --runtime microvm [LANG…]`
 * makes the microvm templates (guest kernel, base disk from the image, one cold boot, a saved VM
 * state) under `<data dir>/microvm/cache` (or `SHELLS_MICROVM_CACHE_DIR`), so the server's first
 * microvm create of a language restores at once instead of making it.
 */
export function registerImagesCommand(program: Command, ctx: CliContext): void {
  const images = program
    .command("images")
    .description("build and list the base images (and microvm templates) shells start from");
  const stateDir = () => join(ctx.dataDir, "container");
  // The server may share one images dir between data dirs (SHELLS_IMAGES_DIR); follow it here too.
  const imagesDir = process.env.SHELLS_IMAGES_DIR;
  // The microvm backend as the server over the same data dir sets it up: templates made here are
  // the ones its creates restore (SHELLS_MICROVM_CACHE_DIR followed like SHELLS_IMAGES_DIR).
  const microvmBackend = (onProgress: (event: BuildProgress) => void) =>
    new MicrovmBackend({
      stateDir: join(ctx.dataDir, "microvm"),
      cacheDir: ctx.io.env.SHELLS_MICROVM_CACHE_DIR ?? join(ctx.dataDir, "microvm", "cache"),
      images: (language, onImageProgress) =>
        ensureImage(imagesDir ?? imagesDirOf(stateDir()), language, {
          onProgress: onImageProgress ?? onProgress,
        }),
      onProgress,
    });

  images
    .command("build")
    .description(
      "build (a new version of) the base image of each language, default all; with --runtime microvm, make each language's microvm template instead",
    )
    .argument("[languages...]", `any of ${Language.options.join(", ")}`)
    .option(
      "--runtime <class>",
      "container (base images) or microvm (saved VM templates)",
      "container",
    )
    .option(
      "--memory-mb <n>",
      "microvm: the memory size shells will ask for (a template per size; the server's default is 512)",
      "512",
    )
    .action(async (languages: string[], options: { runtime: string; memoryMb: string }) => {
      const wanted = languages.length > 0 ? languages : Language.options;
      const parsed = wanted.map((language) => Language.safeParse(language));
      const unknown = wanted.find((_, i) => !parsed[i]?.success);
      if (unknown !== undefined) {
        ctx.printErr(
          `error: usage: unknown language ${unknown} (one of ${Language.options.join(", ")})`,
        );
        ctx.exitCode = 2;
        return;
      }
      const memoryMb = Number(options.memoryMb);
      if (
        !["container", "microvm"].includes(options.runtime) ||
        !Number.isInteger(memoryMb) ||
        memoryMb < 64
      ) {
        ctx.printErr(
          "error: usage: --runtime is container or microvm, --memory-mb a whole number of MiB (64 or more)",
        );
        ctx.exitCode = 2;
        return;
      }
      for (const language of parsed.map((p) => p.data as Language)) {
        const progress = (event: { message: string; percent?: number }) =>
          ctx.printErr(
            `  ${language}: ${event.message}${event.percent === undefined ? "" : ` (${Math.round(event.percent)}%)`}`,
          );
        if (options.runtime === "microvm") {
          ctx.printErr(`making the ${language} microvm template (${memoryMb} MiB)…`);
          const template = await microvmBackend(progress).prepare(language, memoryMb);
          if (ctx.json) ctx.printJson(template);
          else
            ctx.print(
              `${language} microvm template ready: ${template.imageVersion}, ${template.memoryMb} MiB, ${template.accel === "kvm" ? "kvm" : "emulated"}`,
            );
          continue;
        }
        ctx.printErr(`building the ${language} image…`);
        const info = await buildImage(stateDir(), language, {
          ...(imagesDir ? { imagesDir } : {}),
          onProgress: progress,
        });
        if (ctx.json) ctx.printJson(info);
        else ctx.print(`built ${info.version}`);
      }
    });

  images
    .command("ls")
    .description(
      "list built images, newest first per language, with the toolchain version each language's newest holds",
    )
    .action(async () => {
      const list = await listImages(stateDir(), imagesDir);
      const presets = await presetVersions(stateDir(), imagesDir);
      if (ctx.json) return ctx.printJson(list);
      if (list.length === 0)
        return ctx.print(
          "no images yet; they are built on first need, or with: shells images build",
        );
      ctx.print(
        formatTable(
          ["language", "version", "suite", "toolchain", "created"],
          list.map((i) => {
            const preset = presets.find((p) => p.image === i.version);
            const toolchain = preset?.version ? `${preset.toolchain} ${preset.version}` : "";
            return [i.language, i.version, i.suite, toolchain, i.createdAt];
          }),
        ),
      );
    });
}
