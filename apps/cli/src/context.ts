import { ShellsClient } from "@l1fe/shells";
import { resolveConnection, resolveDataDir, type ConnectionFlags } from "./connection.js";

/** The process surroundings a CLI run reads and writes; tests pass their own. */
export interface CliIo {
  /**
   * Standard output. Bytes (a terminal's output, a downloaded file) are written as they are; the
   * size and `resize` event of a terminal are read by `shells term`.
   */
  stdout: {
    write(chunk: string | Uint8Array): unknown;
    isTTY?: boolean | undefined;
    columns?: number | undefined;
    rows?: number | undefined;
    on?(event: "resize", listener: () => void): unknown;
    off?(event: "resize", listener: () => void): unknown;
  };
  stderr: { write(text: string): unknown };
  /** Standard input; `shells term` puts a terminal into raw mode while it is attached. */
  stdin: AsyncIterable<Buffer | string> & {
    isTTY?: boolean | undefined;
    setRawMode?(raw: boolean): unknown;
    /** Stops reading, so a pending read no longer holds the process open. */
    destroy?(): unknown;
  };
  env: Record<string, string | undefined>;
  cwd: string;
  /** The `fetch` the SDK uses (tests answer in-process). Default: the global `fetch`. */
  fetch?: typeof globalThis.fetch | undefined;
  /** Current time in ms, for ages. Default: `Date.now`. */
  now?: (() => number) | undefined;
}

/** Options every command accepts (declared on the program). */
export interface GlobalOptions extends ConnectionFlags {
  json?: boolean | undefined;
}

/**
 * What a command needs besides its own arguments: output, the global options, a client built from
 * them on first use, and the exit status to end with.
 */
export class CliContext {
  /** The status the process exits with when the command returns normally. */
  exitCode = 0;
  readonly io: CliIo;
  readonly #globals: () => GlobalOptions;
  #client: ShellsClient | undefined;

  /** @param globals reads the global options once commander has parsed them. */
  constructor(io: CliIo, globals: () => GlobalOptions) {
    this.io = io;
    this.#globals = globals;
  }

  /** Whether `--json` asked for raw JSON instead of text. */
  get json(): boolean {
    return this.#globals().json === true;
  }

  /** The data directory (`--data-dir`, `SHELLS_DATA_DIR`, `./.shells`), absolute. */
  get dataDir(): string {
    return resolveDataDir(this.#globals(), this.io.env, this.io.cwd);
  }

  /** Current time in ms. */
  now(): number {
    return (this.io.now ?? Date.now)();
  }

  /** The SDK client, connected per `--url`/`--token`, the environment or the local data dir. */
  client(): ShellsClient {
    if (!this.#client) {
      const { url, token } = resolveConnection(this.#globals(), this.io.env, this.io.cwd);
      this.#client = new ShellsClient({ baseUrl: url, token, fetch: this.io.fetch });
    }
    return this.#client;
  }

  /** Writes a line (or lines) to stdout. */
  print(text: string): void {
    this.io.stdout.write(text.endsWith("\n") ? text : `${text}\n`);
  }

  /** Writes a line (or lines) to stderr. */
  printErr(text: string): void {
    this.io.stderr.write(text.endsWith("\n") ? text : `${text}\n`);
  }

  /** Writes a value as indented JSON to stdout. */
  printJson(value: unknown): void {
    this.print(JSON.stringify(value, null, 2));
  }
}
