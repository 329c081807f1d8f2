import { SpanStatusCode, trace, type Attributes } from "@opentelemetry/api";
import { OTLPTraceExporter } from "@opentelemetry/exporter-trace-otlp-http";
import {
  BatchSpanProcessor,
  NodeTracerProvider,
  ParentBasedSampler,
  TraceIdRatioBasedSampler,
} from "@opentelemetry/sdk-trace-node";
import { resourceFromAttributes } from "@opentelemetry/resources";
import { ATTR_SERVICE_NAME } from "@opentelemetry/semantic-conventions";
import type { ServerConfig } from "../config.js";

/** The instrumentation scope every span of the control plane is made under. */
const TRACER_NAME = "shells";

/** Process-wide tracing, started by `startTracing`. */
export interface Tracing {
  /** Sends the spans still buffered and unregisters the provider. */
  shutdown(): Promise<void>;
}

/**
 * Registers the process's tracer provider when `SHELLS_OTLP_ENDPOINT` is set, exporting spans in
 * batches over OTLP/HTTP (JSON) to that URL; null (and nothing registered) when it is not. Root
 * spans are sampled at `traceSampleRatio`; a request carrying a W3C `traceparent` follows its
 * caller's decision and joins its trace.
 *
 * The provider is the process's global one (the OpenTelemetry API finds it there), so one process
 * traces at most one server: `startServer` calls this, never `buildApp`.
 */
export function startTracing(
  config: Pick<ServerConfig, "otlpEndpoint" | "otlpServiceName" | "traceSampleRatio">,
): Tracing | null {
  if (!config.otlpEndpoint) return null;
  const provider = new NodeTracerProvider({
    resource: resourceFromAttributes({ [ATTR_SERVICE_NAME]: config.otlpServiceName }),
    sampler: new ParentBasedSampler({
      root: new TraceIdRatioBasedSampler(config.traceSampleRatio),
    }),
    spanProcessors: [new BatchSpanProcessor(new OTLPTraceExporter({ url: config.otlpEndpoint }))],
  });
  // Also the AsyncLocalStorage context manager (a span's children find it across awaits) and the
  // W3C trace-context propagator (`traceparent`, `tracestate`).
  provider.register();
  return {
    shutdown: async () => {
      await provider.shutdown();
      trace.disable();
    },
  };
}

/**
 * Runs `work` inside a child span of the active one, ending it when `work` settles; a failure
 * marks the span as an error by its name only (error messages may quote commands or paths).
 * Without a registered provider the span is the API's no-op and this costs a function call.
 * Attributes must never carry secrets, tokens or request bodies.
 */
export function inSpan<T>(
  name: string,
  attributes: Attributes,
  work: () => Promise<T>,
): Promise<T> {
  return trace.getTracer(TRACER_NAME).startActiveSpan(name, { attributes }, async (span) => {
    try {
      return await work();
    } catch (error) {
      span.setStatus({
        code: SpanStatusCode.ERROR,
        message: error instanceof Error ? errorLabel(error) : "error",
      });
      throw error;
    } finally {
      span.end();
    }
  });
}

/** An error's name and stable code, if it has one: never its message. */
function errorLabel(error: Error): string {
  const code = (error as { code?: unknown }).code;
  return typeof code === "string" ? `${error.name}: ${code}` : error.name;
}

/** The tracer request spans are made with. */
export function shellsTracer() {
  return trace.getTracer(TRACER_NAME);
}
