import { trace } from "@opentelemetry/api";
import type { SandboxBackend } from "@shells/sandbox";
import { inSpan } from "./tracing.js";

/** The lifecycle calls that get a span of their own: each changes or runs something in a sandbox. */
const TRACED_CALLS = new Set<string>([
  "create",
  "exec",
  "stop",
  "start",
  "restart",
  "pause",
  "resume",
  "snapshot",
  "restore",
  "captureFork",
  "reinstallOs",
  "wipeState",
  "destroy",
]);

/**
 * The backend seen through spans: each lifecycle call made while a span is active (a request's)
 * runs in a child span `backend.<call>` naming the backend and the shell. Background calls
 * (metering's usage reads, the reconciler's sweeps) are left alone so they make no root spans.
 * Only the shell id is recorded, never the spec or command: they carry environment secrets.
 *
 * Methods run bound to the backend itself, so backends with private fields keep working.
 */
export function traceBackend(backend: SandboxBackend): SandboxBackend {
  return new Proxy(backend, {
    get(target, property) {
      const value: unknown = Reflect.get(target, property, target);
      if (typeof value !== "function") return value;
      const call = value as (...args: unknown[]) => unknown;
      if (typeof property !== "string" || !TRACED_CALLS.has(property)) return call.bind(target);
      return (...args: unknown[]) => {
        if (!trace.getActiveSpan()) return call.apply(target, args);
        const first = args[0];
        const shellId =
          typeof first === "string" ? first : (first as { shellId?: string } | undefined)?.shellId;
        return inSpan(
          `backend.${property}`,
          { "shells.backend": target.name, ...(shellId ? { "shells.shell_id": shellId } : {}) },
          () => Promise.resolve(call.apply(target, args)),
        );
      };
    },
  });
}
