import type { Webhook, WebhookCreated, WebhookDelivery } from "@l1fe/shells";
import { WebhookCreate, WebhookEventType } from "@shells/contract";
import { useState } from "react";
import { Field, FormDialog, parseForm } from "./form-dialog.js";
import { SecretOnceDialog } from "./secret-once-dialog.js";
import { canControl, isAdmin, type Session } from "./session.js";
import { usePoll } from "./use-poll.js";
import {
  Button,
  ErrorNote,
  Notice,
  Panel,
  StatusBadge,
  Table,
  Tag,
  fieldClass,
  when,
} from "./ui.js";

/** Event types by group (`shell`, `run`, …), in the contract's order. */
const EVENT_GROUPS: { group: string; types: string[] }[] = WebhookEventType.options.reduce<
  { group: string; types: string[] }[]
>((groups, type) => {
  const group = type.slice(0, type.indexOf("."));
  const found = groups.find((g) => g.group === group);
  if (found) found.types.push(type);
  else groups.push({ group, types: [type] });
  return groups;
}, []);

const DELIVERY_STATES = ["pending", "delivered", "failed"] as const;
type DeliveryState = (typeof DELIVERY_STATES)[number];

/**
 * Webhook endpoints of the org (admins only, as the API has it): add one, see its signing secret
 * the one time the API answers it (on creation or rotation), remove one, and read an endpoint's
 * delivery log (state, tries, last status and error) and send a delivery again.
 */
export function WebhooksPage({
  session,
  openWebhookId,
  onOpenWebhook,
}: {
  session: Session;
  openWebhookId: string | null;
  onOpenWebhook: (id: string | null) => void;
}) {
  if (!isAdmin(session.principal)) {
    return (
      <Panel title="Webhooks">
        <p className="px-4 py-8 text-center text-sm text-zinc-500">
          Webhook endpoints and their deliveries are shown to the org&apos;s admins only: an
          endpoint&apos;s URL can itself be a credential.
        </p>
      </Panel>
    );
  }
  return (
    <AdminWebhooks session={session} openWebhookId={openWebhookId} onOpenWebhook={onOpenWebhook} />
  );
}

