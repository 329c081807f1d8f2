import type { FastifyReply } from "fastify";
import { ROUTES } from "@shells/contract";
import { AppError } from "../errors.js";
import type { StandingWatch } from "../iam/standing.js";
import { isPendingApproval } from "../orchestrator/approval-gate.js";
import type { InterpreterService } from "../orchestrator/interpreter-service.js";
import type { RuntimeRegistry } from "../orchestrator/runtimes.js";
import type { ShellService } from "../orchestrator/shell-service.js";
import type { ActivityService } from "../services/activity-service.js";
import type { PolicyService } from "../services/policy-service.js";
import { errorBody } from "./error-handler.js";
import { openEventStream, wantsEventStream } from "./event-stream.js";
import { STREAMED, type Handlers } from "./register-routes.js";

/** Answers 202 Accepted when the result is a pending approval rather than the action's result. */
export function accepted<T>(reply: FastifyReply, result: T): T {
  if (isPendingApproval(result)) reply.code(202);
  return result;
}

/** What the shell routes are built from. */
export interface ShellRouteServices {
  shells: ShellService;
  runtimes: RuntimeRegistry;
  interpreters: InterpreterService;
  activity: ActivityService;
  policies: PolicyService;
  /** Ends a stream when its caller loses standing (a key revoked, a holder offboarded). */
  watch: StandingWatch;
}

/** Shell lifecycle, exec (JSON or a server-sent event stream), interpreters, activity and policy. */
export function shellHandlers(
  s: ShellRouteServices,
): Pick<
  Handlers,
  | "listRuntimes"
  | "listShells"
  | "createShell"
  | "getShell"
  | "deleteShell"
  | "actOnShell"
  | "changeShellEgress"
  | "attachShellBinding"
  | "detachShellBinding"
  | "forkShell"
  | "listSnapshots"
  | "execInShell"
  | "runInterpreter"
  | "listActivity"
  | "getPolicy"
  | "updatePolicy"
> {
  const { shells } = s;
  return {
    listRuntimes: async () => ({ items: await s.runtimes.availability() }),
    listShells: async ({ caller, query }) => shells.list(caller, query),
    createShell: async ({ caller, body, reply }) =>
      accepted(reply, await shells.requestCreate(caller, body)),
    getShell: async ({ caller, params }) => shells.get(caller, params.id),
    deleteShell: async ({ caller, params, query, reply }) =>
      accepted(reply, await shells.delete(caller, params.id, query.confirm)),
    actOnShell: async ({ caller, params, body, reply }) =>
      accepted(reply, await shells.act(caller, params.id, params.capability, body)),
    forkShell: async ({ caller, params, body }) => shells.fork(caller, params.id, body),
    changeShellEgress: async ({ caller, params, body, reply }) =>
      accepted(reply, await shells.changeEgress(caller, params.id, body)),
    attachShellBinding: async ({ caller, params, body, reply }) =>
      accepted(reply, await shells.attachBinding(caller, params.id, body)),
    detachShellBinding: async ({ caller, params }) =>
      shells.detachBinding(caller, params.id, params.name),
    listSnapshots: async ({ caller, params }) => ({
      items: await shells.snapshots(caller, params.id),
    }),
    execInShell: async ({ caller, params, body, request, reply }) => {
      if (!wantsEventStream(request)) return shells.exec(caller, params.id, body);
      // Refuse a missing or stopped shell with a normal JSON error before the stream opens.
      await shells.requireRunning(caller, params.id);
      const stream = openEventStream(request, reply);
      const decoders = { stdout: new TextDecoder(), stderr: new TextDecoder() };
      // A stream never outlives its caller's standing: the command is ended like a client leaving.
      const lost = new AbortController();
      const standing: { lost: string | null } = { lost: null };
      const stopWatching = s.watch(caller, ROUTES.execInShell.scope, (reason) => {
        standing.lost = reason;
        lost.abort();
      });
      try {
        const result = await shells.exec(caller, params.id, body, {
          signal: AbortSignal.any([stream.signal, lost.signal]),
          onOutput: (type, chunk) =>
            stream.send(type, {
              type,
              data: decoders[type].decode(chunk, { stream: true }),
              time: Date.now(),
            }),
        });
        if (standing.lost !== null) throw new Error("standing lost");
        await stream.send("exit", {
          type: "exit",
          result: { ...result, stdout: "", stderr: "" },
          time: Date.now(),
        });
      } catch (error) {
        const failure =
          standing.lost === null
            ? error
            : new AppError("unauthenticated", `The exec ended: ${standing.lost}.`);
        const code = failure instanceof AppError ? failure.code : "internal";
        await stream.send(
          "error",
          errorBody(code, failure instanceof Error ? failure.message : "exec failed", request.id),
        );
      } finally {
        stopWatching();
        stream.end();
      }
      return STREAMED;
    },
    runInterpreter: async ({ caller, params, body }) =>
      s.interpreters.turn(caller, params.id, body),
    listActivity: async ({ caller, query }) => s.activity.list(caller.orgId, query),
    getPolicy: async ({ caller }) => s.policies.get(caller.orgId),
    updatePolicy: async ({ caller, body }) => s.policies.update(caller, body),
  };
}
