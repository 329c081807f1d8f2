/** Wire types of terminals: the WebSocket subprotocols and the attach credential. */
import { z } from "zod";

/**
 * The WebSocket subprotocol of a terminal. A client offers it first, followed by
 * `TERM_TOKEN_PROTOCOL_PREFIX + token`; the server selects only this one, so the token is never
 * echoed back.
 */
export const TERM_PROTOCOL = "shells.term.v1";

/**
 * Prefix of the subprotocol that carries a terminal token. The token travels in the
 * `Sec-WebSocket-Protocol` header, never in the URL: URLs end up in proxy and server access logs,
 * browser history and `Referer` headers.
 */
export const TERM_TOKEN_PROTOCOL_PREFIX = "shells.token.";

/** A short-lived credential to attach a terminal to a shell. Shown once; stored only as a hash. */
export const TermCredential = z.strictObject({
  id: z.string(),
  /**
   * The secret. Single use: the first attach consumes it. Send it as the WebSocket subprotocol
   * `shells.token.<token>` next to `shells.term.v1`; a token in the URL is refused.
   */
  token: z.string(),
  /** WebSocket URL to attach. It holds no secret. */
  url: z.string(),
  expiresAt: z.iso.datetime(),
});
export type TermCredential = z.infer<typeof TermCredential>;
