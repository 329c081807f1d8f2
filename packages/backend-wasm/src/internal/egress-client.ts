import { request as httpRequest, type IncomingMessage } from "node:http";
import { request as httpsRequest } from "node:https";
import { randomInt } from "node:crypto";
import { connect as netConnect, type Socket } from "node:net";
import { connect as tlsConnect } from "node:tls";
import { SANDBOX_EGRESS_PORT } from "@shells/sandbox";

/** An HTTP request a guest made (`fetch` in QuickJS, `urllib.request` in Pyodide). */
export interface GuestHttpRequest {
  method: string;
  url: string;
  headers: Record<string, string>;
  /** Base64 of the request body; null for none. */
  body: string | null;
}

/** What the guest gets back: the answer (the proxy's own refusal included), or why none came. */
export type GuestHttpAnswer =
  | {
      ok: true;
      status: number;
      statusText: string;
      headers: Record<string, string>;
      /** Base64 of the response body. */
      body: string;
    }
  | { ok: false; error: string };

/** The most a response body may hold; a larger one ends the request with an error. */
const MAX_BODY_BYTES = 16 * 1024 * 1024;

/** How long one request may take, from its start to the end of its body. */
const REQUEST_TIMEOUT_MS = 60_000;

/** Headers a guest may not set: they describe the connection, which the bridge owns. */
/**
 * A connection to the proxy's socket as the shell's forwarder makes it: the PROXY protocol line
 * first, naming the proxy's listener (127.0.0.1:3128) as the address the guest dialled. The line is
 * the bridge's own, never the guest's.
 */
function proxyConnection(socketPath: string): Socket {
  const socket = netConnect(socketPath);
  socket.write(
    `PROXY TCP4 127.0.0.1 127.0.0.1 ${randomInt(32768, 61000)} ${SANDBOX_EGRESS_PORT}\r\n`,
  );
  return socket;
}

const HOP_HEADERS = new Set([
  "connection",
  "keep-alive",
  "proxy-authorization",
  "proxy-connection",
  "te",
  "trailer",
  "transfer-encoding",
  "upgrade",
  "host",
  "content-length",
]);

/**
 * Carries a guest's HTTP request to the shell's egress proxy (its unix socket; the worker's jail has
 * no network; each connection opens with the PROXY line the shells' forwarders write), as a
 * container guest's client would through `HTTP_PROXY`: `http://` URLs as
 * absolute-URI requests, `https://` ones through a `CONNECT` tunnel with TLS to the origin made
 * here (the guest has no sockets, so no TLS of its own; the origin's certificate is checked against
 * the host's CAs), and the proxy's own listener (`http://127.0.0.1:3128/…`, where binding URLs
 * point) as origin-form requests. The proxy decides, records `egress.allowed`/`egress.denied` and
 * injects binding secrets; its refusals reach the guest as the answers they are (403).
 */
export async function viaEgressProxy(
  socketPath: string,
  guest: GuestHttpRequest,
): Promise<GuestHttpAnswer> {
  let url: URL;
  try {
    url = new URL(guest.url);
  } catch {
    return { ok: false, error: `invalid URL: ${guest.url}` };
  }
  if (url.protocol !== "http:" && url.protocol !== "https:")
    return { ok: false, error: `unsupported protocol ${url.protocol} (http and https only)` };
  if (url.username || url.password)
    return { ok: false, error: "credentials in the URL are not supported" };
  const method = guest.method.toUpperCase();
  if (!/^[A-Z]+$/.test(method) || method === "CONNECT")
    return { ok: false, error: `unsupported method ${guest.method}` };
  const headers: Record<string, string> = {};
  for (const [name, value] of Object.entries(guest.headers))
    if (!HOP_HEADERS.has(name.toLowerCase())) headers[name] = String(value);
  headers.host = url.host;
  headers.connection = "close";
  const body = guest.body === null ? null : Buffer.from(guest.body, "base64");
  if (body) headers["content-length"] = String(body.length);
  const loopback = ["127.0.0.1", "localhost", "[::1]"].includes(url.hostname);
  const proxyListener =
    loopback && url.protocol === "http:" && url.port === `${SANDBOX_EGRESS_PORT}`;
  if (loopback && !proxyListener)
    return {
      ok: false,
      error: `connection refused: nothing listens on ${url.host} in a wasm shell`,
    };

  // Every request below names `createConnection` and no `agent`: Node then dials through that
  // function alone. An agent (even `agent: false`) would dial the origin itself, from the host,
  // past the proxy.
  const signal = AbortSignal.timeout(REQUEST_TIMEOUT_MS);
  try {
    if (url.protocol === "http:") {
      const response = await send(
        httpRequest({
          createConnection: () => proxyConnection(socketPath),
          method,
          // The proxy's own paths (bindings) in origin form, everything else as an absolute URI.
          path: proxyListener ? `${url.pathname}${url.search}` : url.href,
          headers,
          signal,
        }),
        body,
      );
      return await answer(response);
    }
    const tunnel = await new Promise<{ status: number; response: IncomingMessage; socket: Socket }>(
      (resolve, reject) => {
        const authority = `${url.hostname}:${url.port || "443"}`;
        const connect = httpRequest({
          createConnection: () => proxyConnection(socketPath),
          method: "CONNECT",
          path: authority,
          headers: { host: authority },
          signal,
        });
        connect.once("connect", (response, socket) =>
          resolve({ status: response.statusCode ?? 0, response, socket }),
        );
        connect.once("error", reject);
        connect.end();
      },
    );
    if (tunnel.status !== 200) {
      // The proxy refused the tunnel: its answer (403 with the reason) is the guest's answer.
      tunnel.socket.destroy();
      return {
        ok: true,
        status: tunnel.status,
        statusText: tunnel.response.statusMessage ?? "",
        headers: flatHeaders(tunnel.response),
        body: "",
      };
    }
    const response = await send(
      httpsRequest({
        method,
        host: url.hostname,
        path: `${url.pathname}${url.search}`,
        headers,
        signal,
        createConnection: () =>
          tlsConnect({
            socket: tunnel.socket,
            servername: url.hostname,
            ALPNProtocols: ["http/1.1"],
          }),
      }),
      body,
    );
    return await answer(response);
  } catch (error) {
    return { ok: false, error: (error as Error).message };
  }
}

function send(
  request: import("node:http").ClientRequest,
  body: Buffer | null,
): Promise<IncomingMessage> {
  return new Promise((resolve, reject) => {
    request.once("response", resolve);
    request.once("error", reject);
    request.end(body ?? undefined);
  });
}

async function answer(response: IncomingMessage): Promise<GuestHttpAnswer> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of response as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > MAX_BODY_BYTES) {
      response.destroy();
      return { ok: false, error: `response body over ${MAX_BODY_BYTES} bytes` };
    }
    chunks.push(chunk);
  }
  return {
    ok: true,
    status: response.statusCode ?? 0,
    statusText: response.statusMessage ?? "",
    headers: flatHeaders(response),
    body: Buffer.concat(chunks).toString("base64"),
  };
}

/** Response headers by lower-case name, repeated ones joined as `fetch` joins them. */
function flatHeaders(response: IncomingMessage): Record<string, string> {
  const headers: Record<string, string> = {};
  for (const [name, value] of Object.entries(response.headers))
    if (value !== undefined) headers[name] = Array.isArray(value) ? value.join(", ") : value;
  return headers;
}
