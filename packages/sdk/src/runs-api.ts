import type {
  ActivityEvent,
  EvidenceBundle,
  PendingApproval,
  Run,
  RunCreate,
  RunFrame,
  RunReview,
  RunReviewCreate,
  WorkspaceChanges,
  WorkspaceDiff,
} from "@shells/contract";
import { ConnectionError, ServerError, errorFromStreamEvent } from "./errors.js";
import { idempotencyKeyOf, segment, type ApiCall, type EventCall } from "./internal/api-call.js";
import { isPendingApproval } from "./pending-approval.js";
import type { IdempotentRequestOptions, RequestOptions } from "./shells-client.js";

/** Filters of {@link RunsApi.list}. */
export interface ListRunsQuery {
  /** How many of the newest runs, 1–200 (default 50). */
  limit?: number | undefined;
}

/** How often a dropped run stream is reconnected in a row, without a new frame, before giving up. */
const MAX_RECONNECTS = 5;
/** Pause before the n-th reconnect: n × this. */
const RECONNECT_BACKOFF_MS = 250;
/** Pause between polls of a run whose stream ended while the run still says `running`. */
const POLL_INTERVAL_MS = 500;

/**
 * One-shot runs (`shells.runs`): an ephemeral shell runs code or a command, reports a structured
 * result and artifacts, and is torn down. Start one with `shells.run(spec)`.
 */
export class RunsApi {
  readonly #call: ApiCall;
  readonly #events: EventCall;

  /** @internal The client builds this; use `shells.runs`. */
  constructor(call: ApiCall, events: EventCall) {
    this.#call = call;
    this.#events = events;
  }

  /**
   * Starts a run (with an idempotency key, a fresh one unless given); the handle follows it. See
   * `ShellsClient.run`. A run of a template marked `reviewBeforeRun` waits for an approver: its
   * handle's `pendingApproval` says which approval (the run is `pending_approval` until then).
   */
  async create(spec: RunCreate, options: IdempotentRequestOptions = {}): Promise<RunHandle> {
    const answer = await this.#call<Run | PendingApproval>("POST", "/api/v1/runs", {
      ...options,
      body: spec,
      idempotencyKey: idempotencyKeyOf(options.idempotencyKey),
    });
    if (isPendingApproval(answer))
      return new RunHandle(answer.approval.shellId, this.#call, this.#events, answer);
    return new RunHandle(answer.id, this.#call, this.#events);
  }

  /** One run, as it stands now. */
  get(runId: string, options: RequestOptions = {}): Promise<Run> {
    return this.#call<Run>("GET", `/api/v1/runs/${segment(runId)}`, options);
  }

  /** The org's newest runs, newest first. */
  async list(query: ListRunsQuery = {}, options: RequestOptions = {}): Promise<Run[]> {
    const { items } = await this.#call<{ items: Run[] }>("GET", "/api/v1/runs", {
      ...options,
      query: { limit: query.limit },
    });
    return items;
  }

  /**
   * Reviews a finished run: a verdict (`approved`, `changes_requested`, `rejected`) and a comment.
   * Only the org's listed approvers review, never a run they are behind (`separation_of_duties`).
   */
  review(runId: string, review: RunReviewCreate, options: RequestOptions = {}): Promise<RunReview> {
    return this.#call<RunReview>("POST", `/api/v1/runs/${segment(runId)}/review`, {
      ...options,
      body: review,
    });
  }

  /** A handle on an existing run, to stream, await or tear it down. Sends nothing by itself. */
  handle(runId: string): RunHandle {
    return new RunHandle(runId, this.#call, this.#events);
  }
}

