import type { RateCard, RateCardUpdate, RouteQuery, UsageReport } from "@shells/contract";
import type { SandboxUsage } from "@shells/sandbox";
import type { FastifyBaseLogger as Logger } from "fastify";
import type { Kysely } from "kysely";
import type { EgressService } from "../egress/egress-service.js";
import { AppError } from "../errors.js";
import type { Caller } from "../iam/principal.js";
import type { RuntimeRegistry } from "../orchestrator/runtimes.js";
import type { Database } from "../store/schema.js";
import { findProject } from "../store/shells-store.js";
import {
  HOUR_MS,
  checkpointIntervals,
  closeStaleIntervals,
  currentRates,
  earliestOpenStart,
  insertRates,
  openIntervals,
  openMissingIntervals,
  ratesByIds,
  rollOpenIntervals,
  sumUsage,
  type IntervalDelta,
  type OpenInterval,
  type StaleInterval,
  type UsageFilter,
} from "../store/usage-store.js";
import type { ActivityService } from "./activity-service.js";
import { foldUsage, groupColumns } from "./usage-report.js";
import {
  CostSum,
  DEFAULT_RATES,
  applyRateUpdate,
  hourlyRate,
  toRateCard,
  type StoredRates,
} from "./usage-rates.js";

/** What the metering service needs. */
export interface MeteringServiceDeps {
  db: Kysely<Database>;
  runtimes: RuntimeRegistry;
  activity: ActivityService;
  logger: Logger;
  /** Egress proxies, whose byte counters are metered for `internet` shells. */
  egress?: EgressService;
  /** The clock (ms); tests pass their own. */
  now?: () => number;
}

/** Backends read at once during a checkpoint: enough to overlap their file reads, few enough to stay gentle. */
const READ_CONCURRENCY = 64;

/** Totals of one scope over a range: what caps compare with their limits. */
export interface UsageTotals {
  runningMs: number;
  costMicros: bigint;
}

/**
 * Per-second metering of every shell, durable across crashes and restarts.
 *
 * Time: a shell's state changes move its meter in the same transaction (see `usage-store.ts`), so
 * time per state is exact to the millisecond. Counters: every checkpoint (`start(intervalMs)`)
 * reads each running shell's backend (CPU time, memory) and egress proxy (bytes) and adds the
 * difference since the last reading to its open interval, then moves every open interval's
 * checkpoint to now — all in one transaction. A crash loses at most the time since the last
 * checkpoint of shells whose state changed while the control plane was down; a shell found in the
 * same state after the restart continues from its last checkpoint, so nothing is lost and nothing
 * is counted twice (see `recover` and `resume`).
 */
export class MeteringService {
  readonly #now: () => number;
  #timer: NodeJS.Timeout | null = null;
  /** Checkpoints and settles run one at a time: two readings of one counter must not both count. */
  #serial: Promise<unknown> = Promise.resolve();
  /** Intervals a previous process left open, closed by `recover`, continued by `resume`. */
  #stale: StaleInterval[] = [];
  /** Egress bytes as last read, by shell: proxies count from zero in each process. */
  readonly #egressMarks = new Map<string, number>();

  constructor(private readonly deps: MeteringServiceDeps) {
    this.#now = deps.now ?? Date.now;
  }

  /**
   * At start, before anything changes a shell's state: closes the intervals a previous process
   * left open at their last checkpoint.
   */
  async recover(): Promise<void> {
    this.#stale = await closeStaleIntervals(this.deps.db);
  }

