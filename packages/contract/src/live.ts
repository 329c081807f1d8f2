/**
 * The wire types of files, runs and terminals under one name, for modules (`iam.ts`) that import
 * them from here. New code imports `files.ts`, `runs.ts` or `terminals.ts` directly.
 */
export { FileInfo, PathQuery, SeedFile, ShellPath } from "./files.js";
export {
  ARTIFACT_PATTERN_LIMITS,
  Artifact,
  artifactPatternProblem,
  ExecFrame,
  InterpreterRequest,
  InterpreterResult,
  Run,
  RunCreate,
  RunFrame,
  SkippedArtifact,
} from "./runs.js";
export { TERM_PROTOCOL, TERM_TOKEN_PROTOCOL_PREFIX, TermCredential } from "./terminals.js";
