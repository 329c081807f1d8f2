import { Role } from "@shells/contract";
import type { Agent } from "@l1fe/shells";
import { Option, type Command } from "commander";
import type { CliContext } from "../context.js";
import { formatAge, formatTable } from "../format.js";

/** One `shells agents ls` row. */
export function agentRow(agent: Agent, nowMs: number): string[] {
  return [
    agent.id,
    agent.name,
    agent.role,
    agent.disabledAt === null ? "active" : "disabled",
    formatAge(agent.createdAt, nowMs),
  ];
}

/** `shells agents ls|create|rm`: non-human principals. */
export function registerAgentsCommand(program: Command, ctx: CliContext): void {
  const agents = program
    .command("agents")
    .description("manage agents: non-human principals that act through their own keys");

  agents
    .command("ls")
    .alias("list")
    .description("list agents")
    .action(async () => {
      const items = await ctx.client().agents.list();
      if (ctx.json) return ctx.printJson(items);
      if (items.length === 0) return ctx.printErr("no agents");
      const now = ctx.now();
      ctx.print(
        formatTable(
          ["id", "name", "role", "status", "age"],
          items.map((agent) => agentRow(agent, now)),
        ),
      );
    });

  agents
    .command("create")
    .description("create an agent (admins); then issue it a key and grant it the entitlement")
    .argument("<name>", "lowercase letters, digits and inner dashes")
    .addOption(
      new Option("--role <role>", "the agent's role (default: developer)").choices(
        Role.exclude(["owner"]).options,
      ),
    )
    .action(async (name: string, flags: { role?: Exclude<Role, "owner"> }) => {
      const agent = await ctx
        .client()
        .agents.create(flags.role === undefined ? { name } : { name, role: flags.role });
      if (ctx.json) return ctx.printJson(agent);
      ctx.print(`created agent ${agent.id} (${agent.name}, ${agent.role})`);
      ctx.print(
        `next: shells keys create --agent ${agent.id} --name ${agent.name} --scope shells:agent:invoke --scope shells:instances:read`,
      );
    });

  agents
    .command("rm")
    .alias("remove")
    .description("disable an agent: its keys are revoked and its entitlements withdrawn")
    .argument("<id>", "agent id")
    .action(async (id: string) => {
      const agent = await ctx.client().agents.remove(id);
      if (ctx.json) ctx.printJson(agent);
      else ctx.print(`removed agent ${agent.id} (${agent.name}); its keys are revoked`);
    });
}
