import type { FileInfo } from "@shells/contract";
import { segment, type ApiCall } from "./internal/api-call.js";
import type { RequestOptions } from "./shells-client.js";

/** Options of {@link FilesApi.write}. */
export interface FileWriteOptions extends RequestOptions {
  /** Permission bits, e.g. `0o755`. Default: the server's (0o644). */
  mode?: number | undefined;
}

/** Options of {@link FilesApi.remove}. */
export interface FileRemoveOptions extends RequestOptions {
  /** Remove a directory with everything in it. Without it, only an empty directory goes. */
  recursive?: boolean | undefined;
}

/** What {@link FilesApi.remove} answers. */
export interface FileRemoved {
  path: string;
  removed: true;
}

/** What {@link FilesApi.uploadDirectory} answers: where the archive went and how many entries. */
export interface DirectoryUploaded {
  path: string;
  entries: number;
}

const WORKSPACE = "/workspace";

/**
 * Files inside a running shell (`shells.files`). Paths are absolute or relative to `/workspace`;
 * the server resolves them inside the shell's own root and refuses `..` segments
 * (`validation_failed`). A missing path fails with `file_not_found`, a directory where a file is
 * expected (or the reverse) with `wrong_file_type`, an oversized one with `file_too_large`.
 */
export class FilesApi {
  readonly #call: ApiCall;

  /** @internal The client builds this; use `shells.files`. */
  constructor(call: ApiCall) {
    this.#call = call;
  }

  /** A file's bytes. */
  read(shellId: string, path: string, options: RequestOptions = {}): Promise<Uint8Array> {
    return this.#call<Uint8Array>("GET", `${filesPath(shellId)}/content`, {
      ...options,
      query: { path },
      responseType: "bytes",
    });
  }

  /** A file's contents decoded as UTF-8 (malformed bytes become U+FFFD). */
  async readText(shellId: string, path: string, options: RequestOptions = {}): Promise<string> {
    return new TextDecoder().decode(await this.read(shellId, path, options));
  }

  /**
   * Writes a file (a string is written as UTF-8), creating missing parent directories, and answers
   * what was written.
   */
  write(
    shellId: string,
    path: string,
    data: Uint8Array | string,
    options: FileWriteOptions = {},
  ): Promise<FileInfo> {
    const { mode, ...rest } = options;
    return this.#call<FileInfo>("PUT", `${filesPath(shellId)}/content`, {
      ...rest,
      query: {
        path,
        mode: mode === undefined ? undefined : (mode & 0o7777).toString(8).padStart(3, "0"),
      },
      rawBody: {
        contentType: "application/octet-stream",
        bytes: typeof data === "string" ? new TextEncoder().encode(data) : data,
      },
    });
  }

  /** A directory's entries (default `/workspace`). */
  async list(
    shellId: string,
    path: string = WORKSPACE,
    options: RequestOptions = {},
  ): Promise<FileInfo[]> {
    const { items } = await this.#call<{ items: FileInfo[] }>("GET", filesPath(shellId), {
      ...options,
      query: { path },
    });
    return items;
  }

  /** One file or directory: type, size, mode, modification time. */
  stat(shellId: string, path: string, options: RequestOptions = {}): Promise<FileInfo> {
    return this.#call<FileInfo>("GET", `${filesPath(shellId)}/stat`, {
      ...options,
      query: { path },
    });
  }

  /** Removes a file, or a directory (`recursive: true` when it is not empty). */
  remove(shellId: string, path: string, options: FileRemoveOptions = {}): Promise<FileRemoved> {
    const { recursive, ...rest } = options;
    return this.#call<FileRemoved>("DELETE", filesPath(shellId), {
      ...rest,
      query: { path, recursive: recursive === true ? "true" : undefined },
    });
  }

  /** A directory as a tar archive (paths inside are relative to it). */
  downloadDirectory(
    shellId: string,
    path: string,
    options: RequestOptions = {},
  ): Promise<Uint8Array> {
    return this.#call<Uint8Array>("GET", `${filesPath(shellId)}/archive`, {
      ...options,
      query: { path },
      responseType: "bytes",
    });
  }

  /**
   * Unpacks a tar archive into a directory (created if missing). An archive with an absolute path,
   * a `..` segment, a link out of the archive or a device file is refused whole
   * (`unsafe_archive`) before anything is written.
   */
  uploadDirectory(
    shellId: string,
    path: string,
    archive: Uint8Array,
    options: RequestOptions = {},
  ): Promise<DirectoryUploaded> {
    return this.#call<DirectoryUploaded>("PUT", `${filesPath(shellId)}/archive`, {
      ...options,
      query: { path },
      rawBody: { contentType: "application/x-tar", bytes: archive },
    });
  }
}

function filesPath(shellId: string): string {
  return `/api/v1/shells/${segment(shellId)}/files`;
}
