import type { Command } from "commander";
import type { CliContext } from "../context.js";
import { formatAge, formatTable } from "../format.js";
import { registerProjectEgressCommand } from "./project-egress-command.js";

/** `shells projects ls|create|egress`: the org's projects and their egress rules. */
export function registerProjectsCommand(program: Command, ctx: CliContext): void {
  const projects = program
    .command("projects")
    .description("manage projects (a shell belongs to one: `shells create --project`)");

  projects
    .command("ls")
    .alias("list")
    .description("list projects")
    .action(async () => {
      const items = await ctx.client().projects.list();
      if (ctx.json) return ctx.printJson(items);
      if (items.length === 0) return ctx.printErr("no projects");
      const now = ctx.now();
      ctx.print(
        formatTable(
          ["id", "name", "age"],
          items.map((project) => [project.id, project.name, formatAge(project.createdAt, now)]),
        ),
      );
    });

  projects
    .command("create")
    .description("create a project (admins)")
    .argument("<name>", "lowercase letters, digits and inner dashes")
    .action(async (name: string) => {
      const project = await ctx.client().projects.create({ name });
      if (ctx.json) ctx.printJson(project);
      else ctx.print(`created project ${project.id} (${project.name})`);
    });

  registerProjectEgressCommand(projects, ctx);
}
