/** What runs inside a sandbox: interpreter drivers and the `shells` helper of runs. */
export { NODE_DRIVER, PYTHON_DRIVER, TURN_MARK } from "./interpreter-drivers.js";
export { NODE_HELPER, PYTHON_HELPER, RUNNER_DIR, mainFile, runCommand } from "./run-helpers.js";
