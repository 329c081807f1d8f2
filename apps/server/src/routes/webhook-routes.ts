import type { WebhookService } from "../webhooks/webhook-service.js";
import type { Handlers } from "./register-routes.js";

/** Webhook endpoints: create (secret shown once), list, get, remove, rotate, delivery log, redeliver, test. */
export function webhookHandlers(
  webhooks: WebhookService,
): Pick<
  Handlers,
  | "createWebhook"
  | "listWebhooks"
  | "getWebhook"
  | "deleteWebhook"
  | "rotateWebhookSecret"
  | "listWebhookDeliveries"
  | "redeliverWebhook"
  | "testWebhook"
> {
  return {
    createWebhook: async ({ caller, body }) => webhooks.create(caller, body),
    listWebhooks: async ({ caller }) => ({ items: await webhooks.list(caller) }),
    getWebhook: async ({ caller, params }) => webhooks.get(caller, params.id),
    deleteWebhook: async ({ caller, params }) => webhooks.delete(caller, params.id),
    rotateWebhookSecret: async ({ caller, params }) => webhooks.rotate(caller, params.id),
    listWebhookDeliveries: async ({ caller, params, query }) =>
      webhooks.deliveries(caller, params.id, query),
    redeliverWebhook: async ({ caller, params }) =>
      webhooks.redeliver(caller, params.id, params.deliveryId),
    testWebhook: async ({ caller, params }) => webhooks.test(caller, params.id),
  };
}
