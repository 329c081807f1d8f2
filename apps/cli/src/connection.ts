import { readFileSync } from "node:fs";
import { resolve } from "node:path";
import { CliError } from "./errors.js";

/** Connection flags shared by every command. */
export interface ConnectionFlags {
  url?: string | undefined;
  token?: string | undefined;
  dataDir?: string | undefined;
}

/** Where the CLI connects and with which key. */
export interface Connection {
  url: string;
  token: string;
}

/** The data directory: `--data-dir`, else `SHELLS_DATA_DIR`, else `./.shells`, made absolute. */
export function resolveDataDir(
  flags: ConnectionFlags,
  env: Record<string, string | undefined>,
  cwd: string,
): string {
  return resolve(cwd, flags.dataDir ?? (env["SHELLS_DATA_DIR"] || ".shells"));
}

/**
 * The server URL: `--url`, else `SHELLS_URL`, else the local server's address from `SHELLS_HOST`
 * (default 127.0.0.1; a wildcard bind address is reached through loopback) and `SHELLS_PORT`
 * (default 8080).
 */
export function resolveUrl(
  flags: ConnectionFlags,
  env: Record<string, string | undefined>,
): string {
  const explicit = flags.url ?? (env["SHELLS_URL"] || undefined);
  if (explicit) return explicit;
  const bindHost = env["SHELLS_HOST"] || "127.0.0.1";
  const host = bindHost === "0.0.0.0" ? "127.0.0.1" : bindHost === "::" ? "::1" : bindHost;
  const urlHost = host.includes(":") && !host.startsWith("[") ? `[${host}]` : host;
  return `http://${urlHost}:${env["SHELLS_PORT"] || "8080"}`;
}

/** Whether a URL points at this machine. */
function isLoopback(url: string): boolean {
  let hostname: string;
  try {
    hostname = new URL(url).hostname;
  } catch {
    return false;
  }
  return hostname === "localhost" || hostname === "[::1]" || /^127\.\d+\.\d+\.\d+$/.test(hostname);
}

/**
 * Resolves the URL and token: `--token`, else `SHELLS_API_TOKEN`, else the local server's admin key
 * in `<data dir>/admin-token`. The local admin key is only ever sent to a server on this machine, so
 * pointing `--url` elsewhere cannot leak it.
 *
 * @throws {CliError} `missing_token` when no token is found, saying how to get one.
 */
export function resolveConnection(
  flags: ConnectionFlags,
  env: Record<string, string | undefined>,
  cwd: string,
): Connection {
  const url = resolveUrl(flags, env);
  const token = flags.token ?? (env["SHELLS_API_TOKEN"] || undefined);
  if (token) return { url, token };

  const tokenPath = resolve(resolveDataDir(flags, env, cwd), "admin-token");
  const hint = `pass --token or set SHELLS_API_TOKEN; on the server's machine, \`shells serve\` writes an admin key to ${tokenPath}`;
  if (!isLoopback(url)) {
    throw new CliError(
      "missing_token",
      `no API token for ${url} (the local admin key is only sent to a server on this machine)`,
      { hint },
    );
  }
  let fileToken: string;
  try {
    fileToken = readFileSync(tokenPath, "utf8").trim();
  } catch (cause) {
    const code = (cause as { code?: unknown }).code;
    const reason =
      code === "ENOENT"
        ? `${tokenPath} does not exist`
        : `cannot read ${tokenPath} (${String(code)})`;
    throw new CliError(
      "missing_token",
      `no API token: --token and SHELLS_API_TOKEN are not set, and ${reason}`,
      { hint },
    );
  }
  if (fileToken === "")
    throw new CliError("missing_token", `no API token: ${tokenPath} is empty`, { hint });
  return { url, token: fileToken };
}
