/**
 * Sandbox backends: the `SandboxBackend` interface the orchestrator talks to, and the simulator.
 * The conformance suite every backend runs is exported separately from `@shells/sandbox/conformance`.
 */
export {
  SANDBOX_EGRESS_ENV,
  SANDBOX_EGRESS_PORT,
  SandboxError,
  type SandboxBackend,
  type SandboxErrorCode,
  type SandboxExecOptions,
  type SandboxExecRequest,
  type SandboxInfo,
  type SandboxFileInfo,
  type SandboxFiles,
  type SandboxForkCapture,
  type SandboxImage,
  type SandboxProcess,
  type SandboxProgress,
  type SandboxSignal,
  type SandboxSpawnRequest,
  type SandboxSpec,
  type SandboxEgress,
  type SandboxTurnRequest,
  type SandboxTurnResult,
  type SandboxUsage,
} from "./backend.js";
export { ExecFiles, type ExecFn } from "./exec-files.js";
export { SharedPreparations } from "./shared-preparations.js";
export { SimulatorBackend, type SimulatorBackendOptions } from "./simulator-backend.js";
export {
  TarFormatError,
  UnsafeTarError,
  readTar,
  sanitizeTar,
  unsafeTarEntry,
  writeTar,
  type SanitizedTar,
  type TarEntry,
} from "./tar.js";
