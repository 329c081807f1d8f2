import { Approval as ApprovalSchema } from "@shells/contract";
import type { Approval, ApprovalState } from "@l1fe/shells";
import { Option, type Command } from "commander";
import type { CliContext } from "../context.js";
import {
  formatAge,
  formatApproval,
  formatPrincipal,
  formatTable,
  formatTimeUntil,
} from "../format.js";

/** One `shells approvals ls` row. */
export function approvalRow(approval: Approval, nowMs: number): string[] {
  return [
    approval.id,
    approval.state,
    approval.action,
    approval.shellId,
    formatPrincipal(approval.requestedBy),
    formatAge(approval.createdAt, nowMs),
    approval.state === "pending" ? `in ${formatTimeUntil(approval.expiresAt, nowMs)}` : "-",
    approval.outcome ?? "-",
  ];
}

/** `shells approvals ls|get|grant|deny|withdraw`: destructive actions waiting for an approver. */
export function registerApprovalsCommand(program: Command, ctx: CliContext): void {
  const approvals = program
    .command("approvals")
    .description("list and decide approvals of gated actions (deciding: listed approvers only)");

  approvals
    .command("ls")
    .alias("list")
    .description("list approvals, newest first")
    .addOption(
      new Option("--state <state>", "only approvals in this state").choices(
        ApprovalSchema.shape.state.options,
      ),
    )
    .action(async (flags: { state?: ApprovalState }) => {
      const items = await ctx.client().approvals.list(flags);
      if (ctx.json) return ctx.printJson(items);
      if (items.length === 0) return ctx.printErr("no approvals");
      const now = ctx.now();
      ctx.print(
        formatTable(
          ["id", "state", "action", "shell", "requested by", "age", "expires", "outcome"],
          items.map((approval) => approvalRow(approval, now)),
        ),
      );
    });

  approvals
    .command("get")
    .alias("show")
    .description("show one approval")
    .argument("<id>", "approval id")
    .action(async (id: string) => {
      const approval = await ctx.client().approvals.get(id);
      if (ctx.json) ctx.printJson(approval);
      else ctx.print(formatApproval(approval, ctx.now()));
    });

  approvals
    .command("grant")
    .description("grant a pending approval: the action runs now, as its requester")
    .argument("<id>", "approval id")
    .requiredOption("--reason <text>", "why (recorded in the activity log)")
    .action(async (id: string, flags: { reason: string }) => {
      const approval = await ctx.client().approvals.grant(id, { reason: flags.reason });
      // The grant is recorded either way; the exit status says whether the action then ran.
      if (approval.outcome !== null && approval.outcome !== "success") ctx.exitCode = 1;
      if (ctx.json) ctx.printJson(approval);
      else ctx.print(formatApproval(approval, ctx.now()));
    });

  approvals
    .command("deny")
    .description("deny a pending approval: the action does not run")
    .argument("<id>", "approval id")
    .requiredOption("--reason <text>", "why (recorded in the activity log)")
    .action(async (id: string, flags: { reason: string }) => {
      const approval = await ctx.client().approvals.deny(id, { reason: flags.reason });
      if (ctx.json) ctx.printJson(approval);
      else ctx.print(formatApproval(approval, ctx.now()));
    });

  approvals
    .command("withdraw")
    .description("withdraw your own pending approval: the action never runs")
    .argument("<id>", "approval id")
    .option("--reason <text>", "why (recorded in the activity log)")
    .action(async (id: string, flags: { reason?: string }) => {
      const approval = await ctx
        .client()
        .approvals.withdraw(id, flags.reason === undefined ? {} : { reason: flags.reason });
      if (ctx.json) ctx.printJson(approval);
      else ctx.print(formatApproval(approval, ctx.now()));
    });
}
