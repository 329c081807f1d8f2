/**
 * A stand-in Kubernetes API server on loopback that speaks the real wire format: JSON objects and
 * `Status` answers over HTTP(S), watch streams (one JSON event per line, held open), and the exec
 * subresource over WebSocket with the channel subprotocols. It keeps objects in memory and plays
 * the kubelet's part in the simplest way: a created Pod runs a moment later (the status of
 * `fixtures/pod-status-running.json`), a deleted Pod is marked, then gone. Exec calls are answered
 * with recorded frames (`fixtures/exec-*.json`) chosen by the test; nothing is ever run.
 *
 * It is a test fixture for the backend's API handling, not a model of a cluster: it checks nothing
 * a real API server's admission would (Pod Security, quotas, RBAC).
 */
import { readFileSync } from "node:fs";
import {
  createServer as createHttpServer,
  type IncomingMessage,
  type ServerResponse,
} from "node:http";
import { createServer as createHttpsServer } from "node:https";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import { WebSocketServer, type WebSocket } from "ws";

const FIXTURES = join(import.meta.dirname, "fixtures");

/** A fixture file, parsed, with `{{placeholders}}` filled in. */
export function fixture<T = unknown>(
  name: string,
  values: Record<string, string | number> = {},
): T {
  let raw = readFileSync(join(FIXTURES, name), "utf8");
  for (const [key, value] of Object.entries(values))
    raw = raw.replaceAll(`{{${key}}}`, String(value));
  return JSON.parse(raw) as T;
}

/** One frame of a recorded exec: a channel and its payload. */
export interface ExecFrame {
  channel: number;
  text?: string;
  json?: unknown;
  bytes?: number[];
}

/** How the fake answers one exec call. */
export interface ExecReplay {
  /** Forces the subprotocol (else the first one both sides know). */
  protocol?: string;
  frames: ExecFrame[];
  /** End the connection after the frames without a status (the container went away). */
  closeWithoutStatus?: boolean;
  /** Keep the connection open after the frames (the test ends it through `call.socket`). */
  holdOpen?: boolean;
  /** Send the frames only once the client sent something (its stdin). */
  afterInput?: boolean;
}

/** An exec call the fake received. */
export interface ExecCall {
  pod: string;
  container: string;
  command: string[];
  tty: boolean;
  protocol: string;
  /** Frames the client sent (stdin, resize, close), as they arrive. */
  received: Buffer[];
  socket: WebSocket;
}

/** A request the fake received. */
export interface RecordedRequest {
  method: string;
  path: string;
  query: URLSearchParams;
  headers: IncomingMessage["headers"];
  body: unknown;
}

type StoredObject = {
  apiVersion?: string;
  kind?: string;
  metadata: {
    name: string;
    namespace?: string;
    labels?: Record<string, string>;
    resourceVersion?: string;
    uid?: string;
    creationTimestamp?: string;
    deletionTimestamp?: string;
    [key: string]: unknown;
  };
  [key: string]: unknown;
};

interface WatchEventRecord {
  version: number;
  collection: string;
  type: "ADDED" | "MODIFIED" | "DELETED";
  object: StoredObject;
}

/** Encodes one exec frame as its binary message. */
export function encodeFrame(frame: ExecFrame): Buffer {
  const payload =
    frame.json !== undefined
      ? Buffer.from(JSON.stringify(frame.json), "utf8")
      : frame.bytes
        ? Buffer.from(frame.bytes)
        : Buffer.from(frame.text ?? "", "utf8");
  return Buffer.concat([Buffer.from([frame.channel]), payload]);
}

/** A collection path and its kind's plural, from a request path; null when not one the fake has. */
function parsePath(
  path: string,
): { collection: string; plural: string; name?: string; sub?: string } | null {
  const m =
    /^(\/api\/v1\/namespaces\/[^/]+\/(pods|secrets|persistentvolumeclaims)|\/apis\/networking\.k8s\.io\/v1\/namespaces\/[^/]+\/(networkpolicies)|\/apis\/node\.k8s\.io\/v1\/(runtimeclasses))(?:\/([^/]+))?(?:\/(exec))?$/.exec(
      path,
    );
  if (!m) return null;
  return {
    collection: m[1]!,
    plural: (m[2] ?? m[3] ?? m[4])!,
    ...(m[5] ? { name: decodeURIComponent(m[5]) } : {}),
    ...(m[6] ? { sub: m[6] } : {}),
  };
}

function matchesLabels(object: StoredObject, selector: string | null): boolean {
  if (!selector) return true;
  return selector.split(",").every((term) => {
    const [key, value] = term.split("=");
    return object.metadata.labels?.[key!] === value;
  });
}

