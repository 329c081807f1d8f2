/**
 * The `shells` helper user code sees inside a run: `shells.result(value)` writes JSON to the file
 * named by `$SHELLS_RESULT`; `shells.artifact(path)` adds a file to the run's artifacts (a line in
 * `$SHELLS_ARTIFACTS`). Any language can do the same by hand.
 */

/** Where the helper files live inside the shell. */
export const RUNNER_DIR = "/tmp/.shells";

/** Python module `shells`. */
export const PYTHON_HELPER = String.raw`
import json, os

def result(value):
    """Report the run's structured result (any JSON-serialisable value)."""
    with open(os.environ["SHELLS_RESULT"], "w") as f:
        json.dump(value, f)

def artifact(path):
    """Keep a file (relative to /workspace or absolute inside it) as an artifact of the run."""
    with open(os.environ["SHELLS_ARTIFACTS"], "a") as f:
        f.write(str(path) + "\n")
`;

/** Node preload that defines `globalThis.shells`. */
export const NODE_HELPER = String.raw`
const fs = require("node:fs");
globalThis.shells = {
  result(value) { fs.writeFileSync(process.env.SHELLS_RESULT, JSON.stringify(value)); },
  artifact(path) { fs.appendFileSync(process.env.SHELLS_ARTIFACTS, String(path) + "\n"); },
};
`;

/** argv that runs user code of a language with the `shells` helper available. */
export function runCommand(language: "bash" | "python" | "node" | "rust" | "go"): string[] {
  switch (language) {
    case "python":
      return [
        "python3",
        "-c",
        `import builtins, runpy, sys; sys.path.insert(0, "${RUNNER_DIR}"); import shells; builtins.shells = shells; runpy.run_path("${RUNNER_DIR}/main.py", run_name="__main__")`,
      ];
    case "node":
      return ["node", "--require", `${RUNNER_DIR}/shells.cjs`, `${RUNNER_DIR}/main.js`];
    default:
      return ["sh", `${RUNNER_DIR}/main.sh`];
  }
}

/** File name user code of a language is written to. */
export function mainFile(language: string): string {
  return language === "python" ? "main.py" : language === "node" ? "main.js" : "main.sh";
}
