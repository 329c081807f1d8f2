import type { AgentGate } from "../iam/agent-gate.js";
import type { Handlers } from "./register-routes.js";

/** `POST /api/agent/invoke`: the agents' one door, through the agent gate. */
export function agentGateHandlers(agentGate: AgentGate): Pick<Handlers, "agentInvoke"> {
  return {
    agentInvoke: async ({ caller, body }) => agentGate.invoke(caller, body),
  };
}
