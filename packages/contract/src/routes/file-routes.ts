import { z } from "zod";
import { FileInfo, PathQuery, ShellPath } from "../files.js";
import { shellId, type RouteSpec } from "./route-spec.js";

/** Files inside a running shell: list, stat, read, write, remove, tar archives. */
export const fileRoutes = {
  listFiles: {
    method: "GET",
    path: "/api/v1/shells/:id/files",
    summary: "List a directory inside a running shell.",
    description:
      "`path` is absolute or relative to /workspace; `..` is refused. Paths resolve inside the shell's own root.",
    tag: "files",
    params: z.strictObject({ id: shellId }),
    query: PathQuery,
    response: z.strictObject({ items: z.array(FileInfo) }),
    successStatus: 200,
    scope: "shells:instances:read",
    example: { params: { id: "{shell}" }, query: { path: "/workspace" } },
  },
  statFile: {
    method: "GET",
    path: "/api/v1/shells/:id/files/stat",
    summary: "Describe one file or directory inside a running shell.",
    tag: "files",
    params: z.strictObject({ id: shellId }),
    query: PathQuery,
    response: FileInfo,
    successStatus: 200,
    scope: "shells:instances:read",
    example: { params: { id: "{shell}" }, query: { path: "/workspace" } },
  },
  readFile: {
    method: "GET",
    path: "/api/v1/shells/:id/files/content",
    summary: "Download a file's bytes (up to 64 MiB).",
    tag: "files",
    params: z.strictObject({ id: shellId }),
    query: PathQuery,
    response: z.unknown(),
    rawResponse: "application/octet-stream",
    successStatus: 200,
    scope: "shells:instances:control",
    example: { params: { id: "{shell}" }, query: { path: "{file}" } },
  },
  writeFile: {
    method: "PUT",
    path: "/api/v1/shells/:id/files/content",
    summary: "Upload a file's bytes (creates missing parent directories; up to 64 MiB).",
    tag: "files",
    params: z.strictObject({ id: shellId }),
    query: z.strictObject({
      path: ShellPath,
      /** Octal permission bits, e.g. `755`. */
      mode: z
        .string()
        .regex(/^[0-7]{3,4}$/)
        .optional(),
    }),
    rawBody: { contentTypes: ["application/octet-stream"], maxBytes: 64 * 1024 * 1024 },
    body: z.unknown(),
    response: FileInfo,
    successStatus: 200,
    scope: "shells:instances:control",
    example: {
      params: { id: "{shell}" },
      query: { path: "/workspace/example.txt" },
      body: "hello",
    },
  },
  removeFile: {
    method: "DELETE",
    path: "/api/v1/shells/:id/files",
    summary: "Remove a file, or a directory (`recursive=true` when not empty).",
    tag: "files",
    params: z.strictObject({ id: shellId }),
    query: z.strictObject({
      path: ShellPath,
      recursive: z.enum(["true", "false"]).default("false"),
    }),
    response: z.strictObject({ path: z.string(), removed: z.literal(true) }),
    successStatus: 200,
    scope: "shells:instances:control",
    example: { params: { id: "{shell}" }, query: { path: "{file}" } },
  },
  downloadArchive: {
    method: "GET",
    path: "/api/v1/shells/:id/files/archive",
    summary: "Download a directory as a tar stream (up to 256 MiB).",
    tag: "files",
    params: z.strictObject({ id: shellId }),
    query: PathQuery,
    response: z.unknown(),
    rawResponse: "application/x-tar",
    successStatus: 200,
    scope: "shells:instances:control",
    example: { params: { id: "{shell}" }, query: { path: "/workspace" } },
  },
  uploadArchive: {
    method: "PUT",
    path: "/api/v1/shells/:id/files/archive",
    summary: "Unpack a tar archive into a directory (created if missing; up to 256 MiB).",
    description:
      "Entries with absolute paths, `..` segments, links that point outside the archive, or device files are refused (400 `unsafe_archive`) before anything is written.",
    tag: "files",
    params: z.strictObject({ id: shellId }),
    query: PathQuery,
    rawBody: { contentTypes: ["application/x-tar"], maxBytes: 256 * 1024 * 1024 },
    body: z.unknown(),
    response: z.strictObject({ path: z.string(), entries: z.int() }),
    successStatus: 200,
    scope: "shells:instances:control",
    example: { params: { id: "{shell}" }, query: { path: "/workspace/unpacked" }, body: "" },
  },
} as const satisfies Record<string, RouteSpec>;
