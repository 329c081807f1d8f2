import { TemplateDefinition, type TemplateVersion } from "@shells/contract";
import type { Command } from "commander";
import type { CliContext } from "../context.js";
import { CliError, USAGE_EXIT_CODE } from "../errors.js";
import { formatAge, formatKeyValues, formatTable } from "../format.js";
import { readJsonFile } from "../json-file.js";

/** A version as `shells templates create|version|show` print it. */
function formatVersion(version: TemplateVersion): string {
  const d = version.definition;
  return formatKeyValues([
    ["template", `${version.template}@${version.version}`],
    ["sha256", version.sha256],
    ["language", d.language],
    ["runtime", d.runtime ?? "(server default)"],
    [
      "network",
      d.egress
        ? `allowlist ${d.egress.allow.join(" ")}` +
          (d.egress.deny
            ? `, deny ${[...(d.egress.deny.hosts ?? []), ...(d.egress.deny.cidrs ?? []), ...(d.egress.deny.ports ?? []).map((p) => `port ${p}`)].join(" ")}`
            : "")
        : (d.network ?? "(org default)"),
    ],
    ["bindings", (d.bindings ?? []).join(" ") || "none"],
    [
      "image",
      d.image
        ? `base + ${d.image.packages.join(" ") || "no packages"}` +
          Object.entries(d.image.toolchains ?? {})
            .map(([name, version]) => `, ${name} ${version}`)
            .join("") +
          (d.image.files?.length ? `, files ${d.image.files.map((f) => f.path).join(" ")}` : "")
        : "base image",
    ],
    [
      "files",
      (d.files ?? []).map((f) => f.path + (f.readOnly ? " (read-only)" : "")).join(" ") || "none",
    ],
    ["metadata", (d.metadata ?? []).map((m) => `${m.kind}s/${m.name}`).join(" ") || "none"],
    ["review before run", d.reviewBeforeRun ? "yes" : "no"],
    ["locks", (d.locks ?? []).join(" ") || "none"],
    ["created by", `${version.createdBy.type} ${version.createdBy.id}`],
  ]);
}

function versionNumber(text: string): number {
  const value = Number(text);
  if (!Number.isInteger(value) || value < 1)
    throw new CliError("usage", `${text} is not a version number`, { exitCode: USAGE_EXIT_CODE });
  return value;
}

/** `name@version` (or `name`, the latest version) as a name and a version number, if given. */
function parseRef(ref: string): { name: string; version: number | undefined } {
  const [name = "", at] = ref.split("@");
  return { name, version: at === undefined ? undefined : versionNumber(at) };
}

/** `shells templates ls|show|create|version|diff|build`: the org's versioned sandbox definitions. */
export function registerTemplatesCommand(program: Command, ctx: CliContext): void {
  const templates = program
    .command("templates")
    .description(
      "templates: versioned sandbox definitions shells and runs start from (changes need the admin role)",
    );
  const readDefinition = (file: string) =>
    readJsonFile(ctx.io.cwd, file, TemplateDefinition, "a template definition (JSON)");

  templates
    .command("ls")
    .alias("list")
    .description("list the org's templates")
    .action(async () => {
      const items = await ctx.client().templates.list();
      if (ctx.json) return ctx.printJson(items);
      if (items.length === 0) return ctx.printErr("no templates");
      const now = ctx.now();
      ctx.print(
        formatTable(
          ["name", "latest", "project", "changed"],
          items.map((t) => [
            t.name,
            String(t.latestVersion),
            t.project ?? "(org)",
            `${formatAge(t.updatedAt, now)} ago`,
          ]),
        ),
      );
    });

  templates
    .command("show")
    .description("show a template's latest version, or name@version")
    .argument("<template>", "name or name@version")
    .action(async (ref: string) => {
      const { name, version: at } = parseRef(ref);
      const version =
        at === undefined
          ? (await ctx.client().templates.get(name)).latest
          : await ctx.client().templates.version(name, at);
      if (ctx.json) ctx.printJson(version);
      else ctx.print(formatVersion(version));
    });

  templates
    .command("create")
    .description("create a template; its version 1 is the definition in FILE (JSON)")
    .argument("<name>", "lowercase letters, digits and inner dashes")
    .requiredOption("-f, --file <path>", "the definition, as JSON")
    .option("--project <name>", "scope it to one project (default: the whole org)")
    .action(async (name: string, flags: { file: string; project?: string }) => {
      const version = await ctx.client().templates.create({
        name,
        ...(flags.project === undefined ? {} : { project: flags.project }),
        definition: await readDefinition(flags.file),
      });
      if (ctx.json) ctx.printJson(version);
      else ctx.print(formatVersion(version));
    });

  templates
    .command("version")
    .description(
      "add the next version of a template from FILE (JSON); earlier versions never change",
    )
    .argument("<name>", "template name")
    .requiredOption("-f, --file <path>", "the definition, as JSON")
    .action(async (name: string, flags: { file: string }) => {
      const version = await ctx.client().templates.addVersion(name, {
        definition: await readDefinition(flags.file),
      });
      if (ctx.json) ctx.printJson(version);
      else ctx.print(formatVersion(version));
    });

  templates
    .command("diff")
    .description("what changed between two versions, field by field")
    .argument("<name>", "template name")
    .argument("<from>", "version")
    .argument("<to>", "version")
    .action(async (name: string, from: string, to: string) => {
      const diff = await ctx.client().templates.diff(name, versionNumber(from), versionNumber(to));
      if (ctx.json) return ctx.printJson(diff);
      if (diff.changes.length === 0) return ctx.print(`${name}@${from} and @${to} are the same`);
      ctx.print(
        formatTable(
          ["field", "change", "from", "to"],
          diff.changes.map((c) => [
            c.field,
            c.change,
            c.from === null ? "" : JSON.stringify(c.from),
            c.to === null ? "" : JSON.stringify(c.to),
          ]),
        ),
      );
    });

  templates
    .command("build")
    .description(
      "build a version's custom image (its `image` recipe) now, ahead of its first shell, showing each step; a cached image answers at once",
    )
    .argument("<template>", "name (latest version) or name@version")
    .action(async (ref: string) => {
      const client = ctx.client();
      const parsed = parseRef(ref);
      const version = parsed.version ?? (await client.templates.get(parsed.name)).latest.version;
      const image = await client.templates.buildImage(parsed.name, version, {
        onProgress: (step) => {
          if (step.state !== "building" || ctx.json) return;
          const percent = step.percent === null ? "" : ` (${Math.round(step.percent)}%)`;
          ctx.printErr(`building ${step.imageId}: ${step.message ?? ""}${percent}`);
        },
      });
      if (ctx.json) ctx.printJson(image);
      else if (image.state === "ready")
        ctx.print(`${parsed.name}@${version}: image ${image.imageId} is ready`);
      if (image.state === "failed")
        throw new CliError(
          "failed",
          `the image build failed: ${image.message ?? "no reason given"}`,
        );
    });
}
