import { z } from "zod";

/**
 * A git workload source: one repo, one ref, cloned shallow (one commit, no submodules) by the
 * control plane outside the sandbox; the shell gets the files of that commit in `/workspace` and
 * nothing else (no `.git`, no credential). A private repo's credential comes from a service
 * binding whose upstream covers the repo.
 */
export const GitSource = z.strictObject({
  /** `https://` URL of the repo (`http://` only toward a binding that allows it, or a public repo the org allows). No credentials in it. */
  repo: z.string().min(1).max(2048),
  /** Branch, tag or full commit id. */
  ref: z
    .string()
    .min(1)
    .max(255)
    .regex(
      /^(?!-)(?!.*\.\.)(?!.*\/\/)(?!.*\.lock$)(?!.*\/$)[A-Za-z0-9._/+-]+$/,
      "a branch, tag or commit id: letters, digits, . _ / + -, not starting with - and without .. or //",
    ),
  /** A folder of the repo whose contents become `/workspace` (default: the whole repo). */
  subpath: z
    .string()
    .min(1)
    .max(1024)
    .regex(/^(?!\/)(?!.*(^|\/)\.\.?(\/|$))[^\0\\]+$/, "a relative path without . or .. segments")
    .optional(),
  /** A file (relative to `/workspace`) to run with the run's language when the run gives neither `code` nor `command`. */
  entrypoint: z
    .string()
    .min(1)
    .max(1024)
    .regex(/^(?!\/)(?!.*(^|\/)\.\.?(\/|$))[^\0\\]+$/, "a relative path without . or .. segments")
    .optional(),
  /** The service binding whose secret authenticates the clone (its upstream must cover the repo). */
  binding: z.string().min(1).max(64).optional(),
});
export type GitSource = z.input<typeof GitSource>;

/**
 * A shell's git source: the same clone as a run's, made once at create into the new shell's
 * `/workspace` (a shell has no entrypoint: it runs what its execs say).
 */
export const ShellGitSource = GitSource.omit({ entrypoint: true });
export type ShellGitSource = z.input<typeof ShellGitSource>;
