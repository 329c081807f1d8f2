import { lookup } from "node:dns/promises";
import {
  createServer,
  request as httpRequest,
  type IncomingMessage,
  type Server,
  type ServerResponse,
} from "node:http";
import {
  connect,
  createServer as createNetServer,
  type Server as NetServer,
  type Socket,
} from "node:net";
import { chmod, rm } from "node:fs/promises";
import { pipeline } from "node:stream";
import type { Duplex } from "node:stream";
import type { EgressDecision } from "./decision-log.js";
import { BINDINGS_PATH, type BindingProxy } from "./binding-proxy.js";
import { forwardedHeaders } from "./http-headers.js";
import {
  buildDnsAnswer,
  buildDnsError,
  DNS_RCODE,
  isAddressQuestion,
  isLookupName,
  parseDnsQuery,
} from "./dns-message.js";
import { MAX_CLIENT_HELLO_BYTES, readServerName } from "./tls-client-hello.js";
import { ipFamily, normalizeHost, type EgressDenial, type EgressPolicy } from "./policy.js";
import { RequestRate } from "./request-rate.js";

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
  /**
   * Requests the shell may make per second, with bursts of as many: HTTP requests, tunnels,
   * redirected connections, DNS questions and binding calls. Past it they are refused
   * (`rate_limited`).
   */
  maxRequestsPerSecond: number;
  /** Called once, when the shell passes `maxBytes` (the service stops the shell for it). */
  onByteLimit?: ((bytes: number) => void) | undefined;
  /**
   * Time a connection has to send what the proxy decides on — its PROXY line, its HTTP request
   * head, its ClientHello, its next DNS question — ms (10 s by default). A slow-loris client is
   * cut off here, whatever it trickles in meanwhile.
   */
  headerTimeoutMs?: number | undefined;
  /** A tunnel or relayed TLS connection that moves no byte either way this long is closed, ms. */
  tunnelIdleMs?: number | undefined;
  record(decision: EgressDecision): void;
  /**
   * The shell's service bindings: requests the shell addresses to the proxy itself under
   * `/bindings/` go here. Without it, every such request is refused.
   */
  bindings?: Pick<BindingProxy, "serve"> | undefined;
}

const RESOLVE_TIMEOUT_MS = 5_000;
const DIAL_TIMEOUT_MS = 10_000;
const BUDGET_CHECK_MS = 250;
/** See `EgressProxyOptions.headerTimeoutMs`. */
const DEFAULT_HEADER_TIMEOUT_MS = 10_000;
/** See `EgressProxyOptions.tunnelIdleMs`: long enough for a quiet SSH session or database link. */
export const DEFAULT_TUNNEL_IDLE_MS = 10 * 60_000;
/** Time a forwarded plain HTTP request has to arrive whole (head and body). */
const REQUEST_TIMEOUT_MS = 30_000;
/** A PROXY protocol v1 line is at most 107 bytes with its CRLF. */
const MAX_PROXY_LINE = 107;
/** Largest DNS message the resolver reads (questions are tiny; anything larger is not one). */
const MAX_DNS_MESSAGE = 4096;
/** The shell's resolver (the forwarder's DNS listeners). */
const RESOLVER_ADDRESS = "127.0.0.53";
const RESOLVER_PORT = 53;

/** A forwarder connection's PROXY protocol v1 line: who connected, and where they were going. */
export interface ProxyLine {
  source: string;
  destination: string;
  destinationPort: number;
}

/** Parses `PROXY TCP4|TCP6 <src> <dst> <sport> <dport>` (without its CRLF); null when malformed. */
export function parseProxyLine(line: string): ProxyLine | null {
  const match = /^PROXY (TCP4|TCP6) (\S+) (\S+) (\d{1,5}) (\d{1,5})$/.exec(line);
  if (!match) return null;
  const family = match[1] === "TCP4" ? "ipv4" : "ipv6";
  const source = match[2] as string;
  const destination = match[3] as string;
  const destinationPort = Number(match[5]);
  if (ipFamily(source) !== family || ipFamily(destination) !== family) return null;
  if (!(destinationPort >= 1 && destinationPort <= 65535)) return null;
  return { source, destination, destinationPort };
}

