/**
 * Spend through the client: metered usage and its cost, the org's rates, and project caps. Each
 * class is one namespace of {@link ShellsClient} (`shells.usage`, `shells.caps`).
 */
import type {
  Cap,
  CapStatus,
  GovernanceReport,
  RateCard,
  RateCardUpdate as RateCardUpdateSchema,
  RuntimeClass,
  UsageDimension,
  UsageReport,
} from "@shells/contract";
import { segment, type ApiCall, type QueryValue } from "./internal/api-call.js";
import type { SchemaInput } from "./internal/schema-types.js";
import type { IdempotentRequestOptions, RequestOptions } from "./shells-client.js";

/** Body of `usage.updateRates()`: only the rates given change. Money is a decimal string. */
export type RateCardUpdate = SchemaInput<typeof RateCardUpdateSchema>;

/** Filters and grouping of a usage report. Hours and days are UTC. */
export interface UsageReportQuery {
  /** Start of the range (inclusive); default: the start of the current UTC month. */
  from?: Date | string | undefined;
  /** End of the range (exclusive); default: now. */
  to?: Date | string | undefined;
  /** Only shells of this project (its name). */
  project?: string | undefined;
  /** Only this shell (its id). */
  shell?: string | undefined;
  /** Only shells created by this user or agent (its id). */
  actor?: string | undefined;
  /** Only shells of this runtime class. */
  runtime?: RuntimeClass | undefined;
  /** Group rows by these dimensions (`["day", "class"]`); none: one row for the range. */
  groupBy?: readonly UsageDimension[] | undefined;
  /** Most rows answered (default 1000, at most 10 000). */
  limit?: number | undefined;
}

function usageQuery(query: UsageReportQuery, format: "json" | "csv"): Record<string, QueryValue> {
  const time = (value: Date | string | undefined) =>
    value instanceof Date ? value.toISOString() : value;
  return {
    from: time(query.from),
    to: time(query.to),
    project: query.project,
    shell: query.shell,
    actor: query.actor,
    runtime: query.runtime,
    groupBy: query.groupBy && query.groupBy.length > 0 ? query.groupBy.join(",") : undefined,
    limit: query.limit,
    format,
  };
}

/** `shells.usage`: what the org's shells used and cost, and the rates that cost it. */
export class UsageApi {
  readonly #call: ApiCall;

  /** @internal The client builds its namespaces; use `shells.usage`. */
  constructor(call: ApiCall) {
    this.#call = call;
  }

  /** Seconds per state, CPU, memory, egress and cost over a range, grouped as asked. */
  report(query: UsageReportQuery = {}, options: RequestOptions = {}): Promise<UsageReport> {
    return this.#call<UsageReport>("GET", "/api/v1/usage", {
      ...options,
      query: usageQuery(query, "json"),
    });
  }

  /** The same report as CSV text (a header line, one line per row, a `total` line when grouped). */
  async csv(query: UsageReportQuery = {}, options: RequestOptions = {}): Promise<string> {
    const bytes = await this.#call<Uint8Array>("GET", "/api/v1/usage", {
      ...options,
      query: usageQuery(query, "csv"),
      responseType: "bytes",
    });
    return new TextDecoder().decode(bytes);
  }

  /**
   * Governance metrics of the org or one project: shells and runs active now, and over the range
   * (default: this UTC month) denials by kind, approvals requested and decided, time to decision.
   */
  governance(
    query: Pick<UsageReportQuery, "from" | "to" | "project"> = {},
    options: RequestOptions = {},
  ): Promise<GovernanceReport> {
    const { from, to, project } = usageQuery(query, "json");
    return this.#call<GovernanceReport>("GET", "/api/v1/governance", {
      ...options,
      query: { from, to, project },
    });
  }

  /** The org's rate card: per hour running and stopped, by runtime class. */
  rates(options: RequestOptions = {}): Promise<RateCard> {
    return this.#call<RateCard>("GET", "/api/v1/usage/rates", options);
  }

  /** Changes the org's rates from now on (admins); time metered before keeps its rates. */
  updateRates(body: RateCardUpdate, options: IdempotentRequestOptions = {}): Promise<RateCard> {
    return this.#call<RateCard>("PUT", "/api/v1/usage/rates", { ...options, body });
  }
}

/** `shells.caps`: per-project caps on concurrent shells, running seconds and cost. */
export class CapsApi {
  readonly #call: ApiCall;

  /** @internal The client builds its namespaces; use `shells.caps`. */
  constructor(call: ApiCall) {
    this.#call = call;
  }

  /** The org's caps (or one project's), each with its current use and state. */
  async list(query: { project?: string | undefined } = {}, options: RequestOptions = {}) {
    const { items } = await this.#call<{ items: CapStatus[] }>("GET", "/api/v1/caps", {
      ...options,
      query: { project: query.project },
    });
    return items;
  }

  /**
   * Replaces a project's caps (admins); `[]` removes them. A create or start over a cap then
   * fails with a `ConflictError` of code `quota_exceeded`.
   */
  async set(
    project: string,
    caps: readonly Cap[],
    options: IdempotentRequestOptions = {},
  ): Promise<CapStatus[]> {
    const { items } = await this.#call<{ items: CapStatus[] }>(
      "PUT",
      `/api/v1/projects/${segment(project)}/caps`,
      { ...options, body: { caps } },
    );
    return items;
  }
}
