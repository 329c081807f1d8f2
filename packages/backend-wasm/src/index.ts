/**
 * The `wasm` runtime class: `python` on Pyodide and `node` on QuickJS, each shell's interpreter in
 * a jailed worker process. This file is the package's contract; everything else is internal.
 */
export { WasmBackend, type WasmBackendOptions } from "./wasm-backend.js";
export { WASM_COMMANDS } from "./internal/commands.js";
