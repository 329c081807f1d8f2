import type { FastifyBaseLogger } from "fastify";
import type { Kysely, Selectable } from "kysely";
import { Webhook as StandardWebhook } from "standardwebhooks";
import type { EgressResolver } from "../egress/egress-proxy.js";
import type { SealedBox } from "../iam/sealed-box.js";
import { nowIso } from "../ids.js";
import type { WebhookMetrics } from "../metrics/server-metrics.js";
import type { PolicyService } from "../services/policy-service.js";
import type { Database, WebhookDeliveryTable, WebhookTable } from "../store/schema.js";
import { dialWebhook, WebhookDialError } from "./webhook-dialer.js";

/** What the dispatcher needs. */
export interface WebhookDispatcherOptions {
  db: Kysely<Database>;
  box: SealedBox;
  policies: PolicyService;
  resolve: EgressResolver;
  logger: FastifyBaseLogger;
  metrics?: WebhookMetrics;
  /** Tries per delivery before it is given up (`failed`). */
  maxAttempts: number;
  /** Wait after the first failed try, ms; it doubles with every further one (up to an hour). */
  retryBaseMs: number;
  /** Longest one try may take, ms. */
  timeoutMs: number;
}

/** Deliveries sent at once. */
const BATCH = 16;
/** The longest wait between two tries. */
const MAX_BACKOFF_MS = 60 * 60 * 1000;
/** Extra time a claimed delivery is held past its try's timeout before another pass may take it. */
const LEASE_MARGIN_MS = 5_000;

/** How long the delivery log keeps a delivered or given-up delivery. */
export const DELIVERY_LOG_RETENTION_MS = 30 * 24 * 60 * 60 * 1000;
/** How often the log is pruned. */
const PRUNE_EVERY_MS = 60 * 60 * 1000;

/** Wait before the next try after `attempts` failed ones: doubling, with ±20 % jitter. */
export function backoffMs(attempts: number, baseMs: number): number {
  const plain = Math.min(baseMs * 2 ** Math.max(0, attempts - 1), MAX_BACKOFF_MS);
  return Math.round(plain * (0.8 + Math.random() * 0.4));
}

/**
 * Sends the outbox: every due `pending` delivery is signed (Standard Webhooks: `webhook-id`,
 * `webhook-timestamp`, `webhook-signature` over `id.timestamp.body` with each current secret) and
 * POSTed through the dialer. A 2xx answer delivers it; anything else — another status, a refused
 * address, a timeout — is a failed try, retried with exponential backoff until `maxAttempts`, then
 * the delivery is `failed`. Delivery is at least once: a try is claimed in the store (leased for
 * its timeout) before it is sent, so a crash mid-try means the delivery is tried again, never lost;
 * receivers deduplicate by `webhook-id`.
 */
export class WebhookDispatcher {
  #timer: NodeJS.Timeout | null = null;
  /** Wakes the dispatcher when the soonest retry is due before the next poll. */
  #soonest: NodeJS.Timeout | null = null;
  #intervalMs = 0;
  #pass: Promise<void> | null = null;
  #again = false;
  #stopping = new AbortController();
  #prunedAt = 0;

  constructor(private readonly options: WebhookDispatcherOptions) {}

  /** Polls the outbox every `intervalMs` (due retries) and on every `wake`; 0 does nothing. */
  start(intervalMs: number): void {
    this.stop();
    this.#stopping = new AbortController();
    if (intervalMs <= 0) return;
    this.#intervalMs = intervalMs;
    this.#timer = setInterval(() => this.wake(), intervalMs);
    this.#timer.unref();
    this.wake();
  }

