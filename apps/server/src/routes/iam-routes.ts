import type { IamService } from "../services/iam-service.js";
import type { KeyService } from "../services/key-service.js";
import type { Handlers } from "./register-routes.js";

/** Who the caller is, and the org's projects, members, agents, API keys and entitlements. */
export function iamHandlers(
  iam: IamService,
  keys: KeyService,
): Pick<
  Handlers,
  | "whoami"
  | "listProjects"
  | "createProject"
  | "listMembers"
  | "createMember"
  | "updateMember"
  | "removeMember"
  | "listAgents"
  | "createAgent"
  | "deleteAgent"
  | "listKeys"
  | "createKey"
  | "revokeKey"
  | "listEntitlements"
  | "grantEntitlement"
  | "revokeEntitlement"
> {
  return {
    whoami: async ({ caller }) => caller,
    listProjects: async ({ caller }) => ({ items: await iam.listProjects(caller) }),
    createProject: async ({ caller, body }) => iam.createProject(caller, body),
    listMembers: async ({ caller }) => ({ items: await iam.listMembers(caller) }),
    createMember: async ({ caller, body }) => iam.createMember(caller, body),
    updateMember: async ({ caller, params, body }) => iam.updateMember(caller, params.id, body),
    removeMember: async ({ caller, params }) => iam.removeMember(caller, params.id),
    listAgents: async ({ caller }) => ({ items: await iam.listAgents(caller) }),
    createAgent: async ({ caller, body }) => iam.createAgent(caller, body),
    deleteAgent: async ({ caller, params }) => iam.deleteAgent(caller, params.id),
    listKeys: async ({ caller }) => ({ items: await keys.listKeys(caller) }),
    createKey: async ({ caller, body }) => keys.createKey(caller, body),
    revokeKey: async ({ caller, params }) => keys.revokeKey(caller, params.id),
    listEntitlements: async ({ caller }) => ({ items: await iam.listEntitlements(caller) }),
    grantEntitlement: async ({ caller, body }) => iam.grantEntitlement(caller, body),
    revokeEntitlement: async ({ caller, params }) => iam.revokeEntitlement(caller, params.id),
  };
}
