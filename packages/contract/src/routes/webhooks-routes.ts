import { z } from "zod";
import { pageOf } from "../pages.js";
import {
  Webhook,
  WebhookCreate,
  WebhookCreated,
  WebhookDelivery,
  WebhookDeliveryQuery,
} from "../webhooks.js";
import type { RouteSpec } from "./route-spec.js";

const webhookId = z.strictObject({ id: z.string().min(1).max(64) });

/**
 * Webhooks: org-level endpoints told about activity as it happens, signed per Standard Webhooks.
 * Admins only: an endpoint's URL can itself be a credential (many receivers embed a token in it),
 * and its deliveries carry the org's activity.
 */
export const webhooksRoutes = {
  createWebhook: {
    method: "POST",
    path: "/api/v1/webhooks",
    summary:
      "Add a webhook endpoint (admins). Answers its signing secret (whsec_…) this once; it is stored sealed.",
    tag: "webhooks",
    body: WebhookCreate,
    response: WebhookCreated,
    successStatus: 201,
    scope: "shells:instances:control",
    minRole: "admin",
    // Not idempotent on purpose: a replayed answer is stored as it was sent, and this one holds the
    // signing secret, which must rest only sealed.
    example: {
      body: { url: "https://hooks.example.com/shells", events: ["shell.*", "run.finished"] },
    },
  },
  listWebhooks: {
    method: "GET",
    path: "/api/v1/webhooks",
    summary: "The org's webhook endpoints (admins); secrets are never listed.",
    tag: "webhooks",
    response: z.strictObject({ items: z.array(Webhook) }),
    successStatus: 200,
    scope: "shells:instances:read",
    minRole: "admin",
  },
  getWebhook: {
    method: "GET",
    path: "/api/v1/webhooks/:id",
    summary: "One webhook endpoint (admins).",
    tag: "webhooks",
    params: webhookId,
    response: Webhook,
    successStatus: 200,
    scope: "shells:instances:read",
    minRole: "admin",
    example: { params: { id: "{webhook}" } },
  },
  deleteWebhook: {
    method: "DELETE",
    path: "/api/v1/webhooks/:id",
    summary: "Remove a webhook endpoint (admins); its pending deliveries are dropped.",
    tag: "webhooks",
    params: webhookId,
    response: Webhook,
    successStatus: 200,
    scope: "shells:instances:control",
    minRole: "admin",
    example: { params: { id: "{webhook}" } },
  },
  rotateWebhookSecret: {
    method: "POST",
    path: "/api/v1/webhooks/:id/rotate",
    summary:
      "Replace the endpoint's signing secret (admins). For 24 hours deliveries carry signatures by both.",
    tag: "webhooks",
    params: webhookId,
    response: WebhookCreated,
    successStatus: 200,
    scope: "shells:instances:control",
    minRole: "admin",
    example: { params: { id: "{webhook}" } },
  },
  listWebhookDeliveries: {
    method: "GET",
    path: "/api/v1/webhooks/:id/deliveries",
    summary: "The endpoint's delivery log, newest first (admins).",
    tag: "webhooks",
    params: webhookId,
    query: WebhookDeliveryQuery,
    response: pageOf(WebhookDelivery),
    successStatus: 200,
    scope: "shells:instances:read",
    minRole: "admin",
    example: { params: { id: "{webhook}" } },
  },
  redeliverWebhook: {
    method: "POST",
    path: "/api/v1/webhooks/:id/deliveries/:deliveryId/redeliver",
    summary:
      "Send a delivery's message again, now, as a new delivery with the same webhook-id (admins).",
    tag: "webhooks",
    params: z.strictObject({
      id: z.string().min(1).max(64),
      deliveryId: z.string().min(1).max(64),
    }),
    response: WebhookDelivery,
    successStatus: 201,
    scope: "shells:instances:control",
    minRole: "admin",
    example: { params: { id: "{webhook}", deliveryId: "{delivery}" } },
  },
  testWebhook: {
    method: "POST",
    path: "/api/v1/webhooks/:id/test",
    summary: "Send the endpoint a signed `webhook.test` message through the outbox (admins).",
    description:
      "The message goes to this endpoint only, whatever it subscribed to, and is tried and retried like any other; its delivery is in the endpoint's log. `data.activity` is the recorded `webhook.test` event.",
    tag: "webhooks",
    params: webhookId,
    response: WebhookDelivery,
    successStatus: 201,
    scope: "shells:instances:control",
    minRole: "admin",
    example: { params: { id: "{webhook}" } },
  },
} as const satisfies Record<string, RouteSpec>;