  /** Sends what is due now (new deliveries were queued). */
  readonly wake = (): void => {
    if (!this.#timer || this.#stopping.signal.aborted) return;
    if (this.#pass) {
      this.#again = true;
      return;
    }
    this.#pass = this.drain()
      .then(() => this.#wakeForSoonest())
      .catch((error: unknown) => this.options.logger.error({ err: error }, "webhook pass failed"))
      .finally(() => {
        this.#pass = null;
        if (this.#again) {
          this.#again = false;
          this.wake();
        }
      });
  };

  /** Stops polling; tries in flight end at once and are due again at the next start. */
  stop(): void {
    if (this.#timer) clearInterval(this.#timer);
    if (this.#soonest) clearTimeout(this.#soonest);
    this.#timer = null;
    this.#soonest = null;
    this.#stopping.abort();
  }

  /** Stops, and waits for the pass in flight to record how its tries ended. */
  async close(): Promise<void> {
    this.stop();
    await this.#pass;
  }

  /** Sends every delivery that is due, batch by batch; answers how many tries were made. */
  async drain(): Promise<number> {
    await this.#prune();
    let tries = 0;
    for (;;) {
      const due = await this.#claim();
      if (due.length === 0) return tries;
      await Promise.all(due.map((row) => this.#send(row)));
      tries += due.length;
      if (due.length < BATCH || this.#stopping.signal.aborted) return tries;
    }
  }

  /** Drops finished deliveries past the log's retention (at most once an hour). */
  async #prune(): Promise<void> {
    if (Date.now() - this.#prunedAt < PRUNE_EVERY_MS) return;
    this.#prunedAt = Date.now();
    await this.options.db
      .deleteFrom("webhook_deliveries")
      .where("state", "!=", "pending")
      .where("created_at", "<", new Date(Date.now() - DELIVERY_LOG_RETENTION_MS).toISOString())
      .execute();
  }

  /** A retry due before the next poll is sent when it is due, not at the poll. */
  async #wakeForSoonest(): Promise<void> {
    const next = await this.options.db
      .selectFrom("webhook_deliveries")
      .select((eb) => eb.fn.min("next_attempt_at").as("at"))
      .where("state", "=", "pending")
      .executeTakeFirst();
    const dueInMs = next?.at ? Date.parse(next.at) - Date.now() : Infinity;
    if (!this.#timer || dueInMs >= this.#intervalMs) return;
    if (this.#soonest) clearTimeout(this.#soonest);
    this.#soonest = setTimeout(() => this.wake(), Math.max(0, dueInMs));
    this.#soonest.unref();
  }

  /** Takes due deliveries by pushing their due time past their try (a lease); answers those taken. */
  async #claim(): Promise<Selectable<WebhookDeliveryTable>[]> {
    const { db, timeoutMs } = this.options;
    const now = nowIso();
    const due = await db
      .selectFrom("webhook_deliveries")
      .selectAll()
      .where("state", "=", "pending")
      .where("next_attempt_at", "<=", now)
      .orderBy("next_attempt_at")
      .limit(BATCH)
      .execute();
    const lease = new Date(Date.now() + timeoutMs + LEASE_MARGIN_MS).toISOString();
    const taken: Selectable<WebhookDeliveryTable>[] = [];
    for (const row of due) {
      const claimed = await db
        .updateTable("webhook_deliveries")
        .set({ next_attempt_at: lease })
        .where("id", "=", row.id)
        .where("state", "=", "pending")
        .where("next_attempt_at", "=", row.next_attempt_at)
        .executeTakeFirst();
      if (Number(claimed.numUpdatedRows) === 1) taken.push(row);
    }
    return taken;
  }

  async #send(row: Selectable<WebhookDeliveryTable>): Promise<void> {
    const { db, policies } = this.options;
    const hook = await db
      .selectFrom("webhooks")
      .selectAll()
      .where("id", "=", row.webhook_id)
      .executeTakeFirst();
    if (!hook) return; // removed meanwhile; its deliveries went with it
    const policy = await policies.get(row.org_id);
    const sentAt = new Date();
    let status: number | null = null;
    let error: string | null = null;
    try {
      ({ status } = await dialWebhook(
        {
          url: hook.url,
          body: row.payload,
          headers: this.#headers(hook, row, sentAt),
        },
        {
          resolve: this.options.resolve,
          allowCidrs: policy.webhooks?.allowCidrs ?? [],
          timeoutMs: this.options.timeoutMs,
          signal: this.#stopping.signal,
        },
      ));
      if (status < 200 || status >= 300) error = `the endpoint answered HTTP ${status}`;
    } catch (failure) {
      if (this.#stopping.signal.aborted) {
        // Cut off by shutdown: not the endpoint's failure. Due again as soon as the server is back.
        await this.#update(row, { next_attempt_at: nowIso() });
        return;
      }
      error =
        failure instanceof WebhookDialError
          ? `${failure.reason}: ${failure.message}`
          : `failed: ${failure instanceof Error ? failure.message : String(failure)}`;
    }
    await this.#record(row, sentAt, status, error);
  }

  /** The Standard Webhooks headers of one try, signed with every secret that signs now. */
  #headers(
    hook: Selectable<WebhookTable>,
    row: Selectable<WebhookDeliveryTable>,
    sentAt: Date,
  ): Record<string, string> {
    const secrets = [hook.secret];
    if (hook.previous_secret && (hook.previous_secret_expires_at ?? "") > sentAt.toISOString())
      secrets.push(hook.previous_secret);
    const signature = secrets
      .map((sealed) =>
        new StandardWebhook(this.options.box.unseal(sealed)).sign(
          row.message_id,
          sentAt,
          row.payload,
        ),
      )
      .join(" ");
    return {
      "content-type": "application/json",
      "user-agent": "Shells-Webhooks/1",
      "webhook-id": row.message_id,
      "webhook-timestamp": String(Math.floor(sentAt.getTime() / 1000)),
      "webhook-signature": signature,
    };
  }

  async #record(
    row: Selectable<WebhookDeliveryTable>,
    sentAt: Date,
    status: number | null,
    error: string | null,
  ): Promise<void> {
    const attempts = row.attempts + 1;
    const common = {
      attempts,
      last_attempt_at: sentAt.toISOString(),
      last_status: status,
      last_error: error,
    };
    if (error === null) {
      this.options.metrics?.countWebhookDelivery("delivered");
      await this.#update(row, {
        ...common,
        state: "delivered",
        next_attempt_at: null,
        delivered_at: nowIso(),
      });
      return;
    }
    const giveUp = attempts >= this.options.maxAttempts;
    this.options.metrics?.countWebhookDelivery(giveUp ? "failed" : "retrying");
    this.options.logger.info(
      { deliveryId: row.id, webhookId: row.webhook_id, attempts, error },
      giveUp ? "webhook delivery failed for good" : "webhook delivery failed; will retry",
    );
    await this.#update(row, {
      ...common,
      state: giveUp ? "failed" : "pending",
      next_attempt_at: giveUp
        ? null
        : new Date(Date.now() + backoffMs(attempts, this.options.retryBaseMs)).toISOString(),
    });
  }

  async #update(
    row: Selectable<WebhookDeliveryTable>,
    fields: Partial<Selectable<WebhookDeliveryTable>>,
  ): Promise<void> {
    await this.options.db
      .updateTable("webhook_deliveries")
      .set(fields)
      .where("id", "=", row.id)
      .execute();
  }
}