/**
 * Reads from `socket` until `complete` says what the bytes so far amount to, or `limit` bytes or
 * `timeoutMs` pass (null then); `complete` never sees more than `limit` bytes. The bytes read are
 * returned; nothing is lost.
 */
function readPreamble<T>(
  socket: Socket,
  limit: number,
  timeoutMs: number,
  complete: (data: Buffer) => T | "more",
): Promise<{ result: T; data: Buffer } | null> {
  return new Promise((resolve) => {
    if (socket.readableEnded || socket.destroyed) {
      resolve(null);
      return;
    }
    let data = Buffer.alloc(0);
    const finish = (value: { result: T; data: Buffer } | null) => {
      clearTimeout(timer);
      socket.off("data", onData);
      socket.off("end", onEnd);
      socket.off("close", onEnd);
      socket.pause();
      resolve(value);
    };
    const onData = (chunk: Buffer) => {
      data = Buffer.concat([data, chunk]);
      // Only the first `limit` bytes count, however large the chunk that brought them.
      const result = complete(data.length > limit ? data.subarray(0, limit) : data);
      if (result !== "more") finish({ result, data });
      else if (data.length >= limit) finish(null);
    };
    const onEnd = () => finish(null);
    const timer = setTimeout(() => finish(null), timeoutMs);
    socket.on("data", onData);
    socket.once("end", onEnd);
    socket.once("close", onEnd);
    socket.resume();
  });
}

/**
 * The path and query of a request the shell addressed to the proxy listener itself — in origin
 * form (`GET /bindings/x/ HTTP/1.1`, a client that dialled the binding URL directly) or in
 * absolute form naming the listener's own address (a client that sent it through its proxy
 * variables) — or null for a request meant for somewhere else.
 */
