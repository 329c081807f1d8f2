import { Language } from "@shells/contract";
import { buildImage, listImages } from "@shells/backend-container";
import type { Command } from "commander";
import { join } from "node:path";
import type { CliContext } from "../context.js";
import { formatTable } from "../format.js";

/**
 * `shells images build [LANG…]` and `shells images ls`: the container backend's base images in the
 * local data dir (`<data dir>/container/images`, or `SHELLS_IMAGES_DIR`). Building needs root and
 * the Debian mirror; it shows progress as it goes.
 */
export function registerImagesCommand(program: Command, ctx: CliContext): void {
  const images = program
    .command("images")
    .description("build and list the container runtime's base images");
  const stateDir = () => join(ctx.dataDir, "container");
  // The server may share one images dir between data dirs (SHELLS_IMAGES_DIR); follow it here too.
  const imagesDir = process.env.SHELLS_IMAGES_DIR;

  images
    .command("build")
    .description("build (a new version of) the base image of each language, default all")
    .argument("[languages...]", `any of ${Language.options.join(", ")}`)
    .action(async (languages: string[]) => {
      const wanted = languages.length > 0 ? languages : Language.options;
      for (const language of wanted) {
        const parsed = Language.safeParse(language);
        if (!parsed.success) {
          ctx.printErr(
            `error: usage: unknown language ${language} (one of ${Language.options.join(", ")})`,
          );
          ctx.exitCode = 2;
          return;
        }
        ctx.printErr(`building the ${language} image…`);
        const info = await buildImage(stateDir(), parsed.data, {
          ...(imagesDir ? { imagesDir } : {}),
          onProgress: (event) =>
            ctx.printErr(
              `  ${language}: ${event.message}${event.percent === undefined ? "" : ` (${Math.round(event.percent)}%)`}`,
            ),
        });
        if (ctx.json) ctx.printJson(info);
        else ctx.print(`built ${info.version}`);
      }
    });

  images
    .command("ls")
    .description("list built images, newest first per language")
    .action(async () => {
      const list = await listImages(stateDir(), imagesDir);
      if (ctx.json) return ctx.printJson(list);
      if (list.length === 0)
        return ctx.print(
          "no images yet; they are built on first need, or with: shells images build",
        );
      ctx.print(
        formatTable(
          ["language", "version", "suite", "created"],
          list.map((i) => [i.language, i.version, i.suite, i.createdAt]),
        ),
      );
    });
}
