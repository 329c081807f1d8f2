import { z } from "zod";
import { ActivityEvent, ActivityQuery } from "../activity.js";
import { OrgPolicy, OrgPolicyUpdate, Project, ProjectCreate } from "../iam.js";
import { pageOf } from "../pages.js";
import type { RouteSpec } from "./route-spec.js";

/** The org: its activity history, its policy and its projects. */
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
} as const satisfies Record<string, RouteSpec>;
