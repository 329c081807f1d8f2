import { z } from "zod";
import { RuntimeClass } from "./shells.js";

/**
 * An amount of money as a decimal string with at most 6 decimals (`"0.04"`, `"12.500000"`): money
 * never travels as a float, so nothing drifts between the server, a spreadsheet and a client.
 */
export const Money = z
  .string()
  .regex(/^\d{1,12}(\.\d{1,6})?$/, "a non-negative decimal with at most 6 decimals");
export type Money = z.infer<typeof Money>;

/** Lifecycle states a shell is metered in (a deleted shell is no longer metered). */
export const MeteredState = z.enum(["provisioning", "running", "stopped", "error"]);
export type MeteredState = z.infer<typeof MeteredState>;

/** What one runtime class costs per hour in each state that is charged. */
export const ClassRates = z.strictObject({
  /** Per hour a shell of the class is `running`. */
  runningPerHour: Money,
  /** Per hour a shell of the class is `stopped` (its filesystem state is kept). */
  stoppedPerHour: Money,
});
export type ClassRates = z.infer<typeof ClassRates>;

/**
 * The org's rate card. Time in `provisioning` and `error` is metered but not charged. A change
 * applies from the moment it is made; time before it keeps the rates it was metered under.
 */
export const RateCard = z.strictObject({
  /** ISO 4217 code the amounts are in; a label, never converted. */
  currency: z.string().regex(/^[A-Z]{3}$/, "an ISO 4217 code such as USD"),
  classes: z.strictObject({ wasm: ClassRates, container: ClassRates, microvm: ClassRates }),
  /** When this card took effect; null for the server's defaults. */
  effectiveAt: z.iso.datetime().nullable(),
});
export type RateCard = z.infer<typeof RateCard>;

/** Body of `PUT /api/v1/usage/rates`: fields left out keep their value. */
export const RateCardUpdate = z.strictObject({
  currency: RateCard.shape.currency.optional(),
  classes: z
    .strictObject({
      wasm: ClassRates.partial().optional(),
      container: ClassRates.partial().optional(),
      microvm: ClassRates.partial().optional(),
    })
    .optional(),
});
export type RateCardUpdate = z.infer<typeof RateCardUpdate>;

/** Dimensions a usage report can be grouped by. At most one of `hour` and `day`. */
export const UsageDimension = z.enum(["hour", "day", "class", "project", "shell", "actor"]);
export type UsageDimension = z.infer<typeof UsageDimension>;

/** Query of `GET /api/v1/usage`. Times are UTC; hours and days are UTC hours and days. */
export const UsageQuery = z
  .strictObject({
    /** Start of the range (inclusive); default: the start of the current UTC month. */
    from: z.iso.datetime({ offset: true }).optional(),
    /** End of the range (exclusive); default: now. */
    to: z.iso.datetime({ offset: true }).optional(),
    /** Only shells of this project (its name). */
    project: z.string().max(63).optional(),
    /** Only this shell (its id). */
    shell: z.string().max(64).optional(),
    /** Only shells created by this user or agent (its id). */
    actor: z.string().max(128).optional(),
    /** Only shells of this runtime class. */
    runtime: RuntimeClass.optional(),
    /** Comma-separated dimensions (`day,class`); default: one row for the whole range. */
    groupBy: z
      .string()
      .max(200)
      .transform((value) => [...new Set(value.split(",").filter((part) => part.length > 0))])
      .pipe(z.array(UsageDimension))
      .refine((dims) => !(dims.includes("hour") && dims.includes("day")), "hour or day, not both")
      .optional(),
    /** `csv` answers `text/csv` (as does `Accept: text/csv`); default JSON. */
    format: z.enum(["json", "csv"]).optional(),
    /** Most rows answered (default 1000); `truncated` says when more matched. */
    limit: z.coerce.number().int().min(1).max(10_000).default(1000),
  })
  .refine((q) => !q.from || !q.to || Date.parse(q.from) < Date.parse(q.to), {
    message: "from must be before to",
    path: ["from"],
  });
export type UsageQuery = z.input<typeof UsageQuery>;

/** Seconds spent in each metered state. */
export const StateSeconds = z.strictObject({
  provisioning: z.number(),
  running: z.number(),
  stopped: z.number(),
  error: z.number(),
});
export type StateSeconds = z.infer<typeof StateSeconds>;

/** What a group of shells used and cost. Only the dimensions grouped by are present. */
export const UsageRow = z.strictObject({
  /** Start of the UTC hour or day (grouped by `hour` or `day`). */
  period: z.iso.datetime().optional(),
  runtime: RuntimeClass.optional(),
  /** Project name. */
  project: z.string().optional(),
  /** Shell id. */
  shell: z.string().optional(),
  /** Id of the user or agent that created the shells (null where the history does not say). */
  actor: z.string().nullable().optional(),
  /** Seconds in each state, to the millisecond. */
  seconds: StateSeconds,
  /** CPU time the shells' processes used, where the backend reads it (0 elsewhere). */
  cpuSeconds: z.number(),
  /** Memory in use integrated over time (MB × s), where the backend reads it (0 elsewhere). */
  memoryMbSeconds: z.number(),
  /** Bytes through the shells' egress proxies (internet shells). */
  egressBytes: z.int(),
  /** Cost under the rates in effect when the time was metered, rounded to a micro-unit. */
  cost: Money,
});
export type UsageRow = z.infer<typeof UsageRow>;

