import { z } from "zod";
import { ActivityEvent, ActivityQuery } from "../activity.js";
import { ProjectEgress, ProjectEgressUpdate } from "../egress-rules.js";
import { OrgPolicy, OrgPolicyUpdate, Project, ProjectCreate } from "../iam.js";
import { pageOf } from "../pages.js";
import { RunRetention, RunRetentionUpdate } from "../retention.js";
import { PendingApproval, type RouteSpec } from "./route-spec.js";

const projectName = z
  .string()
  .min(1)
  .max(63)
  .regex(/^[a-z0-9]([a-z0-9-]*[a-z0-9])?$/, "a project name");

const retentionDescription =
  "Days after a run ends that its artifacts, workspace changes and diff are kept: a project's setting, else the org's, else the server's default (`SHELLS_RUN_RETENTION_DAYS`). `{ days: null }` removes this level's setting. A sweeper removes what ran out, recording `run.retention.expire` for each run; reading them afterwards answers 410 `artifact_expired`. The run's record, its result and the manifest with hashes stay. Changes are recorded as `retention.update`.";

/** The org: its activity history, its policy and its projects (with their egress rules). */
export const orgRoutes = {
  listActivity: {
    method: "GET",
    path: "/api/v1/activity",
    summary: "The org's activity history (hash-chained, append-only).",
    tag: "activity",
    query: ActivityQuery,
    response: pageOf(ActivityEvent),
    successStatus: 200,
    scope: "shells:instances:read",
  },
  getPolicy: {
    method: "GET",
    path: "/api/v1/org/policy",
    summary:
      "The org's policy: isolation floor, regions, credential TTL, default network, approval gates.",
    tag: "org",
    response: OrgPolicy,
    successStatus: 200,
    scope: "shells:instances:read",
  },
  updatePolicy: {
    method: "PATCH",
    path: "/api/v1/org/policy",
    summary: "Change the org's policy (admins). Fields left out keep their value.",
    tag: "org",
    body: OrgPolicyUpdate,
    response: OrgPolicy,
    successStatus: 200,
    scope: "shells:instances:control",
    minRole: "admin",
    example: { body: { termCredentialTtlSeconds: 600 } },
  },
  listProjects: {
    method: "GET",
    path: "/api/v1/projects",
    summary: "The org's projects.",
    tag: "org",
    response: z.strictObject({ items: z.array(Project) }),
    successStatus: 200,
    scope: "shells:instances:read",
  },
  createProject: {
    method: "POST",
    path: "/api/v1/projects",
    summary: "Create a project (admins).",
    tag: "org",
    body: ProjectCreate,
    response: Project,
    successStatus: 201,
    scope: "shells:instances:control",
    minRole: "admin",
    example: { body: { name: "research" } },
  },
  getProjectEgress: {
    method: "GET",
    path: "/api/v1/projects/:project/egress",
    summary: "A project's egress rules (empty: the org's policy alone).",
    tag: "org",
    params: z.strictObject({ project: projectName }),
    response: ProjectEgress,
    successStatus: 200,
    scope: "shells:instances:read",
    example: { params: { project: "default" } },
  },
  setProjectEgress: {
    method: "PUT",
    path: "/api/v1/projects/:project/egress",
    summary:
      "Replace a project's egress rules (admins); `{ rules: {} }` removes them. Widening may wait for an approver (202).",
    description:
      "Rules of the org policy's shape (`allowHosts`, `denyHosts`, `allowCidrs`, `denyCidrs`, `allowPorts`, `denyPorts`), each optional: a list left out says nothing at the project's level. Every `internet` shell of the project keeps them from its next connection or DNS question on, below the org's policy and above the template's rules and the shell's own allowlist: a connection goes through only when every level allows it, so nothing here can widen what the org allows (`allowCidrs` keeps open only the org's non-public ranges it also names). Recorded as `project.egress.update` with the old and new rules. A change that widens the rules (an allow list gains an entry or is dropped, a deny list loses one) passes the org's `project_egress_change` gate: none, typed confirmation (`confirm` equal to the project's name), or named approvers: then it answers 202 with a pending approval whose context carries the diff (`approval.shellId` is the project's id), and the rules change when it is granted. Narrowing is never gated.",
    tag: "org",
    params: z.strictObject({ project: projectName }),
    body: ProjectEgressUpdate,
    response: z.union([ProjectEgress, PendingApproval]),
    successStatus: 200,
    scope: "shells:instances:control",
    minRole: "admin",
    idempotent: true,
    example: {
      params: { project: "default" },
      body: { rules: { denyHosts: ["*.example.net"], denyPorts: [25] } },
    },
  },
  getOrgRetention: {
    method: "GET",
    path: "/api/v1/org/retention",
    summary: "How long the org keeps its runs' artifacts, workspace changes and diffs.",
    tag: "org",
    response: RunRetention,
    successStatus: 200,
    scope: "shells:instances:read",
  },
  setOrgRetention: {
    method: "PUT",
    path: "/api/v1/org/retention",
    summary: "Set how many days the org keeps its runs' artifacts, changes and diffs (admins).",
    description: retentionDescription,
    tag: "org",
    body: RunRetentionUpdate,
    response: RunRetention,
    successStatus: 200,
    scope: "shells:instances:control",
    minRole: "admin",
    idempotent: true,
    example: { body: { days: 90 } },
  },
  getProjectRetention: {
    method: "GET",
    path: "/api/v1/projects/:project/retention",
    summary: "How long a project keeps its runs' artifacts, workspace changes and diffs.",
    tag: "org",
    params: z.strictObject({ project: projectName }),
    response: RunRetention,
    successStatus: 200,
    scope: "shells:instances:read",
    example: { params: { project: "default" } },
  },
  setProjectRetention: {
    method: "PUT",
    path: "/api/v1/projects/:project/retention",
    summary: "Set how many days a project keeps its runs' artifacts, changes and diffs (admins).",
    description: retentionDescription,
    tag: "org",
    params: z.strictObject({ project: projectName }),
    body: RunRetentionUpdate,
    response: RunRetention,
    successStatus: 200,
    scope: "shells:instances:control",
    minRole: "admin",
    idempotent: true,
    example: { params: { project: "default" }, body: { days: 7 } },
  },
} as const satisfies Record<string, RouteSpec>;
