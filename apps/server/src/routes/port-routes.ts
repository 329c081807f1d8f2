import type { FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import { request as httpRequest, type IncomingHttpHeaders, type IncomingMessage } from "node:http";
import type { Duplex } from "node:stream";
import { PORTS_PATH, type PortGrant, type PortService } from "../orchestrator/port-service.js";
import { errorBody } from "./error-handler.js";
import type { Handlers } from "./register-routes.js";
import { AppError } from "../errors.js";
import { ERROR_STATUS } from "@shells/contract";

/*
 * The exposed-port proxy: `<base>/ports/<token>/<path>` is forwarded to `<path>` on the grant's
 * port inside the shell (HTTP, and WebSocket or any other upgrade as a byte tunnel).
 *
 * The pages a shell serves come from the control plane's own origin, so they are held apart from
 * the console here:
 *   - every response carries `Content-Security-Policy: sandbox …` without `allow-same-origin`: the
 *     page runs in an opaque origin, cannot read the console's storage or cookies, and its requests
 *     are cross-site;
 *   - no cookie and no credential of the caller reaches the shell (`Cookie`, `Authorization`,
 *     `Referer`, which holds the token, are dropped), and no `Set-Cookie` (nor HSTS, Clear-Site-Data,
 *     Service-Worker-Allowed, Alt-Svc) of the shell's reaches the browser;
 *   - the token never reaches the shell: the path it sees starts after it.
 */

/** Request headers the shell never sees: the caller's credentials, hop-by-hop fields, our token. */
const DROPPED_REQUEST = new Set([
  "cookie",
  "authorization",
  "proxy-authorization",
  "referer",
  "host",
  "connection",
  "keep-alive",
  "proxy-connection",
  "te",
  "trailer",
  "transfer-encoding",
  "upgrade",
  "forwarded",
  "x-forwarded-for",
  "x-forwarded-host",
  "x-forwarded-proto",
  "x-forwarded-prefix",
]);

/** Response headers the browser never gets from a shell: they would act on the console's origin. */
const DROPPED_RESPONSE = new Set([
  "set-cookie",
  "set-cookie2",
  "clear-site-data",
  "strict-transport-security",
  "service-worker-allowed",
  "alt-svc",
  "connection",
  "keep-alive",
  "proxy-connection",
  "transfer-encoding",
  "upgrade",
  "trailer",
]);

/** The policy every proxied response carries: scripts run, but in an opaque origin of their own. */
export const PORT_SANDBOX_CSP =
  "sandbox allow-scripts allow-forms allow-popups allow-modals allow-downloads";

/** Largest response head a tunnel reads before it gives up on the upgrade answer. */
const MAX_TUNNEL_HEAD_BYTES = 64 * 1024;

/** The headers forwarded to the shell for a request to `port` (flat name/value list). */
export function forwardedRequestHeaders(
  rawHeaders: readonly string[],
  port: number,
  upgrade: boolean,
): string[] {
  const out: string[] = [];
  for (let i = 0; i + 1 < rawHeaders.length; i += 2) {
    const name = rawHeaders[i]!;
    const lower = name.toLowerCase();
    if (DROPPED_REQUEST.has(lower) && !(upgrade && (lower === "upgrade" || lower === "connection")))
      continue;
    out.push(name, rawHeaders[i + 1]!);
  }
  out.push("Host", `localhost:${port}`);
  return out;
}

/**
 * The headers the browser gets for a response of the shell's: the dropped ones gone, redirects to
 * the shell's own paths kept under the port's URL, and the sandbox policy added.
 */
export function returnedResponseHeaders(rawHeaders: readonly string[], prefix: string): string[] {
  const out: string[] = [];
  for (let i = 0; i + 1 < rawHeaders.length; i += 2) {
    const name = rawHeaders[i]!;
    const lower = name.toLowerCase();
    if (DROPPED_RESPONSE.has(lower)) continue;
    const value = rawHeaders[i + 1]!;
    out.push(name, lower === "location" ? underPrefix(value, prefix) : value);
  }
  out.push("Content-Security-Policy", PORT_SANDBOX_CSP, "X-Content-Type-Options", "nosniff");
  return out;
}

/** A redirect to a path of the shell's (or to its own localhost) kept under the port's URL. */
function underPrefix(location: string, prefix: string): string {
  const local = /^https?:\/\/(?:localhost|127\.0\.0\.1|\[::1\])(?::\d+)?(\/.*)?$/i.exec(location);
  if (local) return `${prefix}${local[1] ?? "/"}`;
  if (location.startsWith("/") && !location.startsWith("//")) return `${prefix}${location}`;
  return location;
}

/** The shell-side path of a proxied request: what follows the token, with the query. */
function shellPath(request: FastifyRequest, token: string): string {
  const url = request.raw.url ?? "/";
  const start = `${PORTS_PATH}/${token}`.length;
  const rest = url.slice(start);
  return rest.startsWith("/") ? rest : `/${rest}`;
}

/** The exposed-port routes: mint, list and revoke port URLs. */
export function portHandlers(
  ports: PortService,
  baseUrl: () => string,
): Pick<Handlers, "exposePort" | "listPorts" | "revokePort"> {
  return {
    exposePort: async ({ caller, params, body }) =>
      ports.expose(caller, params.id, body, baseUrl()),
    listPorts: async ({ caller, params }) => ({ items: await ports.list(caller, params.id) }),
    revokePort: async ({ caller, params }) => ports.revoke(caller, params.id, params.portId),
  };
}

/**
 * Registers `<base>/ports/<token>` and everything under it, every method. Call before
 * `@fastify/websocket` is registered: upgrades reach these routes as plain requests (with the
 * socket), and are tunnelled here byte for byte rather than terminated by the server.
 */
export async function registerPortProxy(app: FastifyInstance, ports: PortService): Promise<void> {
  await app.register(async (scope) => {
    // Bodies pass through untouched, whatever their type: the shell's server reads them.
    scope.removeAllContentTypeParsers();
    scope.addContentTypeParser("*", (_request, payload, done) => done(null, payload));
    const handler = async (request: FastifyRequest, reply: FastifyReply) => {
      const { token } = request.params as { token: string };
      const grant = await ports.grantOf(token);
      if (request.raw.url === `${PORTS_PATH}/${token}`) {
        // Relative links of the shell's pages resolve against the trailing slash.
        return reply.redirect(`${PORTS_PATH}/${token}/`, 308);
      }
      const upstream = await ports.connect(grant);
      const path = shellPath(request, token);
      const prefix = `${PORTS_PATH}/${token}`;
      if (request.headers.upgrade) tunnel(request, reply, upstream, path, grant, prefix);
      else forward(request, reply, upstream, path, grant, prefix);
      return reply;
    };
    scope.all(`${PORTS_PATH}/:token`, handler);
    scope.all(`${PORTS_PATH}/:token/*`, handler);
  });
}

/** Forwards one HTTP request over `upstream` and streams the answer back. */
function forward(
  request: FastifyRequest,
  reply: FastifyReply,
  upstream: Duplex,
  path: string,
  grant: PortGrant,
  prefix: string,
): void {
  reply.hijack();
  const outgoing = httpRequest({
    method: request.method,
    path,
    headers: [
      ...forwardedRequestHeaders(request.raw.rawHeaders, grant.port, false),
      "Connection",
      "close",
    ] as unknown as IncomingHttpHeaders,
    // One connection per request, over the helper's relay (no agent: nothing is pooled); it
    // closes with the response.
    createConnection: () => upstream,
  });
  const fail = () => {
    upstream.destroy();
    if (reply.raw.headersSent) reply.raw.destroy();
    else sendError(reply, "port_not_listening", "The server in the shell closed the connection.");
  };
  outgoing.on("error", fail);
  outgoing.on("response", (response: IncomingMessage) => {
    reply.raw.writeHead(
      response.statusCode ?? 502,
      returnedResponseHeaders(response.rawHeaders, prefix),
    );
    response.pipe(reply.raw);
    response.on("error", () => reply.raw.destroy());
  });
  reply.raw.on("close", () => upstream.destroy());
  const body = request.body as NodeJS.ReadableStream | undefined;
  if (body && typeof body.pipe === "function") body.pipe(outgoing);
  else outgoing.end();
}

/**
 * An upgrade (WebSocket): the request goes to the shell as it came (its credentials dropped), the
 * shell's answer head comes back filtered like any response, and from then on bytes flow both ways
 * untouched until either side closes.
 */
function tunnel(
  request: FastifyRequest,
  reply: FastifyReply,
  upstream: Duplex,
  path: string,
  grant: PortGrant,
  prefix: string,
): void {
  reply.hijack();
  const client = request.raw.socket;
  const headers = forwardedRequestHeaders(request.raw.rawHeaders, grant.port, true);
  let head = `${request.method} ${path} HTTP/1.1\r\n`;
  for (let i = 0; i + 1 < headers.length; i += 2) head += `${headers[i]}: ${headers[i + 1]}\r\n`;
  upstream.write(`${head}\r\n`);
  const end = () => {
    client.destroy();
    upstream.destroy();
  };
  client.on("error", end);
  client.on("close", end);
  upstream.on("error", end);
  upstream.on("close", end);
  let pending = Buffer.alloc(0);
  const onHead = (chunk: Buffer) => {
    pending = Buffer.concat([pending, chunk]);
    const at = pending.indexOf("\r\n\r\n");
    if (at < 0) {
      if (pending.length > MAX_TUNNEL_HEAD_BYTES) end();
      return;
    }
    upstream.off("data", onHead);
    upstream.pause();
    const [statusLine = "", ...lines] = pending.subarray(0, at).toString("latin1").split("\r\n");
    const raw: string[] = [];
    for (const line of lines) {
      const colon = line.indexOf(":");
      if (colon > 0) raw.push(line.slice(0, colon).trim(), line.slice(colon + 1).trim());
    }
    const upgraded = /^HTTP\/1\.[01] 101\b/.test(statusLine);
    // A 101 keeps its Connection/Upgrade fields (the handshake needs them); anything else is an
    // ordinary answer and ends the connection after its body.
    const kept = returnedResponseHeaders(raw, prefix);
    if (upgraded)
      kept.push("Connection", "Upgrade", "Upgrade", headerOf(raw, "upgrade") ?? "websocket");
    let out = `${statusLine}\r\n`;
    for (let i = 0; i + 1 < kept.length; i += 2) out += `${kept[i]}: ${kept[i + 1]}\r\n`;
    client.write(`${out}\r\n`);
    client.write(pending.subarray(at + 4));
    upstream.pipe(client);
    client.pipe(upstream);
  };
  upstream.on("data", onHead);
}

function headerOf(raw: readonly string[], name: string): string | undefined {
  for (let i = 0; i + 1 < raw.length; i += 2) if (raw[i]!.toLowerCase() === name) return raw[i + 1];
  return undefined;
}

function sendError(reply: FastifyReply, code: "port_not_listening", message: string): void {
  const error = new AppError(code, message);
  reply.raw.writeHead(ERROR_STATUS[code], { "content-type": "application/json; charset=utf-8" });
  reply.raw.end(JSON.stringify(errorBody(error.code, error.message, reply.request.id)));
}
