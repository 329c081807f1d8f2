import { Role } from "@shells/contract";
import type { Member } from "@l1fe/shells";
import { Argument, Option, type Command } from "commander";
import type { CliContext } from "../context.js";
import { formatAge, formatTable } from "../format.js";

/** One `shells members ls` row. */
export function memberRow(member: Member, nowMs: number): string[] {
  return [
    member.id,
    member.email,
    member.role,
    member.source,
    member.disabledAt === null ? "active" : "disabled",
    formatAge(member.createdAt, nowMs),
  ];
}

/** One line about a member after a change. */
function describeMember(verb: string, member: Member): string {
  const state = member.disabledAt === null ? "" : ", disabled";
  return `${verb} ${member.id} (${member.email}, ${member.role}${state})`;
}

/** `shells members ls|add|set-role|disable|rm`: the org's users and their roles. */
export function registerMembersCommand(program: Command, ctx: CliContext): void {
  const members = program
    .command("members")
    .description("manage the org's members and their roles (changes need the admin role)");

  members
    .command("ls")
    .alias("list")
    .description("list members")
    .action(async () => {
      const items = await ctx.client().members.list();
      if (ctx.json) return ctx.printJson(items);
      if (items.length === 0) return ctx.printErr("no members");
      const now = ctx.now();
      ctx.print(
        formatTable(
          ["id", "email", "role", "source", "status", "age"],
          items.map((member) => memberRow(member, now)),
        ),
      );
    });

  members
    .command("add")
    .description("add a member with a role (only owners add owners)")
    .argument("<email>", "the member's email address")
    .addOption(
      new Option("--role <role>", "membership role").choices(Role.options).makeOptionMandatory(),
    )
    .action(async (email: string, flags: { role: Role }) => {
      const member = await ctx.client().members.create({ email, role: flags.role });
      if (ctx.json) ctx.printJson(member);
      else ctx.print(describeMember("added", member));
    });

  members
    .command("set-role")
    .description("change a member's role (only owners touch owners)")
    .argument("<id>", "member id (see `shells members ls`)")
    .addArgument(new Argument("<role>", "the new role").choices(Role.options))
    .action(async (id: string, role: Role) => {
      const member = await ctx.client().members.update(id, { role });
      if (ctx.json) ctx.printJson(member);
      else ctx.print(describeMember("updated", member));
    });

  members
    .command("disable")
    .description("lock a member out: their requests are refused until re-enabled")
    .argument("<id>", "member id")
    .action(async (id: string) => {
      const member = await ctx.client().members.update(id, { disabled: true });
      if (ctx.json) ctx.printJson(member);
      else ctx.print(describeMember("disabled", member));
    });

  members
    .command("rm")
    .alias("remove")
    .description("remove a member: they are disabled and every key they hold is revoked")
    .argument("<id>", "member id")
    .action(async (id: string) => {
      const member = await ctx.client().members.remove(id);
      if (ctx.json) ctx.printJson(member);
      else ctx.print(describeMember("removed", member));
    });
}
