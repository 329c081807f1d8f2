import type { RunRetentionService } from "../services/run-retention-service.js";
import type { Handlers } from "./register-routes.js";

/** Retention of what runs keep, per org and per project: members read it, admins set it. */
export function retentionHandlers(
  retention: RunRetentionService,
): Pick<
  Handlers,
  "getOrgRetention" | "setOrgRetention" | "getProjectRetention" | "setProjectRetention"
> {
  return {
    getOrgRetention: async ({ caller }) => retention.getOrg(caller),
    setOrgRetention: async ({ caller, body }) => retention.setOrg(caller, body),
    getProjectRetention: async ({ caller, params }) => retention.getProject(caller, params.project),
    setProjectRetention: async ({ caller, params, body }) =>
      retention.setProject(caller, params.project, body),
  };
}
