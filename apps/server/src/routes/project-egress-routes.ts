import type { ProjectEgressService } from "../services/project-egress-service.js";
import type { Handlers } from "./register-routes.js";
import { accepted } from "./shell-routes.js";

/** A project's egress rules: members read them, admins replace them (a widening may wait: 202). */
export function projectEgressHandlers(
  projectEgress: ProjectEgressService,
): Pick<Handlers, "getProjectEgress" | "setProjectEgress"> {
  return {
    getProjectEgress: async ({ caller, params }) => projectEgress.get(caller, params.project),
    setProjectEgress: async ({ caller, params, body, reply }) =>
      accepted(reply, await projectEgress.set(caller, params.project, body)),
  };
}
