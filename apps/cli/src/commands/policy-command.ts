import { GatedAction, NetworkMode, RuntimeClass, type GateMode } from "@shells/contract";
import type { OrgPolicy, OrgPolicyUpdate } from "@l1fe/shells";
import { Option, type Command } from "commander";
import type { CliContext } from "../context.js";
import { formatKeyValues } from "../format.js";
import { parseCommaList, parseDurationSeconds, parseGate } from "../parsers.js";

interface PolicySetFlags {
  isolationFloor?: OrgPolicy["isolationFloor"];
  allowedRegions?: string[];
  termTtl?: number;
  defaultNetwork?: OrgPolicy["defaultNetwork"];
  gate?: Partial<Record<GatedAction, GateMode>>;
  approvers?: string[];
  approvalTtl?: number;
  webhookAllowCidrs?: string[];
}

/** The `PATCH /org/policy` body the flags describe; flags left out keep the policy's value. */
export function policyUpdateFrom(flags: PolicySetFlags): OrgPolicyUpdate {
  return {
    ...(flags.isolationFloor === undefined ? {} : { isolationFloor: flags.isolationFloor }),
    ...(flags.allowedRegions === undefined ? {} : { allowedRegions: flags.allowedRegions }),
    ...(flags.termTtl === undefined ? {} : { termCredentialTtlSeconds: flags.termTtl }),
    ...(flags.defaultNetwork === undefined ? {} : { defaultNetwork: flags.defaultNetwork }),
    ...(flags.gate === undefined ? {} : { approvalGates: flags.gate }),
    ...(flags.approvers === undefined ? {} : { approvers: flags.approvers }),
    ...(flags.approvalTtl === undefined ? {} : { approvalTtlSeconds: flags.approvalTtl }),
    ...(flags.webhookAllowCidrs === undefined
      ? {}
      : { webhooks: { allowCidrs: flags.webhookAllowCidrs } }),
  };
}

/** The org policy as `shells policy get|set` print it. */
export function formatPolicy(policy: OrgPolicy): string {
  return formatKeyValues([
    ["isolation floor", policy.isolationFloor],
    [
      "allowed regions",
      policy.allowedRegions.length > 0 ? policy.allowedRegions.join(", ") : "any",
    ],
    ["term credential ttl", `${policy.termCredentialTtlSeconds}s`],
    ["default network", policy.defaultNetwork],
    ...GatedAction.options.map((action): [string, string] => [
      `gate ${action}`,
      policy.approvalGates[action],
    ]),
    ["approvers", policy.approvers.length > 0 ? policy.approvers.join(", ") : "-"],
    ["approval ttl", `${policy.approvalTtlSeconds}s`],
    [
      "webhook private ranges",
      policy.webhooks?.allowCidrs.length ? policy.webhooks.allowCidrs.join(", ") : "none",
    ],
  ]);
}

/** `shells policy get|set`: the org's governance settings. */
export function registerPolicyCommand(program: Command, ctx: CliContext): void {
  const policy = program
    .command("policy")
    .description("show or change the org's policy (changes need the admin role)");

  policy
    .command("get")
    .alias("show")
    .description("show the org's policy")
    .action(async () => {
      const current = await ctx.client().policy.get();
      if (ctx.json) ctx.printJson(current);
      else ctx.print(formatPolicy(current));
    });

  policy
    .command("set")
    .description("change the org's policy; options left out keep their value")
    .addOption(
      new Option(
        "--isolation-floor <class>",
        "weakest runtime class shells may use; weaker ones are refused",
      ).choices(RuntimeClass.options),
    )
    .option("--allowed-regions <a,b>", 'regions shells may run in ("" for any)', parseCommaList)
    .option(
      "--term-ttl <duration>",
      "lifetime of term credentials (e.g. 300, 5m)",
      parseDurationSeconds,
    )
    .addOption(
      new Option("--default-network <mode>", "network mode of new shells").choices(
        NetworkMode.options,
      ),
    )
    .option(
      "--gate <action=mode>",
      `gate a destructive action (${GatedAction.options.join("|")}) by none|confirm|approvers (repeatable)`,
      parseGate,
    )
    .option("--approvers <id,id>", "member ids who decide approvals", parseCommaList)
    .option(
      "--approval-ttl <duration>",
      "how long a pending approval waits before it expires (e.g. 1h)",
      parseDurationSeconds,
    )
    .option(
      "--webhook-allow-cidrs <cidr,cidr>",
      'non-public ranges webhook endpoints may be at, e.g. 127.0.0.1/32 ("" for none)',
      parseCommaList,
    )
    .action(async (flags: PolicySetFlags, command: Command) => {
      const update = policyUpdateFrom(flags);
      if (Object.keys(update).length === 0)
        command.error("error: nothing to change: pass at least one option");
      const updated = await ctx.client().policy.update(update);
      if (ctx.json) ctx.printJson(updated);
      else ctx.print(formatPolicy(updated));
    });
}
