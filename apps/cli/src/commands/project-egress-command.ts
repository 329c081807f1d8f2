import { isPendingApproval, type EgressRules, type ProjectEgress } from "@l1fe/shells";
import { InvalidArgumentError, type Command } from "commander";
import type { CliContext } from "../context.js";
import { formatKeyValues, formatPendingApproval } from "../format.js";
import { parseCommaList } from "../parsers.js";

interface EgressFlags {
  allowHosts?: string[];
  denyHosts?: string[];
  allowCidrs?: string[];
  denyCidrs?: string[];
  allowPorts?: number[];
  denyPorts?: number[];
  clear?: boolean;
}

const LISTS = [
  "allowHosts",
  "denyHosts",
  "allowCidrs",
  "denyCidrs",
  "allowPorts",
  "denyPorts",
] as const;

/** A comma-separated list of ports (`80,443`); `""` is the empty list. */
export function parsePortList(value: string): number[] {
  return parseCommaList(value).map((item) => {
    const port = Number(item);
    if (!/^\d{1,5}$/.test(item) || port < 1 || port > 65535)
      throw new InvalidArgumentError(`expected ports 1-65535, e.g. 80,443 (got ${item}).`);
    return port;
  });
}

/** The rules the flags describe: only the lists given (a list left out says nothing). */
export function egressRulesFrom(flags: EgressFlags): EgressRules {
  const rules: Record<string, unknown[]> = {};
  for (const key of LISTS) {
    const list = flags[key];
    if (list !== undefined) rules[key] = list;
  }
  return rules;
}

/** A project's egress rules as `shells projects egress` prints them. */
export function formatProjectEgress(egress: ProjectEgress): string {
  const list = (values: readonly (string | number)[] | undefined, empty: string) =>
    values === undefined ? "- (the org decides)" : values.length > 0 ? values.join(", ") : empty;
  const { rules } = egress;
  return formatKeyValues([
    ["project", egress.project],
    ["allow hosts", list(rules.allowHosts, "any")],
    ["deny hosts", list(rules.denyHosts, "none")],
    ["allow cidrs", list(rules.allowCidrs, "none (no non-public range)")],
    ["deny cidrs", list(rules.denyCidrs, "none")],
    ["allow ports", list(rules.allowPorts, "any")],
    ["deny ports", list(rules.denyPorts, "none")],
    [
      "updated",
      egress.updatedAt ? `${egress.updatedAt} by ${egress.updatedBy?.id ?? "?"}` : "never",
    ],
  ]);
}

/** `shells projects egress <project>`: show or replace a project's egress rules. */
export function registerProjectEgressCommand(projects: Command, ctx: CliContext): void {
  projects
    .command("egress")
    .description(
      "show a project's egress rules, or replace them (admins): the lists given become the project's rules, below the org's policy (they can only narrow it)",
    )
    .argument("<project>", "project name")
    .option(
      "--allow-hosts <a,b>",
      'only these hosts (exact or *.suffix; "" for any)',
      parseCommaList,
    )
    .option("--deny-hosts <a,b>", "never these hosts", parseCommaList)
    .option(
      "--allow-cidrs <cidr,cidr>",
      'keep open only these of the org\'s non-public ranges ("" closes them all)',
      parseCommaList,
    )
    .option("--deny-cidrs <cidr,cidr>", "never these address ranges", parseCommaList)
    .option("--allow-ports <80,443>", 'only these destination ports ("" for any)', parsePortList)
    .option("--deny-ports <25,22>", "never these destination ports", parsePortList)
    .option("--clear", "remove the project's rules (the org's policy alone)")
    .option(
      "--confirm <project>",
      "the project's name, when the org gates widening its rules by typed confirmation",
    )
    .action(
      async (project: string, flags: EgressFlags & { confirm?: string }, command: Command) => {
        const rules = egressRulesFrom(flags);
        const changing = flags.clear === true || Object.keys(rules).length > 0;
        if (flags.clear && Object.keys(rules).length > 0)
          command.error("error: --clear takes no list options");
        const client = ctx.client().projects;
        const egress = changing
          ? await client.setEgress(
              project,
              flags.clear ? {} : rules,
              flags.confirm === undefined ? {} : { confirm: flags.confirm },
            )
          : await client.getEgress(project);
        if (ctx.json) ctx.printJson(egress);
        else if (isPendingApproval(egress)) ctx.print(formatPendingApproval(egress, ctx.now()));
        else ctx.print(formatProjectEgress(egress));
      },
    );
}
