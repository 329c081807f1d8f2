import { isIP } from "node:net";
import { AppError } from "../errors.js";

/** Where the server says it lives: its listen address and its configured public URL. */
export interface ServerAddress {
  /** The listen address (`--host`); wildcards (`0.0.0.0`, `::`) name no host. */
  host: string;
  /** `SHELLS_PUBLIC_URL`, when set. */
  publicUrl?: string | undefined;
}

const WILDCARDS = new Set(["0.0.0.0", "::", "[::]"]);

/**
 * Refuses a request to `/mcp` that a browser was tricked into sending: DNS rebinding (a page on
 * `evil.example` whose name is re-pointed at this server, so the browser sends `Host:
 * evil.example` and `Origin: http://evil.example`) and plain cross-site requests.
 *
 * - `Host` must name this server: the public URL's host, the listen address, a loopback name, or
 *   any IP literal. Rebinding needs a DNS name the attacker controls, so an IP literal cannot be
 *   one, and a server bound to a wildcard address is legitimately reached by any of its IPs.
 * - `Origin`, when present (browsers send it on every POST), must be the public URL's origin or
 *   the origin of the very host the request was sent to. No `Origin` is a non-browser client.
 *
 * Throws `forbidden` (403) with the reason. Hosts compare port-agnostically, as rebinding keeps
 * the port.
 */
export function refuseForeignOrigin(
  headers: { host: string | undefined; origin: string | undefined },
  server: ServerAddress,
): void {
  const requestHost = parseAuthority(headers.host);
  if (!requestHost || !isServerHostname(requestHost.hostname, server)) {
    throw new AppError(
      "forbidden",
      `The Host header ${JSON.stringify(headers.host ?? "")} does not name this server; /mcp answers only requests addressed to it (DNS rebinding protection). Set SHELLS_PUBLIC_URL to the URL clients use.`,
    );
  }
  if (headers.origin === undefined) return;
  const origin = parseOrigin(headers.origin);
  const publicOrigin = server.publicUrl ? new URL(server.publicUrl).origin : undefined;
  const sameHost =
    origin !== undefined && origin.host === new URL(`${origin.protocol}//${requestHost.host}`).host;
  if (origin === undefined || (origin.origin !== publicOrigin && !sameHost)) {
    throw new AppError(
      "forbidden",
      `Cross-origin requests to /mcp are refused (Origin ${JSON.stringify(headers.origin)}); only this server's own pages and non-browser clients may call it.`,
    );
  }
}

function isServerHostname(hostname: string, server: ServerAddress): boolean {
  if (hostname === "localhost" || isIP(unbracket(hostname)) !== 0) return true;
  if (server.publicUrl && new URL(server.publicUrl).hostname === hostname) return true;
  const listen = server.host.toLowerCase();
  return !WILDCARDS.has(listen) && unbracket(listen) === unbracket(hostname);
}

/** `host[:port]` of a Host header, lowercased by URL parsing; undefined when it is not one. */
function parseAuthority(value: string | undefined): URL | undefined {
  if (!value || /[/?#@\s]/.test(value)) return undefined;
  try {
    return new URL(`http://${value}`);
  } catch {
    return undefined;
  }
}

/** An http(s) Origin; undefined for `null`, other schemes and garbage. */
function parseOrigin(value: string): URL | undefined {
  try {
    const url = new URL(value);
    return url.protocol === "http:" || url.protocol === "https:" ? url : undefined;
  } catch {
    return undefined;
  }
}

function unbracket(hostname: string): string {
  return hostname.startsWith("[") && hostname.endsWith("]") ? hostname.slice(1, -1) : hostname;
}
