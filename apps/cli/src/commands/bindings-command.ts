import { BindingMethod } from "@shells/contract";
import { isPendingApproval, type Binding, type BindingCreate } from "@l1fe/shells";
import { Option, type Command } from "commander";
import { readFile } from "node:fs/promises";
import { resolve } from "node:path";
import type { CliContext } from "../context.js";
import { CliError, USAGE_EXIT_CODE } from "../errors.js";
import { formatAge, formatKeyValues, formatPendingApproval, formatTable } from "../format.js";
import { collect } from "../parsers.js";
import { readAll } from "./exec-command.js";

interface SecretFlags {
  secretFile?: string;
}

interface BindingCreateFlags extends SecretFlags {
  upstream: string;
  inject: string;
  path?: string[];
  method?: BindingCreate["methods"];
}

/**
 * The secret, read from `--secret-file` or from standard input — never from the command line,
 * where it would land in the shell's history and in every process listing. One trailing newline
 * (what `echo` and most editors add) is dropped.
 */
export async function readSecret(ctx: CliContext, flags: SecretFlags): Promise<string> {
  let text: string;
  if (flags.secretFile !== undefined) {
    const path = resolve(ctx.io.cwd, flags.secretFile);
    text = await readFile(path, "utf8").catch(() => {
      throw new CliError("file_not_found", `--secret-file ${flags.secretFile}: cannot read it`);
    });
  } else if (ctx.io.stdin.isTTY) {
    throw new CliError("usage", "the secret is read from standard input or --secret-file", {
      exitCode: USAGE_EXIT_CODE,
      hint: 'pipe it in, e.g. `printf %s "$TOKEN" | shells bindings create …`, or pass --secret-file PATH',
    });
  } else {
    text = await readAll(ctx.io.stdin);
  }
  const secret = text.replace(/\r?\n$/, "");
  if (secret === "")
    throw new CliError("usage", "the secret is empty", { exitCode: USAGE_EXIT_CODE });
  return secret;
}

/** A binding as `shells bindings create|rotate` print it: its rules, never its secret. */
export function formatBinding(binding: Binding): string {
  return formatKeyValues([
    ["binding", `${binding.name} (${binding.id})`],
    ["upstream", binding.upstream],
    ["inject", binding.inject],
    ["paths", binding.paths.join(" ")],
    ["methods", binding.methods.join(" ")],
    ["shell variable", binding.envVar],
    ["secret set", binding.rotatedAt],
  ]);
}

/** `shells bindings ls|create|rotate|delete`: the org's service bindings. */
export function registerBindingsCommand(program: Command, ctx: CliContext): void {
  const bindings = program
    .command("bindings")
    .description(
      "service bindings: secrets code in a shell can use but never sees (changes need the admin role)",
    );
  const secretFile = () =>
    new Option("--secret-file <path>", "read the secret from this file (default: standard input)");

  bindings
    .command("ls")
    .alias("list")
    .description("list the org's bindings; secrets are never shown")
    .action(async () => {
      const items = await ctx.client().bindings.list();
      if (ctx.json) return ctx.printJson(items);
      if (items.length === 0) return ctx.printErr("no bindings");
      const now = ctx.now();
      ctx.print(
        formatTable(
          ["name", "upstream", "methods", "paths", "secret set"],
          items.map((b) => [
            b.name,
            b.upstream,
            b.methods.join(","),
            b.paths.join(" "),
            `${formatAge(b.rotatedAt, now)} ago`,
          ]),
        ),
      );
    });

  bindings
    .command("create")
    .description(
      "create a binding; the secret comes from standard input or --secret-file, never the command line",
    )
    .argument(
      "<name>",
      "lowercase letters, digits and _; the shell variable is SHELLS_BINDING_<NAME>_URL",
    )
    .requiredOption("--upstream <url>", "https:// URL calls go to (the code appends its path)")
    .requiredOption(
      "--inject <template>",
      'the header that carries the secret, e.g. "Authorization: Bearer {secret}"',
    )
    .option(
      "--path <glob>",
      "path the code may call, e.g. /v1/* or /repos/** (repeatable; default /**)",
      collect,
    )
    .addOption(
      new Option("--method <method...>", "methods the code may use (default GET)").choices(
        BindingMethod.options,
      ),
    )
    .addOption(secretFile())
    .action(async (name: string, flags: BindingCreateFlags) => {
      const body: BindingCreate = {
        name,
        upstream: flags.upstream,
        inject: flags.inject,
        secret: await readSecret(ctx, flags),
        ...(flags.path === undefined ? {} : { paths: flags.path }),
        ...(flags.method === undefined ? {} : { methods: flags.method }),
      };
      const binding = await ctx.client().bindings.create(body);
      if (ctx.json) ctx.printJson(binding);
      else ctx.print(formatBinding(binding));
    });

  bindings
    .command("rotate")
    .description("replace a binding's secret (from standard input or --secret-file)")
    .argument("<name>", "binding name")
    .addOption(secretFile())
    .action(async (name: string, flags: SecretFlags) => {
      const binding = await ctx.client().bindings.rotate(name, {
        secret: await readSecret(ctx, flags),
      });
      if (ctx.json) ctx.printJson(binding);
      else ctx.print(formatBinding(binding));
    });

  bindings
    .command("delete")
    .alias("rm")
    .description("delete a binding and its secret; shells granted it are refused from then on")
    .argument("<name>", "binding name")
    .action(async (name: string) => {
      const binding = await ctx.client().bindings.remove(name);
      if (ctx.json) ctx.printJson(binding);
      else ctx.print(`deleted binding ${binding.name}`);
    });

  bindings
    .command("attach")
    .description(
      "grant a binding to a running shell (no restart); a template marked reviewBindings makes it wait for an approver",
    )
    .argument("<shell>", "shell id or name")
    .argument("<name>", "binding name")
    .action(async (shell: string, name: string) => {
      const result = await ctx.client().attachBinding(shell, name);
      if (ctx.json) ctx.printJson(result);
      else if (isPendingApproval(result)) ctx.print(formatPendingApproval(result, ctx.now()));
      else
        ctx.print(
          `attached binding ${name} to ${result.name}: http://127.0.0.1:3128/bindings/${name}/ inside the shell`,
        );
    });

  bindings
    .command("detach")
    .description("take a binding from a running shell; its next call through it is refused")
    .argument("<shell>", "shell id or name")
    .argument("<name>", "binding name")
    .action(async (shell: string, name: string) => {
      const result = await ctx.client().detachBinding(shell, name);
      if (ctx.json) ctx.printJson(result);
      else ctx.print(`detached binding ${name} from ${result.name}`);
    });
}