function requestToProxy(target: string, own: string): string | null {
  if (target.startsWith("/")) return target;
  let url: URL;
  try {
    url = new URL(target);
  } catch {
    return null;
  }
  const port = own.slice(own.lastIndexOf(":") + 1);
  const self =
    url.protocol === "http:" &&
    (url.host === own || (url.hostname === "localhost" && url.port === port));
  return self ? `${url.pathname}${url.search}` : null;
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

/** A destination the policy allows (the address to dial, and every address the name had), or why not. */
export type VettedDestination =
  { address: string; addresses: string[] } | { denial: EgressDenial; address: string | null };

/**
 * Resolves and vets one destination (`port` null: a DNS question). A name the policy refuses
 * outright is never looked up; an allowed one is resolved once, and every address it resolved to
 * must pass, so the caller dials exactly an address that was vetted.
 */
export async function vetDestination(
  policy: EgressPolicy,
  resolve: EgressResolver,
  host: string,
  port: number | null,
): Promise<VettedDestination> {
  const byName = policy.decideName(host, port);
  if (byName) return { denial: byName, address: null };
  let addresses: string[];
  if (ipFamily(host)) addresses = [host];
  else {
    try {
      addresses = await withTimeout(resolve(host), RESOLVE_TIMEOUT_MS);
    } catch {
      addresses = [];
    }
  }
  const denial = policy.decide(host, port, addresses);
  const address = addresses[0] ?? null;
  if (denial || address === null) return { denial: denial ?? "no_address", address };
  return { address, addresses };
}

/** Closes both ends of a relay once neither has moved a byte for `idleMs`. */
function closeWhenIdle(a: Socket | Duplex, b: Socket, idleMs: number): void {
  const close = () => {
    a.destroy();
    b.destroy();
  };
  for (const side of [a, b]) if ("setTimeout" in side) side.setTimeout(idleMs, close);
}

/**
 * One shell's egress proxy: an HTTP forward proxy on a unix socket that only the shell's egress
 * forwarder connects to. Plain HTTP requests with an absolute URI are forwarded; CONNECT is
 * tunnelled without interception (the decision is on the CONNECT host). Each connection's name is
 * resolved once, every address is vetted by the policy, and the proxy dials exactly the address it
 * vetted. Memory stays bounded against a hostile shell: connections are capped (`maxConnections`,
 * further ones dropped and recorded as `connection_limit`), whatever the proxy reads before it
 * decides is capped in size and must arrive within `headerTimeoutMs` (a slow-loris client is cut
 * off), idle tunnels close, requests are rate-limited, and bodies and tunnels are piped with
 * backpressure.
 */
export class EgressProxy {
  /** Takes the forwarder's connections and dispatches each on its PROXY line. */
  readonly #front: NetServer;
  readonly #server: Server;
  /** Redirected port-80 connections: the port the shell dialled (the Host header names the host). */
  readonly #redirected = new WeakMap<Socket, number>();
  /** Connections to the proxy listener itself: the `address:port` the shell dialled. */
  readonly #direct = new WeakMap<Socket, string>();
  /** Bytes of connections that ended. */
  #closedBytes = 0;
  readonly #live = new Set<Socket>();
  readonly #budgetTimer: NodeJS.Timeout;
  readonly #rate: RequestRate;
  readonly #headerTimeoutMs: number;
  readonly #tunnelIdleMs: number;
  #byteLimitReported = false;

  constructor(private readonly options: EgressProxyOptions) {
    this.#headerTimeoutMs = options.headerTimeoutMs ?? DEFAULT_HEADER_TIMEOUT_MS;
    this.#tunnelIdleMs = options.tunnelIdleMs ?? DEFAULT_TUNNEL_IDLE_MS;
    this.#rate = new RequestRate(options.maxRequestsPerSecond);
    this.#server = createServer(
      {
        headersTimeout: this.#headerTimeoutMs,
        requestTimeout: Math.max(REQUEST_TIMEOUT_MS, this.#headerTimeoutMs),
        keepAliveTimeout: 5_000,
        connectionsCheckingInterval: Math.min(1_000, Math.ceil(this.#headerTimeoutMs / 4)),
      },
      (req, res) => {
        this.#onRequest(req, res).catch(() => res.destroy());
      },
    );
    // Node enforces `headersTimeout` and `requestTimeout` from a check it starts when its server
    // starts listening. This server never listens (the front server hands it its connections),
    // so it is told it does; without it a request head trickled in a byte at a time would hold
    // its connection forever (egress-proxy-limits.test.ts shows it cut off).
    this.#server.emit("listening");
    // Half-open: a DNS datagram's connection ends its sending side after the question and still
    // reads the answer.
    this.#front = createNetServer({ pauseOnConnect: true, allowHalfOpen: true }, (socket) => {
      socket.on("error", () => socket.destroy());
      this.#onForwarded(socket).catch(() => socket.destroy());
    });
    this.#front.maxConnections = options.maxConnections;
    // Node closes a connection over the cap at once; the refusal is recorded like any other.
    this.#front.on("drop", () => this.#record("connect", "", 0, null, 0, "connection_limit"));
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
      this.#front.once("error", reject);
      this.#front.listen(this.options.socketPath, () => {
        this.#front.off("error", reject);
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
    this.#server.close();
    await new Promise<void>((resolve) => this.#front.close(() => resolve()));
    await rm(this.options.socketPath, { force: true });
  }

  /**
   * Dispatches one connection from the shell's forwarder on its PROXY line: the shell's resolver
   * (127.0.0.53:53), a redirected connection to port 80 (decided on its Host header) or 443 (on
   * its TLS SNI), or else the HTTP proxy the proxy variables name. Only the forwarder connects
   * here (the socket is root's), and the shell's bytes only ever follow its line.
   */
  async #onForwarded(socket: Socket): Promise<void> {
    const preamble = await readPreamble(socket, MAX_PROXY_LINE, this.#headerTimeoutMs, (data) => {
      const end = data.indexOf("\r\n");
      return end < 0 ? "more" : end;
    });
    const line = preamble
      ? parseProxyLine(preamble.data.toString("latin1", 0, preamble.result))
      : null;
    if (!preamble || !line) {
      socket.destroy();
      return;
    }
    const rest = preamble.data.subarray(preamble.result + 2);
    if (rest.length > 0) socket.unshift(rest);
    if (line.destination === RESOLVER_ADDRESS && line.destinationPort === RESOLVER_PORT) {
      await this.#serveDns(socket);
    } else if (line.destinationPort === 443) {
      await this.#onRedirectedTls(socket);
    } else {
      if (line.destinationPort === 80) this.#redirected.set(socket, 80);
      else this.#direct.set(socket, `${line.destination}:${line.destinationPort}`);
      this.#server.emit("connection", socket);
      socket.resume();
    }
  }

  /**
   * Answers length-prefixed DNS questions (TCP framing; the forwarder frames UDP datagrams the
   * same way) one after another until the client stops asking.
   */
  async #serveDns(socket: Socket): Promise<void> {
    for (;;) {
      const message = await readPreamble(
        socket,
        2 + MAX_DNS_MESSAGE,
        this.#headerTimeoutMs,
        (data) => {
          if (data.length < 2) return "more";
          const length = data.readUInt16BE(0);
          if (length > MAX_DNS_MESSAGE) return -1;
          return data.length >= 2 + length ? length : "more";
        },
      );
      if (!message || message.result < 0) {
        socket.end();
        return;
      }
      const end = 2 + message.result;
      const answer = await this.#answerDns(message.data.subarray(2, end));
      const framed = Buffer.alloc(2 + answer.length);
      framed.writeUInt16BE(answer.length, 0);
      answer.copy(framed, 2);
      socket.write(framed);
      const rest = message.data.subarray(end);
      if (rest.length > 0) socket.unshift(rest);
    }
  }

  /**
   * Answers one DNS question. The name is checked against the policy *before* it is looked up
   * (a refused name never reaches DNS: its lookup alone could carry data out); an allowed name is
   * answered with the addresses the proxy resolved and vetted, all of which the policy must
   * allow. Only A and AAAA are answered; other types are refused.
   */
  async #answerDns(packet: Buffer): Promise<Buffer> {
    const question = parseDnsQuery(packet);
    if ("error" in question)
      return buildDnsError(
        question.id ?? 0,
        question.error === "malformed" ? DNS_RCODE.formErr : DNS_RCODE.notImp,
      );
    if (!isAddressQuestion(question) || !isLookupName(question.name))
      return buildDnsAnswer(question, DNS_RCODE.refused);
    const decision = await this.#decide(question.name, null);
    if ("denial" in decision) {
      this.#record("dns", question.name, RESOLVER_PORT, decision.address, 0, decision.denial);
      const rcode = decision.denial === "no_address" ? DNS_RCODE.nxDomain : DNS_RCODE.refused;
      return buildDnsAnswer(question, rcode);
    }
    this.#record("dns", question.name, RESOLVER_PORT, decision.address, 0);
    return buildDnsAnswer(question, DNS_RCODE.noError, decision.addresses);
  }

  /**
   * A connection the shell made to some address's port 443 without the proxy: decided on the
   * server name of its TLS ClientHello, never on the address it dialled, and relayed untouched
   * (no interception) to the address the proxy resolved and vetted for that name.
   */
  async #onRedirectedTls(client: Socket): Promise<void> {
    const hello = await readPreamble(
      client,
      MAX_CLIENT_HELLO_BYTES,
      this.#headerTimeoutMs,
      (data) => {
        const result = readServerName(data);
        return "need" in result ? "more" : result;
      },
    );
    const serverName = hello && "serverName" in hello.result ? hello.result.serverName : null;
    if (!hello || serverName === null) {
      this.#record("tls", "", 443, null, 0, "no_server_name");
      client.destroy();
      return;
    }
    const decision = await this.#decide(serverName, 443);
    if ("denial" in decision) {
      this.#record("tls", serverName, 443, decision.address, 0, decision.denial);
      client.destroy();
      return;
    }
    const upstream = connect({ host: decision.address, port: 443, timeout: DIAL_TIMEOUT_MS });
    this.#meter(upstream, (bytes) => this.#record("tls", serverName, 443, decision.address, bytes));
    upstream.once("timeout", () => upstream.destroy());
    upstream.once("error", () => client.destroy());
    upstream.once("connect", () => {
      upstream.setTimeout(0);
      upstream.write(hello.data);
      closeWhenIdle(client, upstream, this.#tunnelIdleMs);
      pipeline(client, upstream, () => undefined);
      pipeline(upstream, client, () => undefined);
    });
  }

  /**
   * Resolves and vets one destination (`port` null: a DNS question): the address to dial, or why
   * not. Each decision is one request against the shell's rate.
   */
  async #decide(host: string, port: number | null): Promise<VettedDestination> {
    const limited = this.#limit();
    if (limited) return { denial: limited, address: null };
    return vetDestination(await this.options.policy(), this.options.resolve, host, port);
  }

  /** Counts one request: refused when the byte budget is spent or the rate is passed. */
  #limit(): "egress_limit" | "rate_limited" | null {
    if (this.#overBudget()) return "egress_limit";
    return this.#rate.take() ? null : "rate_limited";
  }

  /** Whether the shell has used up its byte budget; the first time, the service is told. */
  #overBudget(): boolean {
    const bytes = this.bytes;
    if (bytes < this.options.maxBytes) return false;
    if (!this.#byteLimitReported) {
      this.#byteLimitReported = true;
      this.options.onByteLimit?.(bytes);
    }
    return true;
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
    if (!this.#overBudget()) return;
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
    const own = this.#direct.get(req.socket);
    const target = own === undefined ? null : requestToProxy(req.url ?? "", own);
    if (target !== null) {
      if (this.options.bindings && target.startsWith(BINDINGS_PATH)) {
        await this.options.bindings.serve(req, res, target, {
          meter: (socket, onDone) => this.#meter(socket, onDone),
          limit: () => this.#limit(),
        });
        return;
      }
      res.writeHead(400, { "content-type": "text/plain", connection: "close" });
      res.end(
        "egress proxy: send absolute http:// URLs, CONNECT for https, or call a binding URL (/bindings/<name>/)\n",
      );
      return;
    }
    let url: URL;
    const redirectedPort = this.#redirected.get(req.socket);
    try {
      // A redirected request names its host only in Host (origin form); the port is the one the
      // shell dialled, whatever Host says.
      url =
        redirectedPort === undefined
          ? new URL(req.url ?? "")
          : new URL(`http://${req.headers.host ?? ""}${req.url?.startsWith("/") ? req.url : "/"}`);
      if (redirectedPort !== undefined) url.port = String(redirectedPort);
    } catch {
      url = new URL("invalid:");
    }
    if (redirectedPort !== undefined && (url.protocol !== "http:" || !req.headers.host)) {
      this.#record("http", "", redirectedPort, null, 0, "no_server_name");
      res.writeHead(400, { "content-type": "text/plain", connection: "close" });
      res.end("egress proxy: a request without a Host header\n");
      return;
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
      res.writeHead(decision.denial === "rate_limited" ? 429 : 403, {
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
      const status = decision.denial === "rate_limited" ? "429 Too Many Requests" : "403 Forbidden";
      client.end(
        `HTTP/1.1 ${status}\r\nx-shells-egress: denied\r\ncontent-type: text/plain\r\nconnection: close\r\n\r\negress denied: ${decision.denial}\n`,
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
      closeWhenIdle(client, upstream, this.#tunnelIdleMs);
      pipeline(client, upstream, () => undefined);
      pipeline(upstream, client, () => undefined);
    });
  }
}