/**
 * A one-shot run: follow it live with {@link stream}, wait for its outcome with {@link result},
 * read its artifacts and its {@link audit} trail, and {@link teardown} it.
 *
 * ```ts
 * const run = await shells.run({
 *   code: `print("hi"); shells.result({"ok": True})`,
 *   language: "python",
 *   egress: { mode: "deny_all", allow: [] },
 * });
 * for await (const frame of run.stream()) console.log(frame); // live
 * const { result, output } = await run.result(); // { ok: true }, the end of stdout and stderr
 * const events = await run.audit(); // run.start, shell.create, …, egress decisions, run.finish
 * await run.teardown();
 * ```
 */
export class RunHandle {
  /** The run's id. */
  readonly id: string;
  /** Set when the run waits for review: the approval a listed approver grants or denies. */
  readonly pendingApproval: PendingApproval | undefined;
  readonly #call: ApiCall;
  readonly #events: EventCall;

  /** @internal Use `shells.run()` or `shells.runs.handle()`. */
  constructor(id: string, call: ApiCall, events: EventCall, pendingApproval?: PendingApproval) {
    this.id = id;
    this.pendingApproval = pendingApproval;
    this.#call = call;
    this.#events = events;
  }

  /** The run as it stands now. */
  get(options: RequestOptions = {}): Promise<Run> {
    return this.#call<Run>("GET", this.#path(""), options);
  }

