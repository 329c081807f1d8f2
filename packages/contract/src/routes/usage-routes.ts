import { z } from "zod";
import {
  CapStatus,
  GovernanceQuery,
  GovernanceReport,
  ProjectCaps,
  RateCard,
  RateCardUpdate,
  UsageQuery,
  UsageReport,
} from "../usage.js";
import type { RouteSpec } from "./route-spec.js";

const projectName = z
  .string()
  .min(1)
  .max(63)
  .regex(/^[a-z0-9]([a-z0-9-]*[a-z0-9])?$/, "a project name");

/** Spend and operations: metered usage with its cost, the org's rates, per-project caps, governance metrics. */
export const usageRoutes = {
  getUsage: {
    method: "GET",
    path: "/api/v1/usage",
    summary: "Metered usage and its cost: seconds per state, CPU, memory and egress, by group.",
    description:
      "Every shell is metered per state (provisioning, running, stopped, error) to the millisecond, by runtime class, with the CPU time, memory (MB × s) and egress bytes its backend reports. Cost uses the rates in effect when the time was metered. Group by `hour` or `day` (UTC), `class`, `project`, `shell`, `actor`. `format=csv` or `Accept: text/csv` answers CSV with the same columns.",
    tag: "usage",
    query: UsageQuery,
    response: UsageReport,
    alternateResponse: {
      contentType: "text/csv",
      description:
        "One line per row: period, runtime, project, shell, actor (the grouped ones), seconds per state, cpu_seconds, memory_mb_seconds, egress_bytes, cost, currency.",
    },
    successStatus: 200,
    scope: "shells:instances:read",
    example: { query: { groupBy: "day,class" } },
  },
  getRates: {
    method: "GET",
    path: "/api/v1/usage/rates",
    summary: "The org's rate card: what each runtime class costs per hour running and stopped.",
    tag: "usage",
    response: RateCard,
    successStatus: 200,
    scope: "shells:instances:read",
  },
  updateRates: {
    method: "PUT",
    path: "/api/v1/usage/rates",
    summary: "Change the org's rates (admins). Applies from now; metered time keeps its rates.",
    tag: "usage",
    body: RateCardUpdate,
    response: RateCard,
    successStatus: 200,
    scope: "shells:instances:control",
    minRole: "admin",
    idempotent: true,
    example: { body: { classes: { container: { runningPerHour: "0.05" } } } },
  },
  listCaps: {
    method: "GET",
    path: "/api/v1/caps",
    summary: "The org's project caps, each with its current use and state.",
    tag: "usage",
    query: z.strictObject({ project: projectName.optional() }),
    response: z.strictObject({ items: z.array(CapStatus) }),
    successStatus: 200,
    scope: "shells:instances:read",
  },
  setProjectCaps: {
    method: "PUT",
    path: "/api/v1/projects/:project/caps",
    summary: "Replace a project's caps (admins); an empty list removes them.",
    description:
      "Caps: `concurrent_shells` (shells provisioning or running at once), `running_seconds` and `cost` per `day` or `month` (UTC), each for every class or one `runtime`. A create or start over a cap answers 409 `quota_exceeded` naming the cap and its use; when a period cap is reached, running shells in its scope are stopped with kill reason `quota`. `quota.warning` (80 %), `quota.reached` and `quota.stopped` land in the activity history.",
    tag: "usage",
    params: z.strictObject({ project: projectName }),
    body: ProjectCaps,
    response: z.strictObject({ items: z.array(CapStatus) }),
    successStatus: 200,
    scope: "shells:instances:control",
    minRole: "admin",
    idempotent: true,
    example: {
      params: { project: "default" },
      body: { caps: [{ metric: "concurrent_shells", limit: 50 }] },
    },
  },
  getGovernance: {
    method: "GET",
    path: "/api/v1/governance",
    summary:
      "Governance metrics of the org or one project: shells and runs active now, denials by kind, approvals requested and decided, time to decision.",
    tag: "usage",
    query: GovernanceQuery,
    response: GovernanceReport,
    successStatus: 200,
    scope: "shells:instances:read",
  },
} as const satisfies Record<string, RouteSpec>;
