/**
 * `@shells/cli`: the `shells` command. The binary is `bin.ts`; this module exposes the runner so
 * other tools and tests can drive the CLI in-process.
 */
export { buildProgram, runCli } from "./program.js";
export { CliContext, type CliIo, type GlobalOptions } from "./context.js";
export { CliError, USAGE_EXIT_CODE } from "./errors.js";