  /**
   * The run's frames, from the first, live until its `exit` frame: `stdout`/`stderr` (text),
   * `status`, `result`, `artifact`, `exit`. A dropped connection is resumed where it broke off
   * (`Last-Event-ID`), so no frame is lost or repeated. Breaking out of the loop only stops
   * following; the run goes on.
   */
  async *stream(options: RequestOptions = {}): AsyncGenerator<RunFrame, void, undefined> {
    let lastSeq: number | undefined;
    let failures = 0;
    for (;;) {
      let progressed = false;
      try {
        const answer = await this.#events("GET", this.#path("/stream"), {
          ...options,
          lastEventId: lastSeq === undefined ? undefined : String(lastSeq),
        });
        const frames =
          answer.kind === "json" ? framesOf(answer.body) : eventFrames(answer.events, this.id);
        for await (const frame of frames) {
          // A server that ignored Last-Event-ID (or a JSON answer) repeats what was seen.
          if (lastSeq !== undefined && frame.seq <= lastSeq) continue;
          lastSeq = frame.seq;
          progressed = true;
          yield frame;
          if (frame.type === "exit") return;
        }
      } catch (error) {
        // Only a lost connection is worth resuming; the server's refusals are final.
        if (!(error instanceof ConnectionError) || error.code !== "connection_failed") throw error;
        failures = progressed ? 1 : failures + 1;
        if (failures > MAX_RECONNECTS) {
          throw new ConnectionError(
            {
              code: "connection_failed",
              status: 0,
              message: `lost the stream of run ${this.id} ${failures} times in a row: ${error.message}`,
            },
            { cause: error },
          );
        }
        if (!progressed) await sleep(RECONNECT_BACKOFF_MS * failures, options.signal);
        continue;
      }
      failures = 0;
      if (!progressed) {
        // The stream ended with nothing new: an ended run will never send its exit frame.
        if ((await this.get(options)).status !== "running") return;
        await sleep(POLL_INTERVAL_MS, options.signal);
      }
    }
  }

  /**
   * Waits until the run has ended (following its stream, then polling) and answers it: `status`,
   * `exitCode`, `killReason`, the structured `result` the code reported, `artifacts`, and `output`
   * (the end of its stdout and stderr). A non-zero exit code is a result, not an error.
   */
  async result(options: RequestOptions = {}): Promise<Run> {
    let run = await this.#call<Run>("GET", this.#path("/result"), options);
    if (run.status !== "running") return run;
    for await (const frame of this.stream(options)) void frame;
    for (;;) {
      run = await this.#call<Run>("GET", this.#path("/result"), options);
      if (run.status !== "running") return run;
      await sleep(POLL_INTERVAL_MS, options.signal);
    }
  }

  /**
   * The run's audit trail: the activity events of the run and of its ephemeral shell, in order —
   * its start, the shell's creation (runtime, network), each exec, every egress decision of its
   * proxy (`egress.allowed` / `egress.denied`: host, address, port, reason), the shell's deletion,
   * the run's finish (status, kill reason) and its teardown. Complete once {@link result} says the
   * run ended (the teardown's own event comes with {@link teardown}).
   */
  async audit(options: RequestOptions = {}): Promise<ActivityEvent[]> {
    const { items } = await this.#call<{ items: ActivityEvent[] }>(
      "GET",
      this.#path("/activity"),
      options,
    );
    return items;
  }

  /**
   * What the run changed in /workspace from its start (files seeded) to its end: files added,
   * removed and modified, with sizes and SHA-256 before and after. `invalid_state` while it runs.
   */
  changes(options: RequestOptions = {}): Promise<WorkspaceChanges> {
    return this.#call<WorkspaceChanges>("GET", this.#path("/changes"), options);
  }

  /**
   * What the run changed in /workspace as unified diffs of its text files (`patch`) and a manifest
   * of sizes and SHA-256 for binaries; a patch left out for size says why in `omitted`.
   * `invalid_state` (ConflictError) while it runs; `artifact_expired` (GoneError) once the run's
   * retention ran out.
   */
  diff(options: RequestOptions = {}): Promise<WorkspaceDiff> {
    return this.#call<WorkspaceDiff>("GET", this.#path("/diff"), options);
  }

  /**
   * The run's evidence bundle: its record, its audit trail with an inclusion proof of every event
   * against a signed checkpoint, the artifact manifest with hashes, and the public key. Check it
   * with no server using the contract's `verifyEvidenceBundle` (or `shells evidence verify`).
   */
  evidence(options: RequestOptions = {}): Promise<EvidenceBundle> {
    return this.#call<EvidenceBundle>("GET", this.#path("/evidence"), options);
  }

  /**
   * One artifact's bytes, by its path relative to /workspace (as `run.artifacts` lists it);
   * `artifact_expired` (GoneError) once the run's retention ran out.
   */
  artifact(path: string, options: RequestOptions = {}): Promise<Uint8Array> {
    return this.#call<Uint8Array>("GET", this.#path("/artifacts/content"), {
      ...options,
      query: { path },
      responseType: "bytes",
    });
  }

  /** Cancels the run if it still runs and reclaims its shell; records and artifacts stay. */
  teardown(options: RequestOptions = {}): Promise<Run> {
    return this.#call<Run>("DELETE", this.#path(""), options);
  }

  #path(suffix: string): string {
    return `/api/v1/runs/${segment(this.id)}${suffix}`;
  }
}

function framesOf(body: unknown): RunFrame[] {
  const items = (body as { items?: unknown }).items;
  if (!Array.isArray(items)) {
    throw new ServerError({
      code: "unexpected_response",
      status: 200,
      message: "the run stream answered JSON without `items`",
    });
  }
  return items as RunFrame[];
}

async function* eventFrames(
  events: AsyncIterable<{ event: string; data: string }>,
  runId: string,
): AsyncGenerator<RunFrame, void, undefined> {
  for await (const event of events) {
    if (event.event === "error") throw await errorFromStreamEvent(event.data);
    let frame: RunFrame;
    try {
      frame = JSON.parse(event.data) as RunFrame;
    } catch (cause) {
      throw new ServerError(
        {
          code: "unexpected_response",
          status: 200,
          message: `the stream of run ${runId} sent an event that is not JSON`,
        },
        { cause },
      );
    }
    yield frame;
  }
}

function sleep(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(abortedError());
      return;
    }
    const onAbort = () => {
      clearTimeout(timer);
      reject(abortedError());
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

function abortedError(): ConnectionError {
  return new ConnectionError({ code: "aborted", status: 0, message: "aborted by the caller" });
}
