import type { IncomingMessage, OutgoingHttpHeaders, ServerResponse } from "node:http";
import { request as httpRequest } from "node:http";
import { request as httpsRequest } from "node:https";
import { isIP, type Socket } from "node:net";
import { pipeline, type Transform } from "node:stream";
import { checkServerIdentity, rootCertificates } from "node:tls";
import { createBrotliDecompress, createGunzip, createInflate } from "node:zlib";
import type { LoggedDecision } from "./decision-log.js";
import { vetDestination, type EgressResolver } from "./egress-proxy.js";
import { forwardedHeaders } from "./http-headers.js";
import {
  injectedValue,
  pathMatches,
  requestPathProblem,
  secretForms,
  type BindingRules,
} from "./binding-policy.js";
import type { EgressDenial, EgressPolicy } from "./policy.js";
import { SecretMask } from "./secret-mask.js";

/** The path prefix of binding URLs on the shell's forwarder (`http://127.0.0.1:3128/bindings/<name>/`). */
export const BINDINGS_PATH = "/bindings/";

/** A binding granted to a shell at launch. */
export interface BindingGrant {
  id: string;
  name: string;
}

/** What a call through a binding needs: its rules, and its secret (opened for this call only). */
export interface BindingTarget {
  rules: BindingRules;
  secret: string;
}

/** Why a binding call was refused; stable strings recorded on `binding.denied` events. */
export type BindingDenial =
  | "not_granted"
  | "binding_deleted"
  | "upstream_not_https"
  | "method_not_allowed"
  | "path_invalid"
  | "path_not_allowed"
  | "response_encoding"
  | EgressDenial;

/** What the egress proxy lends a binding call: the shell's byte budget and request rate. */
export interface ProxyLink {
  /** Counts a dialled socket's bytes against the shell's budget. */
  meter(socket: Socket, onDone: (bytes: number) => void): void;
  /**
   * Counts the call against the shell's request rate: `egress_limit` when the shell has used up
   * its byte budget, `rate_limited` when it is over its rate, else null.
   */
  limit(): "egress_limit" | "rate_limited" | null;
}

/** What one shell's binding gateway needs. */
export interface BindingProxyOptions {
  orgId: string;
  shellId: string;
  /** The shell's grants as they stand now. */
  grants(): readonly BindingGrant[];
  /** A granted binding's rules and secret; null once it was deleted, "unusable" when its upstream is no longer allowed. */
  lookup(bindingId: string): Promise<BindingTarget | null | "unusable">;
  /** The org's egress rules (without the shell's allowlist: the grant is what allows the upstream). */
  policy(): Promise<EgressPolicy>;
  resolve: EgressResolver;
  /** Extra CA certificates (PEM) trusted for upstreams, besides Node's bundled roots. */
  extraCa?: readonly string[] | undefined;
  record(decision: LoggedDecision): void;
}

/** Time to reach the upstream (TCP and TLS). */
const DIAL_TIMEOUT_MS = 10_000;
/** Silence allowed once connected: an API may think for a while (a model's completion, a build). */
const UPSTREAM_IDLE_MS = 300_000;
const MAX_RECORDED_PATH = 256;

/** Content codings the gateway can undo to look for the secret in a body. */
const DECODERS: Record<string, () => Transform> = {
  gzip: createGunzip,
  "x-gzip": createGunzip,
  deflate: createInflate,
  br: createBrotliDecompress,
};

/**
 * Calls through a shell's service bindings. The shell sends a plain HTTP request to its binding
 * URL on the forwarder (`/bindings/<name>/<path>`); the gateway checks the grant, the method and
 * the path against the binding's rules, vets the upstream's address with the org's egress rules,
 * puts the secret into the binding's one header and sends the request over TLS to the upstream —
 * to its host only. The answer comes back as it is, never followed (a redirect reaches the shell
 * as a redirect, so the secret is never sent to where it points), with every header that holds
 * the secret dropped and the secret masked in the body (see `secretForms` for the forms).
 */
export class BindingProxy {
  readonly #ca: string[] | undefined;

  constructor(private readonly options: BindingProxyOptions) {
    this.#ca =
      options.extraCa && options.extraCa.length > 0
        ? [...rootCertificates, ...options.extraCa]
        : undefined;
  }

