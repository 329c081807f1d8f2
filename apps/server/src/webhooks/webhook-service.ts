import {
  webhookWants,
  type ActivityEvent,
  type Checkpoint,
  type Page,
  type RouteBody,
  type RouteQuery,
  type Webhook,
  type WebhookCreated,
  type WebhookDelivery,
  type WebhookEventFilter,
  type WebhookEventType,
  type WebhookMessageType,
  type WebhookPayload,
} from "@shells/contract";
import type { Kysely, Selectable, Transaction } from "kysely";
import { randomBytes } from "node:crypto";
import { z } from "zod";
import { AppError } from "../errors.js";
import type { Caller } from "../iam/principal.js";
import type { SealedBox } from "../iam/sealed-box.js";
import { newId, nowIso } from "../ids.js";
import type { ActivityService } from "../services/activity-service.js";
import { decodeCursor, encodeCursor } from "../services/cursor.js";
import type { PolicyService } from "../services/policy-service.js";
import type { Database, WebhookDeliveryTable, WebhookTable } from "../store/schema.js";
import { literalDestinationDenial } from "./webhook-dialer.js";
import { webhookEventTypeOf, webhookPayloadOf } from "./webhook-events.js";

/** The activity action of a test message (`POST /api/v1/webhooks/:id/test`). */
const TEST_ACTION = "webhook.test";

/** Endpoints one org may have. */
export const MAX_WEBHOOKS_PER_ORG = 25;

/** How long a rotated-out secret keeps signing deliveries beside the new one. */
export const ROTATION_GRACE_MS = 24 * 60 * 60 * 1000;

const deliveryCursor = z.strictObject({ c: z.string(), i: z.string() });

/** A fresh Standard Webhooks signing secret: `whsec_` and 32 random bytes, base64. */
export function newWebhookSecret(): string {
  return `whsec_${randomBytes(32).toString("base64")}`;
}

/** Scheme, host and port of a URL: what the history records of an endpoint (a URL may hold a token). */
export function urlOrigin(url: string): string {
  return new URL(url).origin;
}

function toWebhook(row: Selectable<WebhookTable>): Webhook {
  return {
    id: row.id,
    url: row.url,
    description: row.description,
    events: JSON.parse(row.events) as WebhookEventFilter[],
    createdBy: { type: row.created_by_type, id: row.created_by_id },
    createdAt: row.created_at,
    secretRotatedAt: row.secret_rotated_at,
    previousSecretExpiresAt:
      row.previous_secret_expires_at !== null && row.previous_secret_expires_at > nowIso()
        ? row.previous_secret_expires_at
        : null,
  };
}

/** The API's view of a delivery row (its payload is not part of the log). */
export function toDelivery(row: Selectable<WebhookDeliveryTable>): WebhookDelivery {
  return {
    id: row.id,
    webhookId: row.webhook_id,
    messageId: row.message_id,
    eventType: row.event_type as WebhookEventType,
    activityId: row.activity_id,
    state: row.state,
    attempts: row.attempts,
    nextAttemptAt: row.state === "pending" ? row.next_attempt_at : null,
    lastAttemptAt: row.last_attempt_at,
    lastStatus: row.last_status,
    lastError: row.last_error,
    createdAt: row.created_at,
    deliveredAt: row.delivered_at,
    redeliveryOf: row.redelivery_of,
  };
}

/**
 * The org's webhook endpoints and their outbox. Endpoints are created, listed, rotated and removed
 * through the API; `enqueue` is the activity history's sink that turns each recorded event into
 * one delivery per subscribed endpoint, in the event's own transaction. Signing secrets are kept
 * only sealed and shown once, when made.
 */
export class WebhookService {
  constructor(
    private readonly db: Kysely<Database>,
    private readonly activity: ActivityService,
    private readonly box: SealedBox,
    private readonly policies: PolicyService,
    /** Told when deliveries were queued (the dispatcher wakes). */
    private readonly onQueued: () => void = () => undefined,
  ) {}

  /** Adds an endpoint; answers it with its signing secret, which is never shown again. */
  async create(caller: Caller, body: RouteBody<"createWebhook">): Promise<WebhookCreated> {
    const policy = await this.policies.get(caller.orgId);
    const denial = literalDestinationDenial(body.url, policy.webhooks?.allowCidrs ?? []);
    if (denial) {
      throw new AppError(
        "destination_not_allowed",
        `${urlOrigin(body.url)} is not a public address; an admin can allow its range in the org policy (webhooks.allowCidrs).`,
        { reason: denial },
      );
    }
    const count = await this.db
      .selectFrom("webhooks")
      .select((eb) => eb.fn.countAll<number>().as("n"))
      .where("org_id", "=", caller.orgId)
      .executeTakeFirstOrThrow();
    if (Number(count.n) >= MAX_WEBHOOKS_PER_ORG) {
      throw new AppError(
        "limit_exceeded",
        `An org may have ${MAX_WEBHOOKS_PER_ORG} webhook endpoints; remove one first.`,
        { field: "webhooks", requested: Number(count.n) + 1, maximum: MAX_WEBHOOKS_PER_ORG },
      );
    }
    const secret = newWebhookSecret();
    const row: Selectable<WebhookTable> = {
      id: newId("whk"),
      org_id: caller.orgId,
      url: body.url,
      description: body.description ?? null,
      events: JSON.stringify([...new Set(body.events)]),
      secret: this.box.seal(secret),
      previous_secret: null,
      previous_secret_expires_at: null,
      secret_rotated_at: null,
      created_by_type: caller.actor.type,
      created_by_id: caller.actor.id,
      created_at: nowIso(),
    };
    await this.db.insertInto("webhooks").values(row).execute();
    await this.activity.recordFor(caller, "webhook.create", webhookTarget(row.id), {
      origin: urlOrigin(row.url),
      events: JSON.parse(row.events) as unknown,
    });
    return { webhook: toWebhook(row), secret };
  }

