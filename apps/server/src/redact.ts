import { ISSUED_TOKEN_PATTERN } from "./iam/tokens.js";

/**
 * Redaction at the source: text that is about to be stored (execution logs) loses every credential
 * the control plane knows the shape or value of, before it is written anywhere. The shapes of the
 * tokens this server issues come from `iam/tokens.ts`, where they are minted.
 */

/** Environment variable names whose values are treated as secrets. */
const SECRET_NAME =
  /TOKEN|SECRET|PASS|PRIVATE|CREDENTIAL|AUTH|API_?KEY|(^|_)KEY$|(^|_)PAT$|DATABASE_URL|_DSN$/i;

/** The values of `env` whose names look like secrets (long enough to be worth masking). */
export function secretValues(env: Record<string, string>): string[] {
  return Object.entries(env)
    .filter(([name, value]) => SECRET_NAME.test(name) && value.length >= 4)
    .map(([, value]) => value);
}

/** `text` with issued credentials and the given secret values replaced by `[redacted]`. */
export function redact(text: string, secrets: readonly string[] = []): string {
  let out = text.replace(ISSUED_TOKEN_PATTERN, "[redacted]");
  for (const secret of [...secrets].sort((a, b) => b.length - a.length))
    out = out.split(secret).join("[redacted]");
  return out;
}