/** Answer of `GET /api/v1/usage` as JSON. */
export const UsageReport = z.strictObject({
  from: z.iso.datetime(),
  to: z.iso.datetime(),
  groupBy: z.array(UsageDimension),
  currency: z.string(),
  /** Groups, oldest period first, then by cost (highest first). */
  rows: z.array(UsageRow),
  /** Sum of every matching row (also of rows left out by `limit`). */
  total: UsageRow,
  /** More groups matched than `limit`. */
  truncated: z.boolean(),
});
export type UsageReport = z.infer<typeof UsageReport>;

/** Periods a period cap counts over (UTC day, UTC calendar month). */
export const CapPeriod = z.enum(["day", "month"]);
export type CapPeriod = z.infer<typeof CapPeriod>;

/**
 * One cap on a project; with `runtime` it counts only shells of that class. `concurrent_shells`:
 * shells provisioning or running at once (a create or start past it is refused). `running_seconds`
 * and `cost` count over the current period: a create or start is refused once the period's cap is
 * reached, and running shells in its scope are stopped (kill reason `quota`).
 */
export const Cap = z.discriminatedUnion("metric", [
  z.strictObject({
    metric: z.literal("concurrent_shells"),
    limit: z.int().min(0).max(100_000),
    runtime: RuntimeClass.optional(),
  }),
  z.strictObject({
    metric: z.literal("running_seconds"),
    period: CapPeriod,
    limit: z.int().min(0).max(1e12),
    runtime: RuntimeClass.optional(),
  }),
  z.strictObject({
    metric: z.literal("cost"),
    period: CapPeriod,
    /** In the rate card's currency. */
    limit: Money,
    runtime: RuntimeClass.optional(),
  }),
]);
export type Cap = z.infer<typeof Cap>;

/** Body of `PUT /api/v1/projects/:project/caps`: the project's whole set of caps. */
export const ProjectCaps = z.strictObject({
  caps: z.array(Cap).max(32),
});
export type ProjectCaps = z.infer<typeof ProjectCaps>;

/** A cap with what its project uses of it now. */
export const CapStatus = z.strictObject({
  id: z.string(),
  project: z.string(),
  cap: Cap,
  /** Current use in the cap's unit: shells, seconds, or money (a decimal string). */
  used: z.union([z.number(), Money]),
  /** Used as a percentage of the limit (100 when the limit is 0). */
  percent: z.number(),
  /** `warning` from 80 %, `reached` at 100 %. */
  state: z.enum(["ok", "warning", "reached"]),
  /** The period counted (period caps only). */
  periodStart: z.iso.datetime().optional(),
  periodEnd: z.iso.datetime().optional(),
});
export type CapStatus = z.infer<typeof CapStatus>;

/** Query of `GET /api/v1/governance`: one project (a team) or the whole org, over a range. */
export const GovernanceQuery = z
  .strictObject({
    /** Start of the range (inclusive); default: the start of the current UTC month. */
    from: z.iso.datetime({ offset: true }).optional(),
    /** End of the range (exclusive); default: now. */
    to: z.iso.datetime({ offset: true }).optional(),
    /** Only this project's shells, runs, approvals and denials (its name). */
    project: z.string().max(63).optional(),
  })
  .refine((q) => !q.from || !q.to || Date.parse(q.from) < Date.parse(q.to), {
    message: "from must be before to",
    path: ["from"],
  });
export type GovernanceQuery = z.input<typeof GovernanceQuery>;

/** How a project (or the org) is governed: activity now, and decisions over the range. */
export const GovernanceReport = z.strictObject({
  from: z.iso.datetime(),
  to: z.iso.datetime(),
  /** The project reported on; null for the whole org. */
  project: z.string().nullable(),
  /** Shells by state now (deleted ones left out). */
  shells: z.strictObject({
    provisioning: z.int(),
    running: z.int(),
    stopped: z.int(),
    error: z.int(),
  }),
  /** Runs running now, and runs started in the range by how they ended. */
  runs: z.strictObject({
    active: z.int(),
    started: z.int(),
    succeeded: z.int(),
    failed: z.int(),
    cancelled: z.int(),
  }),
  /** Requests refused in the range, by kind (the history's action), most frequent first. */
  denials: z.strictObject({
    total: z.int(),
    byKind: z.array(z.strictObject({ kind: z.string(), count: z.int() })),
  }),
  /** Approvals requested in the range, by where they stand, and how long decisions took. */
  approvals: z.strictObject({
    requested: z.int(),
    pending: z.int(),
    granted: z.int(),
    denied: z.int(),
    expired: z.int(),
    /** Withdrawn by their requester, or closed because their shell was deleted. */
    withdrawn: z.int(),
    /** Seconds from request to decision of the decided ones; null when none was decided. */
    timeToDecisionSeconds: z
      .strictObject({ p50: z.number(), p90: z.number(), max: z.number() })
      .nullable(),
  }),
});
export type GovernanceReport = z.infer<typeof GovernanceReport>;