  async list(caller: Caller): Promise<Webhook[]> {
    const rows = await this.db
      .selectFrom("webhooks")
      .selectAll()
      .where("org_id", "=", caller.orgId)
      .orderBy("created_at", "desc")
      .execute();
    return rows.map(toWebhook);
  }

  async get(caller: Caller, id: string): Promise<Webhook> {
    return toWebhook(await this.#row(caller.orgId, id));
  }

  /** Removes an endpoint with its delivery log; what it had pending is never sent. */
  async delete(caller: Caller, id: string): Promise<Webhook> {
    const row = await this.#row(caller.orgId, id);
    await this.db.transaction().execute(async (trx) => {
      await trx.deleteFrom("webhook_deliveries").where("webhook_id", "=", row.id).execute();
      await trx.deleteFrom("webhooks").where("id", "=", row.id).execute();
    });
    await this.activity.recordFor(caller, "webhook.delete", webhookTarget(row.id), {
      origin: urlOrigin(row.url),
    });
    return toWebhook(row);
  }

  /**
   * Replaces the signing secret and answers the new one (shown this once). The old one keeps
   * signing beside it for a day (receivers accept either of the signatures), so receivers can be
   * switched over without losing a delivery.
   */
  async rotate(caller: Caller, id: string): Promise<WebhookCreated> {
    const row = await this.#row(caller.orgId, id);
    const secret = newWebhookSecret();
    const now = Date.now();
    const fields = {
      secret: this.box.seal(secret),
      previous_secret: row.secret,
      previous_secret_expires_at: new Date(now + ROTATION_GRACE_MS).toISOString(),
      secret_rotated_at: new Date(now).toISOString(),
    };
    await this.db.updateTable("webhooks").set(fields).where("id", "=", row.id).execute();
    await this.activity.recordFor(caller, "webhook.rotate", webhookTarget(row.id), {
      previousSecretExpiresAt: fields.previous_secret_expires_at,
    });
    return { webhook: toWebhook({ ...row, ...fields }), secret };
  }

  /** The endpoint's delivery log, newest first. */
  async deliveries(
    caller: Caller,
    id: string,
    query: RouteQuery<"listWebhookDeliveries">,
  ): Promise<Page<WebhookDelivery>> {
    const hook = await this.#row(caller.orgId, id);
    let q = this.db
      .selectFrom("webhook_deliveries")
      .selectAll()
      .where("org_id", "=", caller.orgId)
      .where("webhook_id", "=", hook.id);
    if (query.state) q = q.where("state", "=", query.state);
    if (query.cursor) {
      const { c, i } = decodeCursor(query.cursor, deliveryCursor);
      q = q.where((eb) =>
        eb.or([eb("created_at", "<", c), eb.and([eb("created_at", "=", c), eb("id", "<", i)])]),
      );
    }
    const rows = await q
      .orderBy("created_at", "desc")
      .orderBy("id", "desc")
      .limit(query.limit + 1)
      .execute();
    const items = rows.slice(0, query.limit).map(toDelivery);
    const last = items.at(-1);
    return {
      items,
      nextCursor:
        rows.length > query.limit && last ? encodeCursor({ c: last.createdAt, i: last.id }) : null,
    };
  }

  /**
   * Queues a delivery's message again, due now, as a new delivery with the same message id (a
   * receiver that deduplicates by `webhook-id` sees the same message).
   */
  async redeliver(caller: Caller, id: string, deliveryId: string): Promise<WebhookDelivery> {
    const hook = await this.#row(caller.orgId, id);
    const original = await this.db
      .selectFrom("webhook_deliveries")
      .selectAll()
      .where("org_id", "=", caller.orgId)
      .where("webhook_id", "=", hook.id)
      .where("id", "=", deliveryId)
      .executeTakeFirst();
    if (!original)
      throw new AppError("not_found", `No delivery ${deliveryId} of webhook ${hook.id}.`, {
        resource: "webhook_delivery",
        id: deliveryId,
      });
    const now = nowIso();
    const row: Selectable<WebhookDeliveryTable> = {
      ...original,
      id: newId("whd", 14),
      state: "pending",
      attempts: 0,
      next_attempt_at: now,
      last_attempt_at: null,
      last_status: null,
      last_error: null,
      created_at: now,
      delivered_at: null,
      redelivery_of: original.id,
    };
    await this.db.insertInto("webhook_deliveries").values(row).execute();
    await this.activity.recordFor(caller, "webhook.redeliver", webhookTarget(hook.id), {
      deliveryId: row.id,
      redeliveryOf: original.id,
      messageId: original.message_id,
    });
    this.onQueued();
    return toDelivery(row);
  }

  /**
   * Sends the endpoint a `webhook.test` message: the `webhook.test` event recorded in the history
   * queues it (in the event's transaction, through `enqueue`), and it is signed, tried and retried
   * like any other. Returns its delivery.
   */
  async test(caller: Caller, id: string): Promise<WebhookDelivery> {
    const hook = await this.#row(caller.orgId, id);
    // The URL stays out of the history: receivers often embed a token in it.
    const event = await this.activity.recordFor(caller, TEST_ACTION, webhookTarget(hook.id), {});
    const row = await this.db
      .selectFrom("webhook_deliveries")
      .selectAll()
      .where("org_id", "=", caller.orgId)
      .where("webhook_id", "=", hook.id)
      .where("activity_id", "=", event.id)
      .executeTakeFirstOrThrow();
    return toDelivery(row);
  }

  /**
   * The activity history's sink: when `event` is one endpoints can be told about, queues one
   * delivery per endpoint of its org that subscribed to its type, in the event's transaction.
   */
  readonly enqueue = async (trx: Transaction<Database>, event: ActivityEvent): Promise<void> => {
    const testOf = event.action === TEST_ACTION ? event.target?.id : undefined;
    const type: WebhookMessageType | null = testOf ? "webhook.test" : webhookEventTypeOf(event);
    if (type === null) return;
    let query = trx
      .selectFrom("webhooks")
      .select(["id", "events"])
      .where("org_id", "=", event.orgId);
    if (testOf) query = query.where("id", "=", testOf);
    const hooks = await query.execute();
    // A test message goes to its one endpoint whatever it subscribed to.
    const subscribed =
      type === "webhook.test"
        ? hooks
        : hooks.filter((hook) => webhookWants(JSON.parse(hook.events) as string[], type));
    if (subscribed.length === 0) return;
    const payload = JSON.stringify(await webhookPayloadOf(trx, type, event));
    await queueMessage(trx, event.orgId, subscribed, type, event.id, payload);
    // The dispatcher's first query waits for this transaction's connection, so it sees the rows.
    setImmediate(this.onQueued);
  };

  /**
   * Queues an `audit.checkpoint` message with a newly signed checkpoint to every endpoint of its
   * org that subscribed to it, so that someone outside the server holds the checkpoint. Queued
   * after the checkpoint is stored (a checkpoint is no event of the history it signs): a crash
   * between the two loses this one message; the next checkpoint covers it.
   */
  async enqueueCheckpoint(checkpoint: Checkpoint): Promise<void> {
    const type = "audit.checkpoint";
    const hooks = await this.db
      .selectFrom("webhooks")
      .select(["id", "events"])
      .where("org_id", "=", checkpoint.orgId)
      .execute();
    const subscribed = hooks.filter((hook) =>
      webhookWants(JSON.parse(hook.events) as string[], type),
    );
    if (subscribed.length === 0) return;
    const payload: WebhookPayload = {
      type,
      timestamp: checkpoint.time,
      data: { orgId: checkpoint.orgId, checkpoint },
    };
    await queueMessage(
      this.db,
      checkpoint.orgId,
      subscribed,
      type,
      checkpoint.id,
      JSON.stringify(payload),
    );
    this.onQueued();
  }

  async #row(orgId: string, id: string): Promise<Selectable<WebhookTable>> {
    const row = await this.db
      .selectFrom("webhooks")
      .selectAll()
      .where("org_id", "=", orgId)
      .where("id", "=", id)
      .executeTakeFirst();
    if (!row) throw new AppError("not_found", `No webhook ${id}.`, { resource: "webhook", id });
    return row;
  }
}

function webhookTarget(id: string): { type: string; id: string } {
  return { type: "webhook", id };
}

/** Queues one message (one `webhook-id`) to each of `hooks`, due now. */
async function queueMessage(
  db: Kysely<Database>,
  orgId: string,
  hooks: readonly { id: string }[],
  type: WebhookMessageType,
  sourceId: string,
  payload: string,
): Promise<void> {
  const messageId = newId("msg", 16);
  const now = nowIso();
  await db
    .insertInto("webhook_deliveries")
    .values(
      hooks.map((hook) => ({
        id: newId("whd", 14),
        org_id: orgId,
        webhook_id: hook.id,
        message_id: messageId,
        event_type: type,
        activity_id: sourceId,
        payload,
        state: "pending" as const,
        attempts: 0,
        next_attempt_at: now,
        last_attempt_at: null,
        last_status: null,
        last_error: null,
        created_at: now,
        delivered_at: null,
        redelivery_of: null,
      })),
    )
    .execute();
}
