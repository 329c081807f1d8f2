import { SandboxError } from "@shells/sandbox";
import type { WasmLanguage, WorkerExec } from "./worker-process.js";

/** The command forms wasm shells accept, as error messages name them. */
export const WASM_COMMANDS =
  "python3 -c CODE, python3 FILE [ARGS…], node [-r FILE] -e CODE, node [-r FILE] FILE [ARGS…]";

/** Program names that start each interpreter. */
const PROGRAMS: Record<WasmLanguage, readonly string[]> = {
  python: ["python3", "python", "/usr/bin/python3", "/usr/local/bin/python3"],
  node: ["node", "nodejs", "/usr/bin/node", "/usr/local/bin/node"],
};

/** The flag that passes code inline. */
const CODE_FLAG: Record<WasmLanguage, readonly string[]> = {
  python: ["-c"],
  node: ["-e", "--eval"],
};

/**
 * Maps an exec's argv onto the shell's interpreter: inline code (`-c`/`-e`) or a script file with
 * its arguments. Anything else (another program, a shell pipeline, an interpreter flag the engine
 * does not model) is refused with `unsupported` and `details.unsupportedCommand`, naming what wasm
 * shells accept.
 */
export function parseCommand(
  language: WasmLanguage,
  command: string[],
): Pick<WorkerExec, "mode" | "source" | "argv" | "preload"> {
  const [program, ...given] = command;
  // node's `--require FILE` / `-r FILE` (before the program) preloads scripts, as run helpers do.
  const preload: string[] = [];
  while (language === "node" && (given[0] === "--require" || given[0] === "-r")) {
    const file = given[1];
    if (file === undefined) break;
    preload.push(file);
    given.splice(0, 2);
  }
  const [first, ...rest] = given;
  const refuse = (why: string) =>
    new SandboxError(
      "unsupported",
      `Wasm ${language} shells run only their interpreter (${WASM_COMMANDS.split(", ")
        .filter((form) => form.startsWith(language === "python" ? "python3" : "node"))
        .join(", ")}); ${why}.`,
      { unsupportedCommand: true, command: command.slice(0, 8), accepted: WASM_COMMANDS },
    );
  if (program === undefined || !PROGRAMS[language].includes(program))
    throw refuse(`${JSON.stringify(program ?? "")} is not available`);
  if (first === undefined) throw refuse("an interactive interpreter needs code or a file");
  if (CODE_FLAG[language].includes(first)) {
    const [code, ...args] = rest;
    if (code === undefined) throw refuse(`${first} needs code`);
    return {
      mode: "code",
      source: code,
      argv: language === "python" ? ["-c", ...args] : [program, ...args],
      preload,
    };
  }
  if (first.startsWith("-")) throw refuse(`the option ${first} is not supported`);
  return {
    mode: "file",
    source: first,
    argv: language === "python" ? [first, ...rest] : [program, first, ...rest],
    preload,
  };
}
