/**
 * SECURITY BOUNDARY: where the control plane's own webhook requests may go.
 *
 * A webhook URL is chosen by an org admin, and the control plane sends to it from inside the
 * operator's network — so an unchecked URL would let any org admin reach the host's loopback
 * services, the private network or the cloud metadata service (server-side request forgery).
 * Every delivery therefore:
 *   1. resolves the URL's host (an IP literal resolves to itself) and checks EVERY address with
 *      the egress policy's address rules (`egress/policy.ts`): each must be public — not loopback,
 *      private, shared, link-local (169.254.169.254), multicast, reserved, documentation, or a v6
 *      form that embeds one — unless the org's `webhooks.allowCidrs` names it explicitly;
 *   2. connects to exactly the address it checked (the socket's lookup answers that address), so
 *      the name cannot be re-resolved somewhere else in between (DNS rebinding);
 *   3. follows no redirect (a 3xx is a failed delivery), so an allowed endpoint cannot bounce the
 *      request to a forbidden one;
 *   4. bounds the whole exchange by a timeout and reads at most a few KiB of the answer.
 * TLS is verified against the URL's host name, never the address.
 */
import type { LookupFunction } from "node:net";
import http from "node:http";
import https from "node:https";
import type { EgressResolver } from "../egress/egress-proxy.js";
import { EgressPolicy, ipFamily, type EgressDenial } from "../egress/policy.js";

/** Why a delivery did not get an HTTP answer. */
export type DialFailure = EgressDenial | "unresolvable" | "timeout" | "connection_failed";

/** A delivery that got no HTTP answer: refused by the rules above, or failed on the network. */
export class WebhookDialError extends Error {
  override readonly name = "WebhookDialError";

  constructor(
    readonly reason: DialFailure,
    message: string,
  ) {
    super(message);
  }
}

/** One signed POST to an endpoint. */
export interface WebhookRequest {
  url: string;
  body: string;
  headers: Record<string, string>;
}

/** What the dialer needs besides the request. */
export interface DialOptions {
  resolve: EgressResolver;
  /** Non-public ranges the org allows (`webhooks.allowCidrs`). */
  allowCidrs: readonly string[];
  timeoutMs: number;
  /** Ends the exchange early (the server is shutting down). */
  signal?: AbortSignal | undefined;
}

/** Bytes of an endpoint's answer read at most (its body is not used; only its status is). */
const MAX_ANSWER_BYTES = 4096;

/** The address rules of the egress policy, with nothing but the org's allowed ranges. */
function destinationRules(allowCidrs: readonly string[]): EgressPolicy {
  return new EgressPolicy({
    org: {
      allowHosts: [],
      denyHosts: [],
      allowCidrs: [...allowCidrs],
      denyCidrs: [],
      allowPorts: [],
      denyPorts: [],
    },
  });
}

/** A URL's host without the brackets of an IPv6 literal. */
export function urlHost(url: URL): string {
  return url.hostname.startsWith("[") ? url.hostname.slice(1, -1) : url.hostname;
}

/**
 * Whether a URL whose host is an IP literal may be used under `allowCidrs`: null when it may (or
 * when its host is a name, checked at each delivery), else why not. Lets an endpoint that could
 * never be delivered to be refused when it is created.
 */
export function literalDestinationDenial(
  target: string,
  allowCidrs: readonly string[],
): EgressDenial | null {
  const url = new URL(target);
  const host = urlHost(url);
  if (ipFamily(host) === null) return null;
  return destinationRules(allowCidrs).decide(host, null, [host]);
}

function raceAbort<T>(work: Promise<T>, signal: AbortSignal): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(signal.reason as Error);
    if (signal.aborted) return onAbort();
    signal.addEventListener("abort", onAbort, { once: true });
    work.then(resolve, reject).finally(() => signal.removeEventListener("abort", onAbort));
  });
}

/**
 * Sends one webhook request under the rules above and answers the endpoint's HTTP status (any
 * status: the caller decides what counts as delivered). Throws a {@link WebhookDialError} when the
 * destination is refused, cannot be resolved, or does not answer in time.
 */
export async function dialWebhook(
  request: WebhookRequest,
  options: DialOptions,
): Promise<{ status: number }> {
  const url = new URL(request.url);
  const host = urlHost(url);
  const port = url.port ? Number(url.port) : url.protocol === "https:" ? 443 : 80;
  const deadline = AbortSignal.timeout(options.timeoutMs);
  const signal = options.signal ? AbortSignal.any([options.signal, deadline]) : deadline;
  const failed = (error: unknown): WebhookDialError => {
    if (error instanceof WebhookDialError) return error;
    if (deadline.aborted)
      return new WebhookDialError("timeout", `no answer within ${options.timeoutMs} ms`);
    const code = (error as { code?: unknown }).code;
    return new WebhookDialError(
      "connection_failed",
      `${typeof code === "string" ? `${code}: ` : ""}${error instanceof Error ? error.message : String(error)}`,
    );
  };

  let addresses: string[];
  try {
    addresses = ipFamily(host) ? [host] : await raceAbort(options.resolve(host), signal);
  } catch (error) {
    if (deadline.aborted || options.signal?.aborted) throw failed(error);
    throw new WebhookDialError("unresolvable", `${host} does not resolve`);
  }
  const denial = destinationRules(options.allowCidrs).decide(host, port, addresses);
  if (denial) {
    throw new WebhookDialError(
      denial,
      denial === "address_not_public"
        ? `${host} resolves to ${addresses.join(", ")}, which is not public; an admin can allow the range in the org policy (webhooks.allowCidrs)`
        : `${host} is refused (${denial})`,
    );
  }
  const address = addresses[0] as string;
  const family = ipFamily(address) === "ipv6" ? 6 : 4;
  // The socket connects to the checked address, whatever the name would resolve to now.
  const lookup: LookupFunction = (_hostname, lookupOptions, callback) => {
    if ((lookupOptions as { all?: boolean }).all) callback(null, [{ address, family }]);
    else callback(null, address, family);
  };
  const client = url.protocol === "https:" ? https : http;
  try {
    return await new Promise<{ status: number }>((resolve, reject) => {
      const outgoing = client.request(url, {
        method: "POST",
        headers: { ...request.headers, "content-length": Buffer.byteLength(request.body) },
        lookup,
        agent: false,
        signal,
      });
      outgoing.on("error", reject);
      outgoing.on("response", (answer) => {
        let read = 0;
        answer.on("data", (chunk: Buffer) => {
          read += chunk.length;
          if (read > MAX_ANSWER_BYTES) answer.destroy();
        });
        answer.on("error", () => undefined);
        answer.on("close", () => resolve({ status: answer.statusCode ?? 0 }));
      });
      outgoing.end(request.body);
    });
  } catch (error) {
    throw failed(error);
  }
}