  /**
   * After reconciliation: opens an interval for every shell in a metered state that has none. A
   * shell still in the state it was in at the last checkpoint continues from there.
   */
  async resume(): Promise<void> {
    const now = this.#now();
    await openMissingIntervals(this.deps.db, now, this.#stale);
    this.#stale = [];
    await this.#rollDue(now);
  }

  /** Checkpoints every `intervalMs` until `stop`; a failed checkpoint is logged and the next runs. */
  start(intervalMs: number): void {
    this.stop();
    if (intervalMs <= 0) return;
    this.#timer = setInterval(() => {
      this.checkpoint().catch((error: unknown) =>
        this.deps.logger.error({ err: error }, "metering checkpoint failed"),
      );
    }, intervalMs);
    this.#timer.unref();
  }

  /** Stops the timer started by `start`. */
  stop(): void {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = null;
  }

  /** Reads every running shell's counters and moves every open interval's checkpoint to now. */
  checkpoint(): Promise<void> {
    return this.#serialised(async () => {
      const now = this.#now();
      await this.#rollDue(now);
      const open = await openIntervals(this.deps.db, { state: "running" });
      const deltas: IntervalDelta[] = [];
      for (let i = 0; i < open.length; i += READ_CONCURRENCY) {
        const batch = open.slice(i, i + READ_CONCURRENCY);
        for (const delta of await Promise.all(batch.map((row) => this.#read(row, now))))
          if (delta) deltas.push(delta);
      }
      await checkpointIntervals(this.deps.db, now, deltas);
      // A deleted shell's proxy is gone: its mark is no longer needed.
      for (const shellId of this.#egressMarks.keys())
        if ((this.deps.egress?.bytes(shellId) ?? null) === null) this.#egressMarks.delete(shellId);
    });
  }

  /**
   * Reads one shell's counters into its open interval now. Called before its processes end (a
   * stop, a restart, a delete): what they used since the last checkpoint would go with them.
   */
  settle(shellId: string): Promise<void> {
    return this.#serialised(async () => {
      const now = this.#now();
      const [open] = await openIntervals(this.deps.db, { shellId });
      if (!open) return;
      const delta = open.state === "running" ? await this.#read(open, now) : null;
      await checkpointIntervals(this.deps.db, now, delta ? [delta] : [], [open.id]);
    });
  }

  /** The org's rate card now. */
  async rates(orgId: string): Promise<RateCard> {
    const row = await currentRates(this.deps.db, orgId);
    return row
      ? toRateCard(JSON.parse(row.rates) as StoredRates, row.effective_at_ms)
      : toRateCard(DEFAULT_RATES, null);
  }

  /** Changes the org's rates from now on (time metered before keeps its rates). */
  async updateRates(caller: Caller, update: RateCardUpdate): Promise<RateCard> {
    const now = this.#now();
    const current = await currentRates(this.deps.db, caller.orgId);
    const before = current ? (JSON.parse(current.rates) as StoredRates) : DEFAULT_RATES;
    const next = applyRateUpdate(before, update);
    const row = await insertRates(this.deps.db, caller.orgId, JSON.stringify(next), now);
    const card = toRateCard(next, row.effective_at_ms);
    await this.deps.activity.recordFor(
      caller,
      "usage.rates.update",
      { type: "org", id: caller.orgId },
      {
        from: toRateCard(before, current?.effective_at_ms ?? null),
        to: card,
      },
    );
    return card;
  }

  /** The caller's org's usage over a range, grouped and costed (see the `getUsage` route). */
  async report(caller: Caller, query: RouteQuery<"getUsage">): Promise<UsageReport> {
    const now = this.#now();
    const toMs = query.to ? Date.parse(query.to) : now;
    const fromMs = query.from ? Date.parse(query.from) : monthStart(Math.min(toMs, now) - 1);
    if (fromMs >= toMs)
      throw new AppError("validation_failed", "from must be before to.", { field: "from" });
    const filter: UsageFilter = { fromMs, toMs };
    if (query.project) {
      const project = await findProject(this.deps.db, caller.orgId, query.project);
      if (!project)
        throw new AppError("project_not_found", `No project named ${query.project} in this org.`);
      filter.projectId = project.id;
    }
    if (query.shell) filter.shellId = query.shell;
    if (query.actor) filter.actorId = query.actor;
    if (query.runtime) filter.runtime = query.runtime;
    const groupBy = query.groupBy ?? [];
    await this.#serialised(() => this.#rollDue(now));
    const rows = await sumUsage(this.deps.db, caller.orgId, filter, groupColumns(groupBy), now);
    const ratesOf = await this.#ratesLookup(
      caller.orgId,
      rows.map((r) => r.rates_id),
    );
    return foldUsage(rows, {
      fromMs,
      toMs,
      groupBy,
      limit: query.limit,
      ratesOf,
      currency: (await this.rates(caller.orgId)).currency,
    });
  }

  /** Running time and cost of one scope over a range (cap checks). */
  async totals(orgId: string, filter: UsageFilter): Promise<UsageTotals> {
    const now = this.#now();
    const rows = await sumUsage(this.deps.db, orgId, filter, [], now);
    const ratesOf = await this.#ratesLookup(
      orgId,
      rows.map((r) => r.rates_id),
    );
    const cost = new CostSum();
    let runningMs = 0;
    for (const row of rows) {
      if (row.state === "running") runningMs += row.ms;
      cost.add(row.ms, hourlyRate(ratesOf(row.rates_id), row.runtime, row.state));
    }
    return { runningMs, costMicros: cost.micros };
  }

  /** The clock this service meters by. */
  now(): number {
    return this.#now();
  }

  async #ratesLookup(
    orgId: string,
    ids: readonly (number | null)[],
  ): Promise<(id: number | null) => StoredRates> {
    const wanted = [...new Set(ids.filter((id): id is number => id !== null))];
    const cards = new Map(
      (await ratesByIds(this.deps.db, orgId, wanted)).map((row) => [
        row.id,
        JSON.parse(row.rates) as StoredRates,
      ]),
    );
    return (id) => (id === null ? DEFAULT_RATES : (cards.get(id) ?? DEFAULT_RATES));
  }

  /** Splits open intervals at every UTC hour boundary passed since the earliest one started. */
  async #rollDue(now: number): Promise<void> {
    for (;;) {
      const earliest = await earliestOpenStart(this.deps.db);
      if (earliest === null) return;
      const boundary = (Math.floor(earliest / HOUR_MS) + 1) * HOUR_MS;
      if (boundary > now) return;
      await rollOpenIntervals(this.deps.db, boundary, { nowMs: now });
    }
  }

  /** What a shell used since its interval's last checkpoint, or null when nothing can be read. */
  async #read(row: OpenInterval, now: number): Promise<IntervalDelta | null> {
    let usage: SandboxUsage | null = null;
    try {
      usage = (await this.deps.runtimes.byName(row.backend)?.usage?.(row.shell_id)) ?? null;
    } catch (error) {
      this.deps.logger.warn({ err: error, shellId: row.shell_id }, "could not read shell usage");
    }
    const egressBytes = this.#egressDelta(row.shell_id);
    if (!usage && egressBytes === 0) return null;
    const elapsedMs = Math.max(0, now - Math.max(row.checkpoint_ms, row.started_at_ms));
    let cpuUsec = 0;
    if (usage) {
      // A new epoch means the counter started again from zero: all of it is new.
      const sameEpoch = usage.epoch === row.cpu_epoch && row.cpu_mark_usec !== null;
      cpuUsec = sameEpoch ? Math.max(0, usage.cpuUsec - (row.cpu_mark_usec ?? 0)) : usage.cpuUsec;
    }
    return {
      id: row.id,
      cpuUsec,
      memoryMbMs: usage ? (usage.memoryBytes / (1024 * 1024)) * elapsedMs : 0,
      egressBytes,
      cpuEpoch: usage?.epoch ?? null,
      cpuMarkUsec: usage ? usage.cpuUsec : null,
    };
  }

  #egressDelta(shellId: string): number {
    const bytes = this.deps.egress?.bytes(shellId);
    if (bytes === null || bytes === undefined) return 0;
    const mark = this.#egressMarks.get(shellId) ?? 0;
    this.#egressMarks.set(shellId, bytes);
    return bytes >= mark ? bytes - mark : bytes;
  }

  #serialised<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.#serial.then(fn, fn);
    this.#serial = next.catch(() => undefined);
    return next;
  }
}

/** Start of the UTC month that holds `ms`. */
export function monthStart(ms: number): number {
  const date = new Date(ms);
  return Date.UTC(date.getUTCFullYear(), date.getUTCMonth(), 1);
}

/** Start of the UTC day that holds `ms`. */
export function dayStart(ms: number): number {
  return Math.floor(ms / 86_400_000) * 86_400_000;
}
