import type { FileService } from "../orchestrator/file-service.js";
import { sendBytes, type Handlers } from "./register-routes.js";

/** Files and tar archives inside a shell; contents travel as raw bytes. */
export function fileHandlers(
  files: FileService,
): Pick<
  Handlers,
  | "listFiles"
  | "statFile"
  | "readFile"
  | "writeFile"
  | "removeFile"
  | "downloadArchive"
  | "uploadArchive"
> {
  return {
    listFiles: async ({ caller, params, query }) => ({
      items: await files.list(caller, params.id, query.path),
    }),
    statFile: async ({ caller, params, query }) => files.stat(caller, params.id, query.path),
    readFile: async ({ caller, params, query, reply }) =>
      sendBytes(reply, "application/octet-stream", await files.read(caller, params.id, query.path)),
    writeFile: async ({ caller, params, query, body }) =>
      files.write(caller, params.id, query, body as Buffer),
    removeFile: async ({ caller, params, query }) =>
      files.remove(caller, params.id, query.path, query.recursive === "true"),
    downloadArchive: async ({ caller, params, query, reply }) =>
      sendBytes(
        reply,
        "application/x-tar",
        await files.exportArchive(caller, params.id, query.path),
      ),
    uploadArchive: async ({ caller, params, query, body }) =>
      files.importArchive(caller, params.id, query.path, body as Buffer),
  };
}
