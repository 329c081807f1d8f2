import { z } from "zod";
import { ActivityEvent } from "./activity.js";
import { Checkpoint } from "./checkpoints.js";
import { PrincipalRef } from "./iam.js";
import { Run } from "./runs.js";

/**
 * What a webhook endpoint can be told about. Each is derived from one kind of activity event (see
 * docs/architecture.md): a shell's lifecycle, a run that finished (with its structured result), an
 * approval requested or decided, a project cap's warning or stop, an egress denial.
 */
export const WebhookEventType = z.enum([
  "shell.created",
  "shell.failed",
  "shell.started",
  "shell.stopped",
  "shell.restarted",
  "shell.restored",
  "shell.wiped",
  "shell.reinstalled",
  "shell.deleted",
  "run.finished",
  "approval.requested",
  "approval.decided",
  "quota.warning",
  "quota.stopped",
  "egress.denied",
  "audit.checkpoint",
]);
export type WebhookEventType = z.infer<typeof WebhookEventType>;

/**
 * What a message is about: an event type, or `webhook.test`, the message `POST
 * /api/v1/webhooks/:id/test` sends to one endpoint whatever it subscribed to (never subscribable).
 */
export const WebhookMessageType = z.union([WebhookEventType, z.literal("webhook.test")]);
export type WebhookMessageType = z.infer<typeof WebhookMessageType>;

/** An event type, every type of a group (`shell.*`), or every type (`*`). */
export const WebhookEventFilter = z.union([
  WebhookEventType,
  z.enum(["*", "shell.*", "run.*", "approval.*", "quota.*", "egress.*", "audit.*"]),
]);
export type WebhookEventFilter = z.infer<typeof WebhookEventFilter>;

/** Whether an endpoint subscribed with `filters` is told about `type`. */
export function webhookWants(filters: readonly string[], type: WebhookEventType): boolean {
  const group = `${type.slice(0, type.indexOf("."))}.*`;
  return filters.some((f) => f === "*" || f === type || f === group);
}

/**
 * Where deliveries go: an http(s) URL without credentials or a fragment. The server resolves its
 * host at every delivery and refuses private, loopback and link-local addresses unless the org's
 * policy allows them (`webhooks.allowCidrs`).
 */
export const WebhookUrl = z
  .url({ protocol: /^https?$/ })
  .max(2048)
  .refine((value) => {
    const url = new URL(value);
    return !url.username && !url.password && !url.hash;
  }, "must be an http(s) URL without credentials or a fragment");

/** Body of `POST /api/v1/webhooks`. */
export const WebhookCreate = z.strictObject({
  url: WebhookUrl,
  /** Event types (or `shell.*`-style groups, or `*`) the endpoint is sent. */
  events: z.array(WebhookEventFilter).min(1).max(32),
  description: z.string().max(200).optional(),
});

/** A webhook endpoint as listed: never its signing secret. */
export const Webhook = z.strictObject({
  id: z.string(),
  url: z.string(),
  description: z.string().nullable(),
  events: z.array(WebhookEventFilter),
  createdBy: PrincipalRef,
  createdAt: z.iso.datetime(),
  /** When the signing secret was last replaced; null when it is the first one. */
  secretRotatedAt: z.iso.datetime().nullable(),
  /** Until then deliveries also carry a signature by the secret it replaced; null when none. */
  previousSecretExpiresAt: z.iso.datetime().nullable(),
});
export type Webhook = z.infer<typeof Webhook>;

/**
 * A new endpoint, or one whose secret was just rotated, with its signing secret (`whsec_…`,
 * Standard Webhooks): shown this once, stored only sealed.
 */
export const WebhookCreated = z.strictObject({ webhook: Webhook, secret: z.string() });
export type WebhookCreated = z.infer<typeof WebhookCreated>;

/** Where a delivery stands: waiting (to be tried, or tried again), delivered, or given up on. */
export const WebhookDeliveryState = z.enum(["pending", "delivered", "failed"]);

/** One message to one endpoint, and what its tries did: the endpoint's delivery log. */
export const WebhookDelivery = z.strictObject({
  id: z.string(),
  webhookId: z.string(),
  /** The `webhook-id` header: the same for every try and every redelivery of this message. */
  messageId: z.string(),
  eventType: WebhookMessageType,
  /**
   * The activity event the message was made from; for `audit.checkpoint`, the checkpoint's id (a
   * checkpoint is not an event of the history it signs).
   */
  activityId: z.string(),
  state: WebhookDeliveryState,
  attempts: z.int(),
  /** When the next try is due; null once delivered or given up. */
  nextAttemptAt: z.iso.datetime().nullable(),
  lastAttemptAt: z.iso.datetime().nullable(),
  /** The HTTP status of the last answer; null when there was none. */
  lastStatus: z.int().nullable(),
  /** Why the last try failed (a refused address, a timeout, an HTTP status); null after success. */
  lastError: z.string().nullable(),
  createdAt: z.iso.datetime(),
  deliveredAt: z.iso.datetime().nullable(),
  /** The delivery this one sends again, for a redelivery. */
  redeliveryOf: z.string().nullable(),
});
export type WebhookDelivery = z.infer<typeof WebhookDelivery>;

/** Query of `GET /api/v1/webhooks/:id/deliveries`. */
export const WebhookDeliveryQuery = z.strictObject({
  state: WebhookDeliveryState.optional(),
  limit: z.coerce.number().int().min(1).max(200).default(50),
  cursor: z.string().max(512).optional(),
});

/** The largest run result a `run.finished` message carries inline (bytes of JSON). */
export const WEBHOOK_RESULT_LIMIT_BYTES = 64 * 1024;

/**
 * The JSON body of every delivery, in the Standard Webhooks shape. `data.activity` is the activity
 * event the message was made from (its `hash` can be checked against the org's chain); a
 * `run.finished` message also carries the run with its structured result, and an
 * `audit.checkpoint` message carries the signed checkpoint instead of an event.
 */
export const WebhookPayload = z.strictObject({
  type: WebhookMessageType,
  timestamp: z.iso.datetime(),
  data: z.strictObject({
    orgId: z.string(),
    /** The event the message is about; absent only from `audit.checkpoint`. */
    activity: ActivityEvent.optional(),
    /**
     * `audit.checkpoint`: a signed checkpoint of the org's activity history, sent as it is signed
     * so that someone outside the server holds it (`shells audit verify --checkpoint FILE` takes it
     * as it is).
     */
    checkpoint: Checkpoint.optional(),
    run: Run.optional(),
    /** Set when the run's result was larger than `WEBHOOK_RESULT_LIMIT_BYTES` and left out. */
    runResultOmitted: z.strictObject({ bytes: z.int(), limitBytes: z.int() }).optional(),
  }),
});
export type WebhookPayload = z.infer<typeof WebhookPayload>;
