import {
  WEBHOOK_RESULT_LIMIT_BYTES,
  type ActivityEvent,
  type WebhookEventType,
  type WebhookMessageType,
  type WebhookPayload,
} from "@shells/contract";
import type { Transaction } from "kysely";
import { toRun } from "../orchestrator/run-service.js";
import type { Database } from "../store/schema.js";

/** Activity actions that, when they succeed, are one webhook event type each. */
const ON_SUCCESS: Readonly<Record<string, WebhookEventType>> = {
  "shell.create": "shell.created",
  "shell.action.start": "shell.started",
  "shell.action.stop": "shell.stopped",
  "shell.action.restart": "shell.restarted",
  "shell.action.restore": "shell.restored",
  "shell.action.wipe_state": "shell.wiped",
  "shell.action.reinstall_os": "shell.reinstalled",
  "shell.delete": "shell.deleted",
  "run.finish": "run.finished",
  "approval.request": "approval.requested",
  "approval.grant": "approval.decided",
  "approval.deny": "approval.decided",
};

/** Activity actions that are their own webhook event type whatever their outcome. */
const ALWAYS: Readonly<Record<string, WebhookEventType>> = {
  "quota.warning": "quota.warning",
  "quota.stopped": "quota.stopped",
  "egress.denied": "egress.denied",
};

/** What a reconciliation found, as the lifecycle event it amounts to. */
const RECONCILED: Readonly<Record<string, WebhookEventType>> = {
  lost: "shell.failed",
  stopped: "shell.stopped",
  running: "shell.started",
};

/**
 * The webhook event type an activity event is, or null when endpoints are never told about it
 * (reads, execs, refusals by the gate, IAM changes). This is the one map from the activity history
 * to webhooks: every webhook message is made from exactly one recorded event.
 */
export function webhookEventTypeOf(event: ActivityEvent): WebhookEventType | null {
  const always = ALWAYS[event.action];
  if (always) return always;
  if (event.action === "shell.create" && event.outcome === "failure") return "shell.failed";
  if (event.outcome !== "success") return null;
  if (event.action === "shell.reconcile") return RECONCILED[String(event.details.result)] ?? null;
  return ON_SUCCESS[event.action] ?? null;
}

/**
 * The body of the message made from `event` (Standard Webhooks shape: `type`, `timestamp`,
 * `data`). Read in the event's own transaction: a `run.finished` message carries the run as it
 * was recorded, with its structured result unless that is larger than the inline limit.
 */
export async function webhookPayloadOf(
  trx: Transaction<Database>,
  type: WebhookMessageType,
  event: ActivityEvent,
): Promise<WebhookPayload> {
  const data: WebhookPayload["data"] = { orgId: event.orgId, activity: event };
  if (type === "run.finished" && event.target) {
    const row = await trx
      .selectFrom("runs")
      .selectAll()
      .where("org_id", "=", event.orgId)
      .where("id", "=", event.target.id)
      .executeTakeFirst();
    if (row) {
      const run = toRun(row);
      const bytes = row.result === null ? 0 : Buffer.byteLength(row.result);
      if (bytes > WEBHOOK_RESULT_LIMIT_BYTES) {
        data.run = { ...run, result: null };
        data.runResultOmitted = { bytes, limitBytes: WEBHOOK_RESULT_LIMIT_BYTES };
      } else data.run = run;
    }
  }
  return { type, timestamp: event.time, data };
}
