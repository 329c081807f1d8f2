import { z } from "zod";
import { OidcSettings, ServerConfig, documentedSettings, type SettingDoc } from "./config.js";

/** Fields set only in code (tests), with no flag or variable: left out of the reference. */
export const PROGRAMMATIC_SETTINGS = ["egressTestHosts", "oidc"] as const;

/** A schema's default as the reference shows it, read from the schema itself. */
function defaultOf(schema: z.ZodType): unknown {
  let current: z.ZodType | undefined = schema;
  while (current) {
    if (current instanceof z.ZodDefault) return current.def.defaultValue;
    if (current instanceof z.ZodPipe) current = current.def.in as z.ZodType;
    else if (current instanceof z.ZodOptional || current instanceof z.ZodNullable) return undefined;
    else return undefined;
  }
  return undefined;
}

/** A table cell: one line, with pipes escaped. */
const cell = (text: string) => text.replace(/\|/g, "\\|").replace(/\n/g, " ");

function defaultText(schema: z.ZodType, doc: SettingDoc): string {
  if (doc.defaultText) return doc.defaultText;
  const value = defaultOf(schema);
  if (value === undefined) return "unset";
  return `\`${typeof value === "string" ? value : JSON.stringify(value)}\``;
}

function table(settings: ReturnType<typeof documentedSettings>): string[] {
  return [
    "| Variable | Flag | Default | Unit | Description |",
    "| --- | --- | --- | --- | --- |",
    ...settings.map(({ schema, doc }) =>
      [
        "",
        `\`${doc.env}\``,
        doc.flag ? `\`${doc.flag}\`` : "",
        cell(defaultText(schema, doc)),
        doc.unit ?? "",
        cell(doc.description),
        "",
      ]
        .join(" | ")
        .trim(),
    ),
  ];
}

/**
 * The configuration reference, `docs/configuration.md`, as Markdown: every setting of
 * `ServerConfig` and the OIDC settings, from the `SettingDoc` registered beside each schema. A
 * test fails when the committed file differs from this, so the two cannot drift; `npm run
 * docs:config` writes it.
 */
export function renderConfigReference(): string {
  return [
    "# Configuration reference",
    "",
    "<!-- Generated from apps/server/src/config.ts by `npm run docs:config`; do not edit. -->",
    "",
    "The server (`shells serve`, `node apps/server/dist/server.js`, the container image) reads its",
    "settings once at start: a command-line flag wins over its environment variable, which wins over",
    "the default. A bad value stops the server with the variable's name and what is wrong.",
    "",
    "## Server",
    "",
    ...table(documentedSettings(ServerConfig.shape)),
    "",
    "## OpenID Connect",
    "",
    "OIDC is on when `SHELLS_OIDC_ISSUER` is set; the hosted profile (`SHELLS_PROFILE=hosted`) refuses",
    "to start without it.",
    "",
    ...table(documentedSettings(OidcSettings.shape)),
    "",
  ].join("\n");
}