function matchesFields(object: StoredObject, selector: string | null): boolean {
  if (!selector) return true;
  return selector.split(",").every((term) => {
    const [key, value] = term.split("=");
    return key === "metadata.name" ? object.metadata.name === value : true;
  });
}

/** Options of a fake API server. */
export interface FakeKubeApiOptions {
  /** Serve HTTPS with this key and certificate (PEM). */
  tls?: { key: string; cert: string };
  /** Subprotocols the fake's exec endpoint speaks, preferred first. */
  execProtocols?: string[];
  /** How long the fake "kubelet" takes to run a Pod, and to remove a deleted one, ms. */
  kubeletDelayMs?: number;
}

export class FakeKubeApi {
  readonly requests: RecordedRequest[] = [];
  readonly execCalls: ExecCall[] = [];
  readonly objects = new Map<string, StoredObject>();
  /** Answers exec calls; the default replays `exec-v4-success.json`. */
  onExec: (call: ExecCall) => ExecReplay = () => fixture<ExecReplay>("exec-v4-success.json");
  /** A request hook: answer it yourself (status and body) or return undefined to let the fake. */
  intercept: (request: RecordedRequest) => { status: number; body: unknown } | undefined = () =>
    undefined;
  /** The status the fake "kubelet" gives a Pod it runs (per Pod name; default running). */
  podStatusOnStart: (name: string) => unknown = () => fixture("pod-status-running.json");
  /** Watches still to be answered with a 410 `ERROR` event (one per count). */
  expireWatches = 0;
  readonly #events: WatchEventRecord[] = [];
  readonly #watchers = new Set<{
    collection: string;
    field: string | null;
    label: string | null;
    from: number;
    response: ServerResponse;
  }>();
  readonly #server;
  readonly #wss: WebSocketServer;
  readonly #options: FakeKubeApiOptions;
  #version = 100;
  #uid = 0;

  constructor(options: FakeKubeApiOptions = {}) {
    this.#options = options;
    const handler = (request: IncomingMessage, response: ServerResponse) =>
      void this.#handle(request, response);
    this.#server = options.tls
      ? createHttpsServer({ key: options.tls.key, cert: options.tls.cert }, handler)
      : createHttpServer(handler);
    const protocols = options.execProtocols ?? ["v5.channel.k8s.io", "v4.channel.k8s.io"];
    this.#wss = new WebSocketServer({
      server: this.#server,
      handleProtocols: (offered) => protocols.find((p) => offered.has(p)) ?? false,
    });
    this.#wss.on("connection", (socket, request) => this.#exec(socket, request));
  }

  async listen(): Promise<string> {
    await new Promise<void>((resolve) => this.#server.listen(0, "127.0.0.1", resolve));
    const { port } = this.#server.address() as AddressInfo;
    return `${this.#options.tls ? "https" : "http"}://127.0.0.1:${port}`;
  }

  async close(): Promise<void> {
    for (const watcher of this.#watchers) watcher.response.end();
    for (const client of this.#wss.clients) client.terminate();
    await new Promise<void>((resolve) => this.#wss.close(() => resolve()));
    this.#server.closeAllConnections();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }

  /** Every object the client sent in a create or replace. */
  get sentObjects(): StoredObject[] {
    return this.requests
      .filter(
        (r) => (r.method === "POST" || r.method === "PUT") && r.body && typeof r.body === "object",
      )
      .map((r) => r.body as StoredObject);
  }

  /** Objects of one plural (`pods`) now held. */
  stored(plural: string): StoredObject[] {
    return [...this.objects.entries()]
      .filter(([key]) => key.split("/").at(-2) === plural)
      .map(([, o]) => o);
  }

  /** Puts an object in the store as if someone else made it (bumps the version, tells watchers). */
  put(collection: string, object: StoredObject): void {
    this.#write(
      collection,
      object,
      this.objects.has(`${collection}/${object.metadata.name}`) ? "MODIFIED" : "ADDED",
    );
  }

  /** Changes a stored Pod's status as the kubelet would (e.g. to OOMKilled). */
  setPodStatus(collection: string, name: string, status: unknown): void {
    const pod = this.objects.get(`${collection}/${name}`);
    if (!pod) throw new Error(`no pod ${name}`);
    this.#write(collection, { ...pod, status }, "MODIFIED");
  }

  #write(collection: string, object: StoredObject, type: WatchEventRecord["type"]): StoredObject {
    this.#version += 1;
    const stored: StoredObject = {
      ...object,
      metadata: { ...object.metadata, resourceVersion: String(this.#version) },
    };
    if (type === "DELETED") this.objects.delete(`${collection}/${object.metadata.name}`);
    else this.objects.set(`${collection}/${object.metadata.name}`, stored);
    const event: WatchEventRecord = { version: this.#version, collection, type, object: stored };
    this.#events.push(event);
    for (const watcher of this.#watchers) this.#deliver(watcher, event);
    return stored;
  }

  #deliver(
    watcher: {
      collection: string;
      field: string | null;
      label: string | null;
      from: number;
      response: ServerResponse;
    },
    event: WatchEventRecord,
  ): void {
    if (event.collection !== watcher.collection || event.version <= watcher.from) return;
    if (!matchesFields(event.object, watcher.field) || !matchesLabels(event.object, watcher.label))
      return;
    watcher.response.write(`${JSON.stringify({ type: event.type, object: event.object })}\n`);
  }

  async #handle(request: IncomingMessage, response: ServerResponse): Promise<void> {
    const url = new URL(request.url ?? "/", "http://fake");
    const chunks: Buffer[] = [];
    for await (const chunk of request) chunks.push(chunk as Buffer);
    const raw = Buffer.concat(chunks).toString("utf8");
    const recorded: RecordedRequest = {
      method: request.method ?? "GET",
      path: url.pathname,
      query: url.searchParams,
      headers: request.headers,
      body: raw ? (JSON.parse(raw) as unknown) : undefined,
    };
    this.requests.push(recorded);
    const send = (status: number, body: unknown) => {
      response.writeHead(status, { "content-type": "application/json" });
      response.end(JSON.stringify(body));
    };
    const intercepted = this.intercept(recorded);
    if (intercepted) return send(intercepted.status, intercepted.body);
    const route = parsePath(url.pathname);
    if (!route)
      return send(404, fixture("status-not-found.json", { kind: "path", name: url.pathname }));
    const { collection, plural, name } = route;
    const key = `${collection}/${name}`;
    const method = recorded.method;

    if (method === "GET" && !name && url.searchParams.get("watch") === "true") {
      if (this.expireWatches > 0) {
        this.expireWatches -= 1;
        response.writeHead(200, { "content-type": "application/json" });
        response.end(
          `${JSON.stringify(fixture("watch-error-410.json", { version: url.searchParams.get("resourceVersion") ?? "0", current: this.#version }))}\n`,
        );
        return;
      }
      response.writeHead(200, {
        "content-type": "application/json",
        "transfer-encoding": "chunked",
      });
      response.flushHeaders();
      const watcher = {
        collection,
        field: url.searchParams.get("fieldSelector"),
        label: url.searchParams.get("labelSelector"),
        from: Number(url.searchParams.get("resourceVersion") || this.#version),
        response,
      };
      this.#watchers.add(watcher);
      response.on("close", () => this.#watchers.delete(watcher));
      for (const event of this.#events) this.#deliver(watcher, event);
      return;
    }
    if (method === "GET" && !name) {
      const items = [...this.objects.entries()]
        .filter(([k]) => k.startsWith(`${collection}/`))
        .map(([, o]) => o)
        .filter((o) => matchesLabels(o, url.searchParams.get("labelSelector")))
        .filter((o) => matchesFields(o, url.searchParams.get("fieldSelector")));
      return send(200, {
        kind: "List",
        apiVersion: "v1",
        metadata: { resourceVersion: String(this.#version) },
        items,
      });
    }
    if (method === "GET") {
      const found = this.objects.get(key);
      return found
        ? send(200, found)
        : send(404, fixture("status-not-found.json", { kind: plural, name: name! }));
    }
    if (method === "POST") {
      const body = recorded.body as StoredObject;
      const objectKey = `${collection}/${body.metadata.name}`;
      if (this.objects.has(objectKey))
        return send(
          409,
          fixture("status-already-exists.json", { kind: plural, name: body.metadata.name }),
        );
      const object: StoredObject = {
        ...body,
        metadata: {
          ...body.metadata,
          uid: `uid-${++this.#uid}`,
          creationTimestamp: new Date().toISOString(),
        },
      };
      if (plural === "secrets" && object.stringData) {
        const data: Record<string, string> = {};
        for (const [k, v] of Object.entries(object.stringData as Record<string, string>))
          data[k] = Buffer.from(v, "utf8").toString("base64");
        delete object.stringData;
        object.data = data;
      }
      if (plural === "pods") object.status = { phase: "Pending" };
      const stored = this.#write(collection, object, "ADDED");
      send(201, stored);
      if (plural === "pods") this.#runPod(collection, body.metadata.name);
      return;
    }
    if (method === "PUT") {
      const body = recorded.body as StoredObject;
      const current = this.objects.get(key);
      if (!current)
        return send(404, fixture("status-not-found.json", { kind: plural, name: name! }));
      if (
        body.metadata.resourceVersion &&
        body.metadata.resourceVersion !== current.metadata.resourceVersion
      )
        return send(409, fixture("status-conflict.json", { kind: plural, name: name! }));
      return send(200, this.#write(collection, body, "MODIFIED"));
    }
    if (method === "DELETE") {
      const current = this.objects.get(key);
      if (!current)
        return send(404, fixture("status-not-found.json", { kind: plural, name: name! }));
      // Pods end after their grace period; a PVC waits for the Pods that use it (its
      // `kubernetes.io/pvc-protection` finalizer): both are marked first, then gone.
      if (plural === "pods" || plural === "persistentvolumeclaims") {
        if (current.metadata.deletionTimestamp) return send(200, current);
        const marked = this.#write(
          collection,
          {
            ...current,
            metadata: { ...current.metadata, deletionTimestamp: new Date().toISOString() },
          },
          "MODIFIED",
        );
        this.#whenWatched(collection, name!, 300, () => {
          for (const call of this.execCalls) if (call.pod === name) call.socket.terminate();
          const latest = this.objects.get(key);
          if (latest) this.#write(collection, latest, "DELETED");
        });
        return send(200, marked);
      }
      this.#write(collection, current, "DELETED");
      return send(200, {
        kind: "Status",
        apiVersion: "v1",
        metadata: {},
        status: "Success",
        details: { name, kind: plural },
      });
    }
    send(405, { kind: "Status", apiVersion: "v1", metadata: {}, status: "Failure", code: 405 });
  }

  /**
   * Runs a created Pod a moment after a client watches it (a real kubelet takes seconds; waiting
   * for the watch makes every test go through the backend's watch, not a lucky list).
   */
  #runPod(collection: string, name: string): void {
    this.#whenWatched(collection, name, 2_000, () => {
      const pod = this.objects.get(`${collection}/${name}`);
      if (!pod || pod.metadata.deletionTimestamp) return;
      this.#write(collection, { ...pod, status: this.podStatusOnStart(name) }, "MODIFIED");
    });
  }

  /**
   * Does what a kubelet or controller would do to an object (run a Pod, remove a deleted one) a
   * moment after a client watches it, or after `patienceMs` without a watcher. A real cluster takes
   * seconds; waiting for the watch makes every test go through the backend's watch rather than a
   * list that happened to come late.
   */
  #whenWatched(collection: string, name: string, patienceMs: number, act: () => void): void {
    const watched = () =>
      [...this.#watchers].some(
        (w) => w.collection === collection && (!w.field || w.field === `metadata.name=${name}`),
      );
    const tick = (waited: number) => {
      if (!watched() && waited < patienceMs) {
        setTimeout(() => tick(waited + 5), 5);
        return;
      }
      setTimeout(act, this.#options.kubeletDelayMs ?? 5);
    };
    tick(0);
  }

  #exec(socket: WebSocket, request: IncomingMessage): void {
    const url = new URL(request.url ?? "/", "http://fake");
    this.requests.push({
      method: "GET",
      path: url.pathname,
      query: url.searchParams,
      headers: request.headers,
      body: undefined,
    });
    const route = parsePath(url.pathname);
    const call: ExecCall = {
      pod: route?.name ?? "",
      container: url.searchParams.get("container") ?? "",
      command: url.searchParams.getAll("command"),
      tty: url.searchParams.get("tty") === "true",
      protocol: socket.protocol,
      received: [],
      socket,
    };
    this.execCalls.push(call);
    socket.on("message", (data: Buffer) => call.received.push(Buffer.from(data)));
    const replay = this.onExec(call);
    if (replay.protocol && replay.protocol !== socket.protocol) {
      socket.close(1002, `this replay needs ${replay.protocol}`);
      return;
    }
    const play = () => {
      for (const frame of replay.frames) socket.send(encodeFrame(frame));
      if (replay.holdOpen) return;
      if (replay.closeWithoutStatus) socket.terminate();
      else socket.close(1000);
    };
    if (replay.afterInput) socket.once("message", play);
    else play();
  }
}

/** A kubeconfig (YAML) for a fake server, with a bearer token. */
export function kubeconfigFor(server: string, token: string, caFile?: string): string {
  return [
    "apiVersion: v1",
    "kind: Config",
    "clusters:",
    "- name: fake",
    "  cluster:",
    `    server: ${server}`,
    // The client refuses plain http unless TLS checks are off (there is no TLS to check).
    ...(caFile ? [`    certificate-authority: ${caFile}`] : ["    insecure-skip-tls-verify: true"]),
    "users:",
    "- name: tester",
    "  user:",
    `    token: ${token}`,
    "contexts:",
    "- name: fake",
    "  context:",
    "    cluster: fake",
    "    user: tester",
    "    namespace: shells-sandboxes",
    "current-context: fake",
    "",
  ].join("\n");
}
