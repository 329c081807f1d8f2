/**
 * Sandbox backends: the `SandboxBackend` interface the orchestrator talks to, and the simulator.
 * The conformance suite every backend runs is exported separately from `@shells/sandbox/conformance`.
 */
export {
  SandboxError,
  type SandboxBackend,
  type SandboxErrorCode,
  type SandboxExecOptions,
  type SandboxExecRequest,
  type SandboxInfo,
  type SandboxSpec,
} from "./backend.js";
export { SimulatorBackend, type SimulatorBackendOptions } from "./simulator-backend.js";
