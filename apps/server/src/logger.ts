import pino, { type Logger } from "pino";

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

/** The server's structured logger. */
export function createLogger(level: string): Logger {
  return pino({ level, redact: { paths: REDACTED_PATHS, censor: "[redacted]" } });
}