function AdminWebhooks({
  session,
  openWebhookId,
  onOpenWebhook,
}: {
  session: Session;
  openWebhookId: string | null;
  onOpenWebhook: (id: string | null) => void;
}) {
  const { client } = session;
  const webhooks = usePoll(() => client.webhooks.list(), 10_000);
  const manage = canControl(session.principal);
  const [creating, setCreating] = useState(false);
  const [rotating, setRotating] = useState<Webhook | null>(null);
  const [deleting, setDeleting] = useState<Webhook | null>(null);
  const [secret, setSecret] = useState<WebhookCreated | null>(null);
  const [notice, setNotice] = useState<string | null>(null);
  const open = webhooks.data?.find((webhook) => webhook.id === openWebhookId);

  return (
    <div className="space-y-6">
      <Panel title="Webhooks">
        <div className="flex items-center justify-between gap-4 px-4 py-3">
          <p className="text-sm text-zinc-500 dark:text-zinc-400">
            Endpoints told about the org&apos;s activity as it happens, signed per Standard
            Webhooks. The signing secret is shown once, when it is made.
          </p>
          {manage && (
            <Button variant="primary" onClick={() => setCreating(true)}>
              + New endpoint
            </Button>
          )}
        </div>
        <Notice text={notice} />
        <ErrorNote error={webhooks.error} />
        <Table
          label="Webhooks"
          headers={["URL", "Events", "Description", "Created", "Secret rotated", ""]}
          empty="No webhook endpoints yet."
          rows={webhooks.data?.map((webhook) => [
            <span className="font-mono text-xs break-all">{webhook.url}</span>,
            <div className="flex flex-wrap gap-1">
              {webhook.events.map((event) => (
                <Tag key={event}>{event}</Tag>
              ))}
            </div>,
            <span className="text-xs">{webhook.description ?? "—"}</span>,
            <span className="text-xs">
              {when(webhook.createdAt)}
              <br />
              <span className="text-zinc-500">
                by {webhook.createdBy.type}:{webhook.createdBy.id}
              </span>
            </span>,
            <span className="text-xs">{when(webhook.secretRotatedAt)}</span>,
            <div className="flex gap-2">
              <Button
                aria-label={`Deliveries of ${webhook.url}`}
                onClick={() => onOpenWebhook(webhook.id)}
              >
                Deliveries
              </Button>
              {manage && (
                <>
                  <Button
                    variant="ghost"
                    aria-label={`Rotate the secret of ${webhook.url}`}
                    onClick={() => setRotating(webhook)}
                  >
                    Rotate
                  </Button>
                  <Button
                    variant="ghost"
                    aria-label={`Delete ${webhook.url}`}
                    onClick={() => setDeleting(webhook)}
                  >
                    Delete
                  </Button>
                </>
              )}
            </div>,
          ])}
        />
      </Panel>

      {openWebhookId !== null && (
        <DeliveriesPanel
          key={openWebhookId}
          session={session}
          webhookId={openWebhookId}
          webhook={open}
          manage={manage}
          onClose={() => onOpenWebhook(null)}
        />
      )}

      {creating && (
        <CreateWebhookDialog
          session={session}
          onClose={() => setCreating(false)}
          onCreated={(created) => {
            setCreating(false);
            setSecret(created);
            setNotice(`Added ${created.webhook.url}.`);
            webhooks.refresh();
          }}
        />
      )}
      {rotating && (
        <FormDialog
          title="Rotate the signing secret"
          onClose={() => setRotating(null)}
          onSubmit={async () => {
            const rotated = await client.webhooks.rotateSecret(rotating.id);
            setRotating(null);
            setSecret(rotated);
            setNotice(`Rotated the secret of ${rotated.webhook.url}.`);
            webhooks.refresh();
          }}
          submitLabel="Rotate secret"
          busyLabel="Rotating…"
        >
          <p className="text-sm text-zinc-600 dark:text-zinc-300">
            A new secret for <span className="font-mono break-all">{rotating.url}</span>, shown
            once. For 24 hours deliveries carry signatures by both the old and the new secret, so
            the receiver can switch without a gap.
          </p>
        </FormDialog>
      )}
      {deleting && (
        <FormDialog
          title="Delete the endpoint"
          onClose={() => setDeleting(null)}
          onSubmit={async () => {
            const removed = await client.webhooks.delete(deleting.id);
            setDeleting(null);
            if (openWebhookId === removed.id) onOpenWebhook(null);
            setNotice(`Deleted ${removed.url}; what it had pending is never sent.`);
            webhooks.refresh();
          }}
          submitLabel="Delete endpoint"
          busyLabel="Deleting…"
          danger
        >
          <p className="text-sm text-zinc-600 dark:text-zinc-300">
            <span className="font-mono break-all">{deleting.url}</span> is told about nothing more,
            and its pending deliveries are dropped.
          </p>
        </FormDialog>
      )}
      {secret && (
        <SecretOnceDialog
          title="Signing secret"
          secret={secret.secret}
          testId="webhook-secret"
          onClose={() => setSecret(null)}
        >
          Deliveries to <span className="font-mono break-all">{secret.webhook.url}</span> are signed
          with this secret. Store it where the receiver reads it: it is shown now and never again
          (the server keeps it sealed).
        </SecretOnceDialog>
      )}
    </div>
  );
}

function CreateWebhookDialog({
  session,
  onClose,
  onCreated,
}: {
  session: Session;
  onClose: () => void;
  onCreated: (created: WebhookCreated) => void;
}) {
  const [url, setUrl] = useState("https://");
  const [events, setEvents] = useState<string[]>([]);
  const [description, setDescription] = useState("");
  const toggle = (filter: string, on: boolean) =>
    setEvents((list) => (on ? [...list, filter] : list.filter((entry) => entry !== filter)));
  const check = (filter: string, label = filter, disabled = false) => (
    <label key={filter} className="flex items-center gap-1.5 font-mono text-xs">
      <input
        type="checkbox"
        checked={events.includes(filter)}
        disabled={disabled}
        onChange={(event) => toggle(filter, event.target.checked)}
      />
      {label}
    </label>
  );
  const submit = async () => {
    const body = parseForm(WebhookCreate, {
      url: url.trim(),
      events,
      ...(description.trim() ? { description: description.trim() } : {}),
    });
    onCreated(await session.client.webhooks.create(body));
  };
  const everything = events.includes("*");
  return (
    <FormDialog
      title="New webhook endpoint"
      onClose={onClose}
      onSubmit={submit}
      submitLabel="Add endpoint"
      busyLabel="Adding…"
      wide
    >
      <Field
        label="URL"
        hint="Its host is resolved at every delivery; private and loopback addresses are refused unless the org's policy allows them (webhooks.allowCidrs)."
      >
        <input
          value={url}
          onChange={(event) => setUrl(event.target.value)}
          autoComplete="off"
          className={`${fieldClass} w-full font-mono`}
        />
      </Field>
      <fieldset className="space-y-2 text-sm">
        <legend className="mb-1.5 font-medium">Events</legend>
        {check("*", "* (every event)")}
        <div className="grid gap-3 sm:grid-cols-2">
          {EVENT_GROUPS.map(({ group, types }) => {
            const wholeGroup = everything || events.includes(`${group}.*`);
            return (
              <div
                key={group}
                role="group"
                aria-label={`${group} events`}
                className="space-y-1 rounded-md border border-zinc-200 p-2 dark:border-zinc-800"
              >
                {check(`${group}.*`, `${group}.*`, everything)}
                <div className="flex flex-wrap gap-x-3 gap-y-1 pl-4">
                  {types.map((type) => check(type, type, wholeGroup))}
                </div>
              </div>
            );
          })}
        </div>
      </fieldset>
      <Field label="Description (optional)">
        <input
          value={description}
          onChange={(event) => setDescription(event.target.value)}
          autoComplete="off"
          className={`${fieldClass} w-full`}
        />
      </Field>
    </FormDialog>
  );
}

