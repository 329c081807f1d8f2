/**
 * `shells.webhooks`: the org's webhook endpoints, their delivery logs, redelivery and test messages. Admins only.
 * Verify what an endpoint receives with {@link verifyWebhook}.
 */
import type {
  Webhook,
  WebhookCreate as WebhookCreateSchema,
  WebhookCreated,
  WebhookDelivery,
  WebhookDeliveryState,
  Page,
} from "@shells/contract";
import { segment, type ApiCall } from "./internal/api-call.js";
import type { SchemaInput } from "./internal/schema-types.js";
import { PaginatedList } from "./paginated-list.js";
import type { RequestOptions } from "./shells-client.js";

/** Body of `webhooks.create()`: the endpoint's URL, the event types it is sent, a description. */
export type WebhookCreate = SchemaInput<typeof WebhookCreateSchema>;

/** Filters of {@link WebhooksApi.deliveries}. */
export interface ListWebhookDeliveriesQuery {
  /** Only deliveries in this state: `pending`, `delivered` or `failed` (given up). */
  state?: SchemaInput<typeof WebhookDeliveryState> | undefined;
  /** Page size, 1–200 (default 50). Iteration still walks every page. */
  limit?: number | undefined;
  /** Start at this cursor instead of the first page. */
  cursor?: string | undefined;
}

/** `shells.webhooks`: endpoints, secrets, delivery logs. */
export class WebhooksApi {
  readonly #call: ApiCall;

  /** @internal The client builds its namespaces; use `shells.webhooks`. */
  constructor(call: ApiCall) {
    this.#call = call;
  }

  /**
   * Adds an endpoint. Answers it with its signing `secret` (`whsec_…`), which the server shows this
   * once: keep it where the receiver can read it. Sent once, never retried: the server does not
   * keep this answer for replays (it holds the secret).
   */
  create(body: WebhookCreate, options: RequestOptions = {}): Promise<WebhookCreated> {
    return this.#call<WebhookCreated>("POST", "/api/v1/webhooks", { ...options, body });
  }

  /** The org's endpoints; secrets are never listed. */
  async list(options: RequestOptions = {}): Promise<Webhook[]> {
    const { items } = await this.#call<{ items: Webhook[] }>("GET", "/api/v1/webhooks", options);
    return items;
  }

  get(webhookId: string, options: RequestOptions = {}): Promise<Webhook> {
    return this.#call<Webhook>("GET", `/api/v1/webhooks/${segment(webhookId)}`, options);
  }

  /** Removes an endpoint; what it had pending is never sent. */
  delete(webhookId: string, options: RequestOptions = {}): Promise<Webhook> {
    return this.#call<Webhook>("DELETE", `/api/v1/webhooks/${segment(webhookId)}`, options);
  }

  /**
   * Replaces the signing secret and answers the new one (shown once). For a day, deliveries carry
   * signatures by both the old and the new secret, so receivers can switch without a gap.
   */
  rotateSecret(webhookId: string, options: RequestOptions = {}): Promise<WebhookCreated> {
    return this.#call<WebhookCreated>(
      "POST",
      `/api/v1/webhooks/${segment(webhookId)}/rotate`,
      options,
    );
  }

  /** The endpoint's delivery log, newest first: state, tries, last status and error of each. */
  deliveries(
    webhookId: string,
    query: ListWebhookDeliveriesQuery = {},
    options: RequestOptions = {},
  ): PaginatedList<WebhookDelivery> {
    const { cursor, ...filters } = query;
    return new PaginatedList<WebhookDelivery>(
      (pageCursor) =>
        this.#call<Page<WebhookDelivery>>(
          "GET",
          `/api/v1/webhooks/${segment(webhookId)}/deliveries`,
          { ...options, query: { ...filters, cursor: pageCursor } },
        ),
      cursor,
    );
  }

  /** Sends a delivery's message again, now, as a new delivery with the same `webhook-id`. */
  redeliver(
    webhookId: string,
    deliveryId: string,
    options: RequestOptions = {},
  ): Promise<WebhookDelivery> {
    return this.#call<WebhookDelivery>(
      "POST",
      `/api/v1/webhooks/${segment(webhookId)}/deliveries/${segment(deliveryId)}/redeliver`,
      options,
    );
  }

  /**
   * Sends the endpoint a signed `webhook.test` message (whatever it subscribed to), through the
   * outbox like any other; answers its delivery, which the delivery log then shows.
   */
  test(webhookId: string, options: RequestOptions = {}): Promise<WebhookDelivery> {
    return this.#call<WebhookDelivery>(
      "POST",
      `/api/v1/webhooks/${segment(webhookId)}/test`,
      options,
    );
  }
}
