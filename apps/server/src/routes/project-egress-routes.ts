import type { ProjectEgressService } from "../services/project-egress-service.js";
import type { Handlers } from "./register-routes.js";

/** A project's egress rules: members read them, admins replace them. */
export function projectEgressHandlers(
  projectEgress: ProjectEgressService,
): Pick<Handlers, "getProjectEgress" | "setProjectEgress"> {
  return {
    getProjectEgress: async ({ caller, params }) => projectEgress.get(caller, params.project),
    setProjectEgress: async ({ caller, params, body }) =>
      projectEgress.set(caller, params.project, body),
  };
}
