import { GatedAction, NetworkMode, RuntimeClass, type GateMode } from "@shells/contract";
import type { OrgPolicy, OrgPolicyUpdate } from "@l1fe/shells";
import { InvalidArgumentError, Option, type Command } from "commander";
import type { CliContext } from "../context.js";
import { formatKeyValues } from "../format.js";
import { parseCommaList, parseDurationSeconds, parseGate } from "../parsers.js";
import { egressRulesFrom, parsePortList } from "./project-egress-command.js";

interface PolicySetFlags {
  isolationFloor?: OrgPolicy["isolationFloor"];
  allowedRegions?: string[];
  termTtl?: number;
  defaultNetwork?: OrgPolicy["defaultNetwork"];
  gate?: Partial<Record<GatedAction, GateMode>>;
  approvers?: string[];
  approvalTtl?: number;
  webhookAllowCidrs?: string[];
  egressAllowHosts?: string[];
  egressDenyHosts?: string[];
  egressAllowCidrs?: string[];
  egressDenyCidrs?: string[];
  egressAllowPorts?: number[];
  egressDenyPorts?: number[];
  egressMaxConnections?: number;
  egressMaxBytes?: number;
  egressMaxRequestsPerSecond?: number;
}

/** The org's egress fields the flags set (`undefined`: none given). */
function egressUpdateFrom(flags: PolicySetFlags): OrgPolicyUpdate["egress"] {
  const egress = {
    ...egressRulesFrom({
      allowHosts: flags.egressAllowHosts,
      denyHosts: flags.egressDenyHosts,
      allowCidrs: flags.egressAllowCidrs,
      denyCidrs: flags.egressDenyCidrs,
      allowPorts: flags.egressAllowPorts,
      denyPorts: flags.egressDenyPorts,
    }),
    ...(flags.egressMaxConnections === undefined
      ? {}
      : { maxConnections: flags.egressMaxConnections }),
    ...(flags.egressMaxBytes === undefined ? {} : { maxBytes: flags.egressMaxBytes }),
    ...(flags.egressMaxRequestsPerSecond === undefined
      ? {}
      : { maxRequestsPerSecond: flags.egressMaxRequestsPerSecond }),
  };
  return Object.keys(egress).length > 0 ? egress : undefined;
}

/** A whole number of at least `min`, for a flag. */
function parseCount(min: number): (value: string) => number {
  return (value) => {
    const n = Number(value);
    if (!/^\d+$/.test(value) || !Number.isSafeInteger(n) || n < min)
      throw new InvalidArgumentError(`expected a whole number of at least ${min} (got ${value}).`);
    return n;
  };
}

/** The `PATCH /org/policy` body the flags describe; flags left out keep the policy's value. */
export function policyUpdateFrom(flags: PolicySetFlags): OrgPolicyUpdate {
  const egress = egressUpdateFrom(flags);
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
    ...(egress === undefined ? {} : { egress }),
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
    ...egressLines(policy.egress),
  ]);
}

/** The org's egress rules and limits as `shells policy get|set` print them. */
function egressLines(egress: OrgPolicy["egress"]): [string, string][] {
  if (!egress) return [];
  const list = (values: readonly (string | number)[], empty: string) =>
    values.length > 0 ? values.join(", ") : empty;
  return [
    ["egress allow hosts", list(egress.allowHosts, "any")],
    ["egress deny hosts", list(egress.denyHosts, "none")],
    ["egress private ranges", list(egress.allowCidrs, "none")],
    ["egress deny cidrs", list(egress.denyCidrs, "none")],
    ["egress allow ports", list(egress.allowPorts, "any")],
    ["egress deny ports", list(egress.denyPorts, "none")],
    ["egress connections per shell", String(egress.maxConnections)],
    ["egress bytes per shell", String(egress.maxBytes)],
    ["egress requests/s per shell", String(egress.maxRequestsPerSecond)],
  ];
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
    .option(
      "--egress-allow-hosts <a,b>",
      'internet shells may reach only these hosts (exact or *.suffix; "" for any)',
      parseCommaList,
    )
    .option("--egress-deny-hosts <a,b>", "internet shells never reach these hosts", parseCommaList)
    .option(
      "--egress-allow-cidrs <cidr,cidr>",
      'non-public ranges internet shells may reach all the same ("" for none)',
      parseCommaList,
    )
    .option("--egress-deny-cidrs <cidr,cidr>", "never these ranges, even public", parseCommaList)
    .option("--egress-allow-ports <p,p>", 'only these ports ("" for any)', parsePortList)
    .option("--egress-deny-ports <p,p>", "never these ports", parsePortList)
    .option(
      "--egress-max-connections <n>",
      "connections one shell may hold open through its egress proxy",
      parseCount(1),
    )
    .option(
      "--egress-max-bytes <n>",
      "bytes one shell may move through its proxy before it is stopped (egress_limit)",
      parseCount(1024),
    )
    .option(
      "--egress-max-requests-per-second <n>",
      "requests one shell may make through its proxy per second",
      parseCount(1),
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
