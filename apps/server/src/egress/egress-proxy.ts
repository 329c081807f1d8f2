import { lookup } from "node:dns/promises";
import {
  createServer,
  request as httpRequest,
  type IncomingHttpHeaders,
  type IncomingMessage,
  type Server,
  type ServerResponse,
} from "node:http";
import { connect, type Socket } from "node:net";
import { chmod, rm } from "node:fs/promises";
import { pipeline } from "node:stream";
import type { Duplex } from "node:stream";
import type { EgressDecision } from "./decision-log.js";
import { ipFamily, normalizeHost, type EgressDenial, type EgressPolicy } from "./policy.js";

/** Resolves a host name to every address it has (the proxy vets them all). */
export type EgressResolver = (host: string) => Promise<string[]>;

/** The system resolver (getaddrinfo), or a fixed name map first when one is configured (tests). */
export function makeResolver(names: Record<string, string[]> = {}): EgressResolver {
  return async (host) => {
    const mapped = names[normalizeHost(host)];
    if (mapped) return mapped;
    const answers = await lookup(host, { all: true, verbatim: true });
    return answers.map((a) => a.address);
  };
}

/** What one shell's proxy needs. */
export interface EgressProxyOptions {
  orgId: string;
  shellId: string;
  socketPath: string;
  /** The shell's rules as they stand now (read per connection). */
  policy(): Promise<EgressPolicy>;
  resolve: EgressResolver;
  /** Connections the shell may have open at once. */
  maxConnections: number;
  /** Bytes the shell may move in total; past it every connection is refused and open ones end. */
  maxBytes: number;
  record(decision: EgressDecision): void;
}

/** Headers that describe one hop, never forwarded (RFC 9110 §7.6.1), plus the proxy's own. */
const HOP_HEADERS = new Set([
  "connection",
  "keep-alive",
  "proxy-connection",
  "proxy-authorization",
  "proxy-authenticate",
  "te",
  "trailer",
  "transfer-encoding",
  "upgrade",
]);

const RESOLVE_TIMEOUT_MS = 5_000;
const DIAL_TIMEOUT_MS = 10_000;
const BUDGET_CHECK_MS = 250;

function forwardedHeaders(headers: IncomingHttpHeaders): IncomingHttpHeaders {
  const named = new Set(
    String(headers.connection ?? "")
      .split(",")
      .map((h) => h.trim().toLowerCase()),
  );
  return Object.fromEntries(
    Object.entries(headers).filter(([name]) => !HOP_HEADERS.has(name) && !named.has(name)),
  );
}

/** `host:port` of a CONNECT request (`[v6]:port` for IPv6); null when malformed. */
function parseAuthority(authority: string): { host: string; port: number } | null {
  const match = /^(?:\[([0-9A-Fa-f:.]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(authority);
  const port = Number(match?.[3]);
  const host = match?.[1] ?? match?.[2];
  if (!host || !(port >= 1 && port <= 65535)) return null;
  return { host, port };
}

function withTimeout<T>(promise: Promise<T>, ms: number): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("timed out")), ms);
    promise.then(
      (value) => {
        clearTimeout(timer);
        resolve(value);
      },
      (error: unknown) => {
        clearTimeout(timer);
        reject(error instanceof Error ? error : new Error(String(error)));
      },
    );
  });
}

/**
 * One shell's egress proxy: an HTTP forward proxy on a unix socket that only the shell's egress
 * forwarder connects to. Plain HTTP requests with an absolute URI are forwarded; CONNECT is
 * tunnelled without interception (the decision is on the CONNECT host). Each connection's name is
 * resolved once, every address is vetted by the policy, and the proxy dials exactly the address it
 * vetted. Memory stays bounded: request heads are capped by Node's header limit and time out,
 * connections are capped, and bodies and tunnels are piped with backpressure.
 */
export class EgressProxy {
  readonly #server: Server;
  /** Bytes of connections that ended. */
  #closedBytes = 0;
  readonly #live = new Set<Socket>();
  readonly #budgetTimer: NodeJS.Timeout;

