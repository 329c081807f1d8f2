import { z } from "zod";
import { Approval, ApprovalDecision, ApprovalState, ApprovalWithdrawal } from "../iam.js";
import type { RouteSpec } from "./route-spec.js";

/** Approvals: the requests the org's approval gate parks, and the decisions on them. */
export const approvalRoutes = {
  listApprovals: {
    method: "GET",
    path: "/api/v1/approvals",
    summary: "Approval requests, newest first.",
    tag: "approvals",
    query: z.strictObject({
      state: ApprovalState.optional(),
    }),
    response: z.strictObject({ items: z.array(Approval) }),
    successStatus: 200,
    scope: "shells:instances:read",
  },
  getApproval: {
    method: "GET",
    path: "/api/v1/approvals/:id",
    summary: "One approval request.",
    tag: "approvals",
    params: z.strictObject({ id: z.string().min(1).max(64) }),
    response: Approval,
    successStatus: 200,
    scope: "shells:instances:read",
    example: { params: { id: "{approval}" } },
  },
  grantApproval: {
    method: "POST",
    path: "/api/v1/approvals/:id/grant",
    summary: "Grant a pending approval (listed approvers only): the action runs as its requester.",
    tag: "approvals",
    params: z.strictObject({ id: z.string().min(1).max(64) }),
    body: ApprovalDecision,
    response: Approval,
    successStatus: 200,
    scope: "shells:instances:control",
    example: { params: { id: "{approval}" }, body: { reason: "planned maintenance" } },
  },
  denyApproval: {
    method: "POST",
    path: "/api/v1/approvals/:id/deny",
    summary: "Deny a pending approval (listed approvers only).",
    tag: "approvals",
    params: z.strictObject({ id: z.string().min(1).max(64) }),
    body: ApprovalDecision,
    response: Approval,
    successStatus: 200,
    scope: "shells:instances:control",
    example: { params: { id: "{approval}" }, body: { reason: "not during the demo" } },
  },
  withdrawApproval: {
    method: "POST",
    path: "/api/v1/approvals/:id/withdraw",
    summary: "Withdraw your own pending approval: the held action never runs.",
    description:
      "Only the principal that made the request withdraws it (anyone else in the org: 403 `forbidden`); a decided, expired or withdrawn approval answers 409 `approval_closed`. A run waiting for review ends `cancelled`. The withdrawal is recorded as `approval.withdraw`.",
    tag: "approvals",
    params: z.strictObject({ id: z.string().min(1).max(64) }),
    body: ApprovalWithdrawal,
    bodyOptional: true,
    response: Approval,
    successStatus: 200,
    scope: "shells:instances:control",
    example: { params: { id: "{ownApproval}" }, body: { reason: "no longer needed" } },
  },
} as const satisfies Record<string, RouteSpec>;
