import { WebhookDeliveryState, WebhookEventFilter } from "@shells/contract";
import type { Webhook, WebhookCreated, WebhookDelivery } from "@l1fe/shells";
import { Option, type Command } from "commander";
import type { CliContext } from "../context.js";
import { formatAge, formatKeyValues, formatTable } from "../format.js";
import { parsePositiveInt } from "../parsers.js";

interface WebhookCreateFlags {
  event: WebhookEventFilter[];
  description?: string;
}

/** The event types and groups an endpoint can subscribe to, for `--event`'s choices. */
const EVENT_CHOICES = WebhookEventFilter.options.flatMap((option) => option.options);

/** One `shells webhooks ls` row. */
export function webhookRow(webhook: Webhook, nowMs: number): string[] {
  return [
    webhook.id,
    webhook.url,
    webhook.events.join(","),
    formatAge(webhook.createdAt, nowMs),
    webhook.secretRotatedAt === null ? "-" : `${formatAge(webhook.secretRotatedAt, nowMs)} ago`,
    webhook.description ?? "",
  ];
}

/** One `shells webhooks deliveries` row. */
export function deliveryRow(delivery: WebhookDelivery, nowMs: number): string[] {
  return [
    delivery.id,
    delivery.eventType,
    delivery.state,
    String(delivery.attempts),
    delivery.lastStatus === null ? "-" : String(delivery.lastStatus),
    formatAge(delivery.createdAt, nowMs),
    delivery.lastError ?? "",
  ];
}

/**
 * What `shells webhooks create` and `rotate` print: the endpoint, then its signing secret on a line
 * of its own. The server keeps the secret only sealed and never shows it again.
 */
export function formatCreatedWebhook(created: WebhookCreated, verb: "created" | "rotated"): string {
  const { webhook, secret } = created;
  return [
    formatKeyValues([
      ["webhook", webhook.id],
      ["url", webhook.url],
      ["events", webhook.events.join(", ")],
      ...(webhook.previousSecretExpiresAt
        ? [["old secret signs until", webhook.previousSecretExpiresAt] as const]
        : []),
    ]),
    "",
    `secret: ${secret}`,
    "",
    `warning: this ${verb === "created" ? "" : "new "}secret is shown once and never again; give it to the receiver now (verify with verifyWebhook from @l1fe/shells).`,
  ].join("\n");
}

/** `shells webhooks create|ls|rm|deliveries|redeliver|rotate|test`: the org's webhook endpoints. */
export function registerWebhooksCommand(program: Command, ctx: CliContext): void {
  const webhooks = program
    .command("webhooks")
    .description("manage webhook endpoints and their delivery logs (admins)");

  webhooks
    .command("create")
    .description("add an endpoint; its signing secret is printed this once only")
    .argument("<url>", "where deliveries are POSTed (http or https)")
    .addOption(
      new Option("--event <type...>", "an event type or group to send (repeatable)")
        .choices(EVENT_CHOICES)
        .makeOptionMandatory(),
    )
    .option("--description <text>", "what the endpoint is for")
    .action(async (url: string, flags: WebhookCreateFlags) => {
      const created = await ctx.client().webhooks.create({
        url,
        events: flags.event,
        ...(flags.description !== undefined ? { description: flags.description } : {}),
      });
      if (ctx.json) ctx.printJson(created);
      else ctx.print(formatCreatedWebhook(created, "created"));
    });

  webhooks
    .command("ls")
    .alias("list")
    .description("list endpoints; secrets are never listed")
    .action(async () => {
      const items = await ctx.client().webhooks.list();
      if (ctx.json) return ctx.printJson(items);
      if (items.length === 0) return ctx.printErr("no webhooks");
      const now = ctx.now();
      ctx.print(
        formatTable(
          ["id", "url", "events", "age", "rotated", "description"],
          items.map((webhook) => webhookRow(webhook, now)),
        ),
      );
    });

  webhooks
    .command("rm")
    .alias("delete")
    .description("remove an endpoint; what it had pending is never sent")
    .argument("<id>", "webhook id (see `shells webhooks ls`)")
    .action(async (id: string) => {
      const webhook = await ctx.client().webhooks.delete(id);
      if (ctx.json) ctx.printJson(webhook);
      else ctx.print(`removed ${webhook.id} (${webhook.url})`);
    });

  webhooks
    .command("rotate")
    .description("replace the signing secret (the old one signs beside it for a day)")
    .argument("<id>", "webhook id")
    .action(async (id: string) => {
      const rotated = await ctx.client().webhooks.rotateSecret(id);
      if (ctx.json) ctx.printJson(rotated);
      else ctx.print(formatCreatedWebhook(rotated, "rotated"));
    });

  webhooks
    .command("deliveries")
    .description("show an endpoint's delivery log, newest first")
    .argument("<id>", "webhook id")
    .addOption(
      new Option("--state <state>", "only deliveries in this state").choices(
        WebhookDeliveryState.options,
      ),
    )
    .option("--limit <count>", "show at most this many deliveries", parsePositiveInt, 50)
    .action(async (id: string, flags: { state?: WebhookDelivery["state"]; limit: number }) => {
      const items: WebhookDelivery[] = [];
      for await (const delivery of ctx
        .client()
        .webhooks.deliveries(id, { state: flags.state, limit: Math.min(flags.limit, 200) })) {
        items.push(delivery);
        if (items.length >= flags.limit) break;
      }
      if (ctx.json) return ctx.printJson(items);
      if (items.length === 0) return ctx.printErr("no deliveries");
      const now = ctx.now();
      ctx.print(
        formatTable(
          ["id", "event", "state", "tries", "status", "age", "last error"],
          items.map((delivery) => deliveryRow(delivery, now)),
        ),
      );
    });

  webhooks
    .command("redeliver")
    .description("send a delivery's message again, now (same webhook-id)")
    .argument("<id>", "webhook id")
    .argument("<delivery>", "delivery id (see `shells webhooks deliveries`)")
    .action(async (id: string, deliveryId: string) => {
      const delivery = await ctx.client().webhooks.redeliver(id, deliveryId);
      if (ctx.json) ctx.printJson(delivery);
      else ctx.print(`queued ${delivery.id} (again: ${delivery.redeliveryOf ?? deliveryId})`);
    });

  webhooks
    .command("test")
    .description("send the endpoint a signed webhook.test message (see it in `deliveries`)")
    .argument("<id>", "webhook id")
    .action(async (id: string) => {
      const delivery = await ctx.client().webhooks.test(id);
      if (ctx.json) ctx.printJson(delivery);
      else ctx.print(`queued ${delivery.id} (webhook.test, message ${delivery.messageId})`);
    });
}
