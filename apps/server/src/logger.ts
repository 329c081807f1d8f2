import pino, { type Logger } from "pino";
import { ISSUED_TOKEN_PATTERN } from "./iam/tokens.js";

/**
 * Paths pino censors in every log line. Secrets must never reach a log: API keys travel in the
 * Authorization header, shell env values may be credentials.
 */
export const REDACTED_PATHS = [
  "req.headers.authorization",
  "req.headers.cookie",
  "headers.authorization",
  "headers.cookie",
  "token",
  "*.token",
  "apiKey",
  "*.apiKey",
  "secret",
  "*.secret",
  "env",
  "*.env",
];

/** Query parameters whose values never reach a log line (the terminal attach URL carries one). */
const SECRET_QUERY = /([?&](?:token|access_token|code|state)=)[^&]*/g;

/** A URL with secret query values, and any token this server issues wherever it appears, masked. */
export function redactUrl(url: string): string {
  return url.replace(SECRET_QUERY, "$1[redacted]").replace(ISSUED_TOKEN_PATTERN, "[redacted]");
}

/**
 * The server's structured logger. Request lines show the method and a redacted URL, no headers.
 * Lines go to `destination` when given (tests read what the server logs), else to stdout.
 */
export function createLogger(level: string, destination?: pino.DestinationStream): Logger {
  const options: pino.LoggerOptions = {
    level,
    redact: { paths: REDACTED_PATHS, censor: "[redacted]" },
    serializers: {
      req: (req: { id?: string; method?: string; url?: string; ip?: string }) => ({
        id: req.id,
        method: req.method,
        url: redactUrl(req.url ?? ""),
        remoteAddress: req.ip,
      }),
    },
  };
  return destination ? pino(options, destination) : pino(options);
}