  constructor(private readonly options: EgressProxyOptions) {
    this.#server = createServer(
      { headersTimeout: 10_000, requestTimeout: 30_000, keepAliveTimeout: 5_000 },
      (req, res) => {
        this.#onRequest(req, res).catch(() => res.destroy());
      },
    );
    this.#server.maxConnections = options.maxConnections;
    this.#server.on("connect", (req: IncomingMessage, socket: Duplex, head: Buffer) => {
      this.#onConnect(req, socket, head).catch(() => socket.destroy());
    });
    this.#server.on("clientError", (_error, socket) => socket.destroy());
    this.#budgetTimer = setInterval(() => this.#enforceBudget(), BUDGET_CHECK_MS);
    this.#budgetTimer.unref();
  }

  /** Bytes this shell moved through the proxy so far. */
  get bytes(): number {
    let open = 0;
    for (const socket of this.#live) open += socket.bytesRead + socket.bytesWritten;
    return this.#closedBytes + open;
  }

  /** Listens on the socket path (replacing a stale socket file), readable by root only. */
  async listen(): Promise<void> {
    await rm(this.options.socketPath, { force: true });
    await new Promise<void>((resolve, reject) => {
      this.#server.once("error", reject);
      this.#server.listen(this.options.socketPath, () => {
        this.#server.off("error", reject);
        resolve();
      });
    });
    await chmod(this.options.socketPath, 0o600);
  }

  /** Stops listening, ends every connection and removes the socket file. */
  async close(): Promise<void> {
    clearInterval(this.#budgetTimer);
    for (const socket of this.#live) socket.destroy();
    this.#server.closeAllConnections();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
    await rm(this.options.socketPath, { force: true });
  }

  /** Resolves and vets one destination: the address to dial, or why not. */
  async #decide(
    host: string,
    port: number,
  ): Promise<{ address: string } | { denial: EgressDenial; address: string | null }> {
    if (this.bytes >= this.options.maxBytes) return { denial: "egress_limit", address: null };
    const policy = await this.options.policy();
    const byName = policy.decideName(host, port);
    if (byName) return { denial: byName, address: null };
    let addresses: string[];
    if (ipFamily(host)) addresses = [host];
    else {
      try {
        addresses = await withTimeout(this.options.resolve(host), RESOLVE_TIMEOUT_MS);
      } catch {
        addresses = [];
      }
    }
    const denial = policy.decide(host, port, addresses);
    const address = addresses[0] ?? null;
    if (denial || address === null) return { denial: denial ?? "no_address", address };
    return { address };
  }

  /**
   * Counts a dialled socket's bytes against the shell's budget when it closes; while it is open,
   * the budget watch (`#enforceBudget`) reads its counters.
   */
  #meter(upstream: Socket, onDone: (bytes: number) => void): void {
    this.#live.add(upstream);
    upstream.once("close", () => {
      const bytes = upstream.bytesRead + upstream.bytesWritten;
      this.#live.delete(upstream);
      this.#closedBytes += bytes;
      onDone(bytes);
    });
  }

  /** Ends every open connection once the shell's bytes pass its budget. */
  #enforceBudget(): void {
    if (this.bytes <= this.options.maxBytes) return;
    for (const socket of this.#live) socket.destroy();
  }

  #record(
    protocol: EgressDecision["protocol"],
    host: string,
    port: number,
    address: string | null,
    bytes: number,
    reason?: EgressDenial,
  ): void {
    this.options.record({
      orgId: this.options.orgId,
      shellId: this.options.shellId,
      allowed: reason === undefined,
      host: normalizeHost(host),
      address,
      port,
      protocol,
      bytes,
      reason,
    });
  }

  async #onRequest(req: IncomingMessage, res: ServerResponse): Promise<void> {
    let url: URL;
    try {
      url = new URL(req.url ?? "");
    } catch {
      url = new URL("invalid:");
    }
    if (url.protocol !== "http:") {
      res.writeHead(400, { "content-type": "text/plain", connection: "close" });
      res.end("egress proxy: send absolute http:// URLs, or CONNECT for https\n");
      return;
    }
    const host = url.hostname.replace(/^\[(.*)\]$/, "$1");
    const port = url.port ? Number(url.port) : 80;
    const decision = await this.#decide(host, port);
    if ("denial" in decision) {
      this.#record("http", host, port, decision.address, 0, decision.denial);
      res.writeHead(403, {
        "content-type": "text/plain",
        "x-shells-egress": "denied",
        connection: "close",
      });
      res.end(`egress denied: ${decision.denial}\n`);
      return;
    }
    const upstream = httpRequest({
      host: decision.address,
      port,
      method: req.method,
      path: `${url.pathname}${url.search}`,
      headers: { ...forwardedHeaders(req.headers), host: url.host },
      setHost: false,
      agent: false,
      timeout: DIAL_TIMEOUT_MS,
    });
    upstream.once("socket", (socket: Socket) =>
      this.#meter(socket, (bytes) => this.#record("http", host, port, decision.address, bytes)),
    );
    upstream.once("timeout", () => upstream.destroy(new Error("upstream timed out")));
    upstream.once("response", (answer) => {
      res.writeHead(answer.statusCode ?? 502, forwardedHeaders(answer.headers));
      pipeline(answer, res, () => undefined);
    });
    upstream.once("error", () => {
      if (!res.headersSent) {
        res.writeHead(502, { "content-type": "text/plain", connection: "close" });
        res.end("egress proxy: upstream unreachable\n");
      } else res.destroy();
    });
    pipeline(req, upstream, () => undefined);
  }

  async #onConnect(req: IncomingMessage, client: Duplex, head: Buffer): Promise<void> {
    client.on("error", () => client.destroy());
    const target = parseAuthority(req.url ?? "");
    if (!target) {
      client.end("HTTP/1.1 400 Bad Request\r\nconnection: close\r\n\r\n");
      return;
    }
    const { host, port } = target;
    const decision = await this.#decide(host, port);
    if ("denial" in decision) {
      this.#record("connect", host, port, decision.address, 0, decision.denial);
      client.end(
        `HTTP/1.1 403 Forbidden\r\nx-shells-egress: denied\r\ncontent-type: text/plain\r\nconnection: close\r\n\r\negress denied: ${decision.denial}\n`,
      );
      return;
    }
    const upstream = connect({ host: decision.address, port, timeout: DIAL_TIMEOUT_MS });
    this.#meter(upstream, (bytes) => this.#record("connect", host, port, decision.address, bytes));
    upstream.once("timeout", () => upstream.destroy());
    upstream.once("error", () => {
      if (client.writable && !upstream.connecting) client.destroy();
      else client.end("HTTP/1.1 502 Bad Gateway\r\nconnection: close\r\n\r\n");
    });
    upstream.once("connect", () => {
      upstream.setTimeout(0);
      client.write("HTTP/1.1 200 Connection Established\r\n\r\n");
      if (head.length > 0) upstream.write(head);
      pipeline(client, upstream, () => undefined);
      pipeline(upstream, client, () => undefined);
    });
  }
}