/** One endpoint's delivery log, newest first, live; a delivery can be sent again. */
function DeliveriesPanel({
  session,
  webhookId,
  webhook,
  manage,
  onClose,
}: {
  session: Session;
  webhookId: string;
  webhook: Webhook | undefined;
  manage: boolean;
  onClose: () => void;
}) {
  const { client } = session;
  const [state, setState] = useState<DeliveryState | "">("");
  const deliveries = usePoll(
    async () =>
      (
        await client.webhooks
          .deliveries(webhookId, { limit: 50, ...(state ? { state } : {}) })
          .page()
      ).items,
    2000,
    `${webhookId}:${state}`,
  );
  const [error, setError] = useState<unknown>(null);
  const [notice, setNotice] = useState<string | null>(null);
  const redeliver = async (delivery: WebhookDelivery) => {
    setError(null);
    try {
      await client.webhooks.redeliver(webhookId, delivery.id);
      setNotice(`Sent ${delivery.eventType} again (message ${delivery.messageId}).`);
      deliveries.refresh();
    } catch (caught) {
      setError(caught);
    }
  };
  const sendTest = async () => {
    setError(null);
    try {
      const delivery = await client.webhooks.test(webhookId);
      setNotice(`Sent a webhook.test message (message ${delivery.messageId}).`);
      deliveries.refresh();
    } catch (caught) {
      setError(caught);
    }
  };
  return (
    <section
      aria-label="Deliveries"
      className="rounded-xl border border-zinc-200 bg-white shadow-xs dark:border-zinc-800 dark:bg-zinc-900"
    >
      <header className="flex items-center justify-between gap-4 border-b border-zinc-200 px-4 py-3 dark:border-zinc-800">
        <div className="min-w-0">
          <h2 className="text-sm font-semibold">Deliveries</h2>
          <p className="truncate font-mono text-xs text-zinc-500">{webhook?.url ?? webhookId}</p>
        </div>
        <div className="flex items-center gap-2">
          <select
            aria-label="Delivery state"
            value={state}
            onChange={(event) => setState(event.target.value as DeliveryState | "")}
            className={fieldClass}
          >
            <option value="">every state</option>
            {DELIVERY_STATES.map((option) => (
              <option key={option}>{option}</option>
            ))}
          </select>
          <Button variant="ghost" onClick={() => void sendTest()}>
            Send test
          </Button>
          <Button variant="ghost" aria-label="Close deliveries" onClick={onClose}>
            ✕
          </Button>
        </div>
      </header>
      <Notice text={notice} />
      <ErrorNote error={error ?? deliveries.error} />
      <Table
        label="Deliveries"
        headers={[
          "Event",
          "State",
          "Attempts",
          "Last status",
          "Last error",
          "Next try",
          "Sent",
          "",
        ]}
        empty="No deliveries yet: events the endpoint subscribes to are sent as they happen."
        rows={deliveries.data?.map((delivery) => [
          <span className="font-mono text-xs">
            {delivery.eventType}
            {delivery.redeliveryOf && <span className="block text-zinc-500">redelivery</span>}
          </span>,
          <StatusBadge status={delivery.state} />,
          <span className="tabular-nums" data-testid="delivery-attempts">
            {delivery.attempts}
          </span>,
          <span className="font-mono text-xs tabular-nums">{delivery.lastStatus ?? "—"}</span>,
          <span className="text-xs break-all text-red-700 dark:text-red-400">
            {delivery.lastError ?? ""}
          </span>,
          <span className="text-xs">{when(delivery.nextAttemptAt)}</span>,
          <span className="text-xs">{when(delivery.deliveredAt ?? delivery.lastAttemptAt)}</span>,
          manage ? (
            <Button
              variant="ghost"
              aria-label={`Redeliver ${delivery.id}`}
              onClick={() => void redeliver(delivery)}
            >
              Redeliver
            </Button>
          ) : null,
        ])}
      />
    </section>
  );
}
