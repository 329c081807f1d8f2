/**
 * The `microvm` runtime class: a QEMU `microvm` guest per shell with its own kernel, restored from
 * a saved VM state, driven by a static guest agent over virtio-serial.
 */
export { MicrovmBackend, type MicrovmBackendOptions } from "./microvm-backend.js";
export type { ExecTiming } from "./internal/agent-client.js";
export type { BuildProgress } from "./internal/host.js";
export { checkMicrovmHost, type MicrovmHostReport } from "./internal/host-check.js";
export type { ImageSource, Template } from "./internal/template.js";
