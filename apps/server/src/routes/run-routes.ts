import { ROUTES, type RunFrame } from "@shells/contract";
import { AppError } from "../errors.js";
import type { StandingWatch } from "../iam/standing.js";
import type { RunReviewService } from "../orchestrator/run-reviews.js";
import type { RunService } from "../orchestrator/run-service.js";
import { errorBody } from "./error-handler.js";
import { openEventStream, wantsEventStream } from "./event-stream.js";
import { STREAMED, sendBytes, type Handlers } from "./register-routes.js";
import { accepted } from "./shell-routes.js";

/** Runs: create, inspect, review, artifacts, teardown, and the frame stream (JSON backlog or SSE). */
export function runHandlers(
  runs: RunService,
  reviews: RunReviewService,
  watch: StandingWatch,
): Pick<
  Handlers,
  | "createRun"
  | "listRuns"
  | "getRun"
  | "getRunResult"
  | "getRunActivity"
  | "getRunChanges"
  | "getRunDiff"
  | "readRunArtifact"
  | "deleteRun"
  | "streamRun"
  | "reviewRun"
> {
  return {
    createRun: async ({ caller, body, reply }) => accepted(reply, await runs.create(caller, body)),
    listRuns: async ({ caller, query }) => ({ items: await runs.list(caller, query.limit) }),
    getRun: async ({ caller, params }) => runs.get(caller, params.id),
    getRunResult: async ({ caller, params }) => runs.get(caller, params.id),
    getRunActivity: async ({ caller, params }) => ({
      items: await runs.activityOf(caller, params.id),
    }),
    getRunChanges: async ({ caller, params }) => runs.changes(caller, params.id),
    getRunDiff: async ({ caller, params }) => runs.diff(caller, params.id),
    readRunArtifact: async ({ caller, params, query, reply }) =>
      sendBytes(
        reply,
        "application/octet-stream",
        await runs.artifact(caller, params.id, query.path),
      ),
    deleteRun: async ({ caller, params }) => runs.teardown(caller, params.id),
    reviewRun: async ({ caller, params, body }) => reviews.review(caller, params.id, body),
    streamRun: async ({ caller, params, request, reply }) => {
      const lastEventId = Number(request.headers["last-event-id"] ?? 0) || 0;
      const backlog = await runs.frames(caller, params.id, lastEventId);
      if (!wantsEventStream(request)) return { items: backlog };
      const stream = openEventStream(request, reply);
      let last = lastEventId;
      let finished = false;
      let wake: () => void = () => undefined;
      const live: RunFrame[] = [];
      const unsubscribe = runs.subscribe(params.id, (frame) => {
        live.push(frame);
        wake();
      });
      // A stream never outlives its caller's standing (a key revoked, a holder offboarded).
      const standing: { lost: string | null } = { lost: null };
      const stopWatching = watch(caller, ROUTES.streamRun.scope, (reason) => {
        standing.lost = reason;
        wake();
      });
      try {
        const send = async (frame: RunFrame) => {
          if (frame.seq <= last) return;
          last = frame.seq;
          await stream.send(frame.type, frame, frame.seq);
          if (frame.type === "exit") finished = true;
        };
        for (const frame of backlog) await send(frame);
        // Frames stored between the backlog read and the subscription are fetched once more.
        for (const frame of await runs.frames(caller, params.id, last)) await send(frame);
        if ((await runs.get(caller, params.id)).status !== "running" && !finished) {
          for (const frame of await runs.frames(caller, params.id, last)) await send(frame);
          finished = true;
        }
        while (!finished && !stream.closed && standing.lost === null) {
          if (live.length === 0)
            await new Promise<void>((resolve) => {
              wake = resolve;
              setTimeout(resolve, 15_000).unref();
            });
          const frame = live.shift();
          if (frame) await send(frame);
          else if (!stream.closed && standing.lost === null)
            await stream.send("ping", { time: Date.now() });
        }
        if (standing.lost !== null) {
          const ended = new AppError("unauthenticated", `The stream ended: ${standing.lost}.`);
          await stream.send("error", errorBody(ended.code, ended.message, request.id));
        }
      } finally {
        stopWatching();
        unsubscribe();
        stream.end();
      }
      return STREAMED;
    },
  };
}
