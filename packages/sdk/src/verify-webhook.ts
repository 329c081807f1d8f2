import type { WebhookPayload } from "@shells/contract";
import { Webhook, WebhookVerificationError as StandardWebhookError } from "standardwebhooks";
import { ConfigurationError, ShellsError } from "./errors.js";

/** A delivery whose signature does not verify (or is too old or too new): do not trust it. */
export class WebhookVerificationError extends ShellsError {}

/** Request headers as `fetch` (`Headers`) or Node's `http` (a record) present them. */
export type WebhookHeaders = Headers | Record<string, string | string[] | undefined>;

function headerRecord(headers: WebhookHeaders): Record<string, string> {
  const record: Record<string, string> = {};
  const entries: Iterable<[string, string | string[] | undefined]> =
    typeof Headers !== "undefined" && headers instanceof Headers
      ? headers.entries()
      : Object.entries(headers);
  for (const [name, value] of entries) {
    const first = Array.isArray(value) ? value[0] : value;
    if (first !== undefined) record[name.toLowerCase()] = first;
  }
  return record;
}

/**
 * Verifies a delivery from Shells and answers its payload: the Standard Webhooks signature
 * (`webhook-signature`, HMAC-SHA256 over `webhook-id.webhook-timestamp.body`) must match one of
 * the endpoint's secrets, and the timestamp must be within five minutes of now (a replayed old
 * delivery fails). Pass the body exactly as received — bytes or the raw string, never JSON parsed
 * and serialised again — and the endpoint's `whsec_…` secret; during a rotation, pass both secrets.
 * Deduplicate by `webhook-id`: a delivery may arrive more than once.
 *
 * ```ts
 * const event = verifyWebhook(rawBody, request.headers, process.env.SHELLS_WEBHOOK_SECRET!);
 * if (event.type === "run.finished") console.log(event.data.run?.result);
 * ```
 *
 * @throws {WebhookVerificationError} when no secret's signature matches, a header is missing, or
 * the timestamp is out of range; {@link ConfigurationError} when a secret is not a `whsec_…` one.
 */
export function verifyWebhook(
  payload: string | Uint8Array,
  headers: WebhookHeaders,
  secret: string | readonly string[],
): WebhookPayload {
  const body = typeof payload === "string" ? payload : new TextDecoder().decode(payload);
  const record = headerRecord(headers);
  let reason = "no secret was given";
  for (const candidate of typeof secret === "string" ? [secret] : secret) {
    let verifier: Webhook;
    try {
      verifier = new Webhook(candidate);
    } catch (cause) {
      throw new ConfigurationError(
        {
          code: "invalid_configuration",
          status: 0,
          message: "the webhook secret is not a whsec_… secret (base64 after the prefix)",
        },
        { cause },
      );
    }
    try {
      return verifier.verify(body, record) as WebhookPayload;
    } catch (error) {
      if (!(error instanceof StandardWebhookError)) throw error;
      reason = error.message;
    }
  }
  throw new WebhookVerificationError({
    code: "invalid_signature",
    status: 0,
    message: `the webhook did not verify: ${reason}`,
  });
}
