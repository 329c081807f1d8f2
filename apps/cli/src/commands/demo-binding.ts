import { ShellsError, type ShellsClient } from "@l1fe/shells";
import { bindingEnvName } from "@shells/contract";
import { randomBytes } from "node:crypto";
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import { BlockList, type AddressInfo } from "node:net";
import { gzipSync } from "node:zlib";

/**
 * The service binding `shells demo` lends its binding workloads: a throwaway upstream the demo
 * starts on this host's loopback, and a binding to it with a random secret that only the demo and
 * the server know. The upstream is as hostile to the secret as an API can be: it echoes every
 * request (headers included) in its body, reflects the injected header into response headers,
 * answers gzip, and redirects with the secret in the `Location`. The demo knows the secret, so it
 * can search everything a workload printed for it, and it counts the calls that reached the
 * upstream with the secret, so "not found" means the secret was in use and still not seen.
 */

/** A binding lent to the demo's workloads. */
export interface DemoBinding {
  /** The binding's name (random, so concurrent demos do not clash). */
  name: string;
  /** The variable that carries the binding's URL in a granted shell. */
  envVar: string;
  /** The secret, to search the workloads' output for. Never sent to a shell. */
  secret: string;
  /** What the upstream's `/answer` reports, so the clean run's result proves the call was made. */
  nonce: string;
  /** Calls that reached the upstream carrying the secret. */
  callsWithSecret(): number;
}

/** A lent binding and how to give it back (delete the binding, stop the upstream). */
export interface OpenedDemoBinding {
  binding: DemoBinding;
  close(): Promise<void>;
}

/** The binding could not be lent here, and why (the demo skips its binding workloads). */
export interface SkippedDemoBinding {
  skipped: string;
}

/**
 * Where the upstream listens: a loopback address of its own, so the org needs to allow only this
 * one (127.0.0.2/32) and not the address the control plane itself may listen on.
 */
export const DEMO_UPSTREAM_ADDRESS = "127.0.0.2";

/** The injected header, as the binding's template writes it. */
const INJECT_HEADER = "authorization";

/** Answers one request to the demo's upstream; `expected` is the header value the proxy injects. */
function answer(
  req: IncomingMessage,
  res: ServerResponse,
  body: string,
  expected: string,
  nonce: string,
) {
  const auth = String(req.headers[INJECT_HEADER] ?? "");
  const echo = JSON.stringify({ method: req.method, url: req.url, headers: req.headers, body });
  const path = (req.url ?? "/").split("?")[0] ?? "/";
  if (path === "/answer") {
    const ok = auth === expected;
    res.writeHead(ok ? 200 : 401, { "content-type": "application/json" });
    res.end(JSON.stringify(ok ? { answer: 42, nonce } : { error: "unauthorized" }));
  } else if (path === "/gzip") {
    res.writeHead(200, { "content-type": "application/json", "content-encoding": "gzip" });
    res.end(gzipSync(echo));
  } else if (path === "/redirect") {
    res.writeHead(302, {
      location: `http://127.0.0.1:1/landing?token=${encodeURIComponent(auth)}`,
      "content-type": "text/plain",
    });
    res.end(`see /landing?token=${auth}\n`);
  } else {
    // Everything else echoes the request, and reflects the header in headers of the answer.
    res.writeHead(200, {
      "content-type": "application/json",
      "x-echo-authorization": auth,
      "set-cookie": `session=${Buffer.from(auth).toString("base64")}`,
      "www-authenticate": auth,
    });
    res.end(echo);
  }
}

/** Whether the org's egress policy lets the server reach this host's loopback. */
function orgAllowsLoopback(allowCidrs: readonly string[]): boolean {
  const allowed = new BlockList();
  for (const cidr of allowCidrs) {
    const [address, prefix] = cidr.split("/");
    if (!address || address.includes(":")) continue;
    allowed.addSubnet(address, Number(prefix ?? 32), "ipv4");
  }
  return allowed.check(DEMO_UPSTREAM_ADDRESS, "ipv4");
}

/**
 * Lends the demo a binding: checks that the org lets bindings reach the upstream's loopback
 * address, starts the upstream there, and creates a binding to it with a random secret. The upstream speaks plain HTTP,
 * which a server accepts only when started with `SHELLS_BINDINGS_ALLOW_HTTP=1` (tests and
 * development; `npm run demo` sets it): the demo cannot make a running server trust a CA of its own.
 */
export async function openDemoBinding(
  client: ShellsClient,
): Promise<OpenedDemoBinding | SkippedDemoBinding> {
  let allowCidrs: readonly string[];
  try {
    allowCidrs = (await client.policy.get()).egress?.allowCidrs ?? [];
  } catch (error) {
    const reason = error instanceof ShellsError ? error.code : String(error);
    return { skipped: `the org's egress policy could not be read (${reason})` };
  }
  if (!orgAllowsLoopback(allowCidrs))
    return {
      skipped: `the org's egress policy does not allow ${DEMO_UPSTREAM_ADDRESS}/32, where the demo's upstream listens (npm run demo allows it)`,
    };
  const secret = `sk_demo_${randomBytes(24).toString("hex")}`;
  const nonce = randomBytes(8).toString("hex");
  const expected = `Bearer ${secret}`;
  let callsWithSecret = 0;
  const upstream = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (chunk: Buffer) => chunks.push(chunk));
    req.on("end", () => {
      if (req.headers[INJECT_HEADER] === expected) callsWithSecret += 1;
      answer(req, res, Buffer.concat(chunks).toString(), expected, nonce);
    });
  });
  await new Promise<void>((resolve) => upstream.listen(0, DEMO_UPSTREAM_ADDRESS, resolve));
  const stop = () => new Promise<void>((resolve) => upstream.close(() => resolve()));
  const { port } = upstream.address() as AddressInfo;
  const name = `demo_${randomBytes(4).toString("hex")}`;
  try {
    await client.bindings.create({
      name,
      upstream: `http://${DEMO_UPSTREAM_ADDRESS}:${port}`,
      inject: "Authorization: Bearer {secret}",
      paths: ["/**"],
      methods: ["GET", "POST"],
      secret,
    });
  } catch (error) {
    await stop();
    if (error instanceof ShellsError && error.code === "binding_upstream_not_https")
      return {
        skipped:
          "the server accepts only https binding upstreams; the demo's loopback upstream is http (start the server with SHELLS_BINDINGS_ALLOW_HTTP=1, as npm run demo does)",
      };
    const reason = error instanceof ShellsError ? `${error.code}: ${error.message}` : String(error);
    return { skipped: `the demo's binding could not be created (${reason})` };
  }
  return {
    binding: {
      name,
      envVar: bindingEnvName(name),
      secret,
      nonce,
      callsWithSecret: () => callsWithSecret,
    },
    close: async () => {
      await client.bindings.remove(name).catch(() => undefined);
      upstream.closeAllConnections();
      await stop();
    },
  };
}
