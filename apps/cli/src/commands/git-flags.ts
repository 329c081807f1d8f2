import type { RunCreate } from "@l1fe/shells";
import type { Command } from "commander";
import { CliError, USAGE_EXIT_CODE } from "../errors.js";

/** The `--git-*` flags of `shells run` and `shells create`. */
export interface GitFlags {
  gitRepo?: string;
  gitRef?: string;
  gitSubpath?: string;
  /** `shells run` only: the file to run. */
  gitEntrypoint?: string;
  gitBinding?: string;
}

/** The git source the `--git-*` flags describe, or undefined without `--git-repo`. */
export function gitSourceFrom(flags: GitFlags): RunCreate["git"] {
  const { gitRepo, gitRef, gitSubpath, gitEntrypoint, gitBinding } = flags;
  if (gitRepo === undefined) {
    const stray = [
      ["--git-ref", gitRef],
      ["--git-subpath", gitSubpath],
      ["--git-entrypoint", gitEntrypoint],
      ["--git-binding", gitBinding],
    ].filter(([, value]) => value !== undefined);
    if (stray.length > 0)
      throw new CliError("usage", `${stray.map(([flag]) => flag).join(", ")} need --git-repo`, {
        exitCode: USAGE_EXIT_CODE,
      });
    return undefined;
  }
  return {
    repo: gitRepo,
    ref: gitRef ?? "main",
    ...(gitSubpath === undefined ? {} : { subpath: gitSubpath }),
    ...(gitEntrypoint === undefined ? {} : { entrypoint: gitEntrypoint }),
    ...(gitBinding === undefined ? {} : { binding: gitBinding }),
  };
}

/** Adds the `--git-*` flags; `what` is who gets the files (`run` also takes an entrypoint). */
export function addGitOptions(command: Command, what: "run" | "shell"): Command {
  command
    .option(
      "--git-repo <url>",
      `clone this git repo (https) into /workspace first; the server clones it, the ${what} gets the files only`,
    )
    .option("--git-ref <ref>", "branch, tag or commit of --git-repo (default main)")
    .option("--git-subpath <path>", "use only this folder of the repo as /workspace");
  if (what === "run")
    command.option(
      "--git-entrypoint <path>",
      "file of the repo (relative to /workspace) to run with --language, instead of --code/--file",
    );
  return command.option(
    "--git-binding <name>",
    "service binding whose secret authenticates the clone of a private repo",
  );
}