  /** Answers one request whose target (path and query) starts with {@link BINDINGS_PATH}. */
  async serve(
    req: IncomingMessage,
    res: ServerResponse,
    target: string,
    link: ProxyLink,
  ): Promise<void> {
    const method = (req.method ?? "GET").toUpperCase();
    const rest = target.slice(BINDINGS_PATH.length);
    const slash = rest.search(/[/?]/);
    const name = slash < 0 ? rest : rest.slice(0, slash);
    const afterName = slash < 0 ? "" : rest.slice(slash);
    const query = afterName.includes("?") ? afterName.slice(afterName.indexOf("?")) : "";
    const path = afterName.slice(0, afterName.length - query.length) || "/";
    const call = { binding: name.slice(0, 64), method, path: path.slice(0, MAX_RECORDED_PATH) };
    const deny = (status: number, reason: BindingDenial) => {
      this.#record("binding.denied", "denied", { ...call, reason }, 0);
      const body = `binding denied: ${reason}\n`;
      res.writeHead(status, {
        "content-type": "text/plain",
        "content-length": Buffer.byteLength(body),
        "x-shells-binding": "denied",
        connection: "close",
      });
      res.end(body);
    };

    const limited = link.limit();
    if (limited) return deny(limited === "rate_limited" ? 429 : 403, limited);
    const grant = this.options.grants().find((g) => g.name === name);
    if (!grant) return deny(403, "not_granted");
    const found = await this.options.lookup(grant.id);
    if (found === null) return deny(403, "binding_deleted");
    if (found === "unusable") return deny(403, "upstream_not_https");
    const { rules, secret } = found;
    if (!(rules.methods as readonly string[]).includes(method))
      return deny(403, "method_not_allowed");
    if (requestPathProblem(path) !== null) return deny(400, "path_invalid");
    if (!rules.paths.some((glob) => pathMatches(glob, path))) return deny(403, "path_not_allowed");

    const upstream = rules.upstream;
    const host = upstream.hostname.replace(/^\[(.*)\]$/, "$1");
    const tls = upstream.protocol === "https:";
    const port = upstream.port ? Number(upstream.port) : tls ? 443 : 80;
    const vetted = await vetDestination(
      await this.options.policy(),
      this.options.resolve,
      host,
      port,
    );
    if ("denial" in vetted) return deny(403, vetted.denial);

    const injected = injectedValue(rules.inject, secret);
    const forms = secretForms(secret, injected);
    const headers: OutgoingHttpHeaders = forwardedHeaders(req.headers);
    for (const name of ["host", "expect", "accept-encoding", rules.inject.header])
      delete headers[name];
    headers.host = upstream.host;
    // Ask for a body the gateway can read, so it can mask the secret should the upstream echo it.
    headers["accept-encoding"] = "identity";
    headers[rules.inject.header] = injected;
    const basePath = upstream.pathname.replace(/\/+$/, "");
    const send = tls ? httpsRequest : httpRequest;
    let status = 502;
    /** Set when the answer itself is refused: that call is recorded as denied, not invoked. */
    let refused = false;
    const outgoing = send({
      host: vetted.address,
      port,
      method,
      path: `${basePath}${path}${query}`,
      headers,
      setHost: false,
      agent: false,
      timeout: DIAL_TIMEOUT_MS,
      ...(tls
        ? {
            ...(isIP(host) ? {} : { servername: host }),
            ...(this.#ca ? { ca: this.#ca } : {}),
            rejectUnauthorized: true,
            checkServerIdentity: (_name: string, cert: Parameters<typeof checkServerIdentity>[1]) =>
              checkServerIdentity(host, cert),
          }
        : {}),
    });
    outgoing.once("socket", (socket: Socket) => {
      socket.once(tls ? "secureConnect" : "connect", () => socket.setTimeout(UPSTREAM_IDLE_MS));
      link.meter(socket, (bytes) => {
        if (!refused)
          this.#record(
            "binding.invoked",
            status < 500 ? "success" : "failure",
            { ...call, status },
            bytes,
          );
      });
    });
    outgoing.once("timeout", () => outgoing.destroy(new Error("upstream timed out")));
    outgoing.once("response", (answer) => {
      const coding = String(answer.headers["content-encoding"] ?? "identity")
        .trim()
        .toLowerCase();
      const decoder = coding === "identity" ? null : DECODERS[coding];
      if (decoder === undefined) {
        refused = true;
        answer.destroy();
        return deny(502, "response_encoding");
      }
      status = answer.statusCode ?? 502;
      const kept = Object.entries(forwardedHeaders(answer.headers)).filter(
        ([name, value]) =>
          name !== "content-length" &&
          !(decoder && name === "content-encoding") &&
          !forms.some((form) => String(value).includes(form)),
      );
      res.writeHead(status, Object.fromEntries(kept));
      const mask = new SecretMask(forms);
      if (decoder) pipeline(answer, decoder(), mask, res, () => undefined);
      else pipeline(answer, mask, res, () => undefined);
    });
    outgoing.once("error", () => {
      if (!res.headersSent) {
        res.writeHead(502, { "content-type": "text/plain", connection: "close" });
        res.end("binding: upstream unreachable\n");
      } else res.destroy();
    });
    pipeline(req, outgoing, () => undefined);
  }

  #record(
    action: "binding.invoked" | "binding.denied",
    outcome: LoggedDecision["outcome"],
    details: LoggedDecision["details"],
    bytes: number,
  ): void {
    this.options.record({
      orgId: this.options.orgId,
      shellId: this.options.shellId,
      action,
      outcome,
      details,
      bytes,
    });
  }
}
