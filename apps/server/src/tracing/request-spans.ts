import {
  ROOT_CONTEXT,
  SpanKind,
  SpanStatusCode,
  context,
  propagation,
  trace,
  type Span,
} from "@opentelemetry/api";
import {
  ATTR_HTTP_REQUEST_METHOD,
  ATTR_HTTP_RESPONSE_STATUS_CODE,
  ATTR_HTTP_ROUTE,
} from "@opentelemetry/semantic-conventions";
import type { FastifyInstance, FastifyRequest } from "fastify";
import { UNMATCHED_ROUTE } from "../metrics/server-metrics.js";
import { shellsTracer } from "./tracing.js";

/** The attribute naming the org of an authenticated request. */
export const ATTR_ORG_ID = "shells.org_id";

/**
 * Gives every request a server span named by its method and route pattern (`POST
 * /api/v1/shells/:id/exec`), the child of the caller's span when the request carries a W3C
 * `traceparent`. The orchestrator's spans (admission, backend calls, store writes) nest under it.
 *
 * A span records the method, the route pattern, the status and, once authenticated, the org id
 * (see `noteOrg`). Never the path as sent, its query (terminal tokens travel there), headers or
 * bodies: what a trace holds must be safe to ship to a collector outside the trust boundary.
 *
 * Registered only when tracing is on. The span is active from `onRequest` on; Fastify carries
 * that async context through body parsing to the handler.
 */
export function registerRequestSpans(app: FastifyInstance): void {
  const spans = new WeakMap<FastifyRequest, Span>();
  app.addHook("onRequest", (request, _reply, done) => {
    const route = request.routeOptions.url ?? UNMATCHED_ROUTE;
    const parent = propagation.extract(ROOT_CONTEXT, request.headers);
    const span = shellsTracer().startSpan(
      `${request.method} ${route}`,
      {
        kind: SpanKind.SERVER,
        attributes: { [ATTR_HTTP_REQUEST_METHOD]: request.method, [ATTR_HTTP_ROUTE]: route },
      },
      parent,
    );
    spans.set(request, span);
    context.with(trace.setSpan(parent, span), done);
  });
  const end = (request: FastifyRequest, status: number | null) => {
    const span = spans.get(request);
    if (!span) return;
    spans.delete(request);
    if (status === null) span.setStatus({ code: SpanStatusCode.ERROR, message: "aborted" });
    else {
      span.setAttribute(ATTR_HTTP_RESPONSE_STATUS_CODE, status);
      if (status >= 500) span.setStatus({ code: SpanStatusCode.ERROR });
    }
    span.end();
  };
  app.addHook("onResponse", (request, reply, done) => {
    end(request, reply.statusCode);
    done();
  });
  app.addHook("onRequestAbort", (request, done) => {
    end(request, null);
    done();
  });
}

/** Records the authenticated org on the active request span (a no-op without tracing). */
export function noteOrg(orgId: string): void {
  trace.getActiveSpan()?.setAttribute(ATTR_ORG_ID, orgId);
}
