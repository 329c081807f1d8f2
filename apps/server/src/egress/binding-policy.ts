/**
 * SECURITY BOUNDARY: what a service binding is, and what a call through one may do.
 *
 * A binding's secret must reach its upstream host in one header, and nowhere else. So:
 *   - at creation the upstream is an `https://` origin with an optional base path (no credentials,
 *     query, fragment or `{secret}` — a secret in a URL ends up in logs, histories and Referer
 *     headers), the header template is one `Name: value` line with `{secret}` in the value (no CR,
 *     LF or control characters that could split it into more headers or a second request, and never
 *     a header that frames the request), and the secret itself is printable ASCII that appears in
 *     no field kept in the clear;
 *   - at call time the path the code sends must be plain (no `.`/`..` segments, no encoded `/`, `\`
 *     or `.`, no empty segments: what the proxy matched is what the upstream routes) and must match
 *     one of the binding's path globs, and the method must be one it allows.
 * Everything here is a pure function: the proxy (`binding-proxy.ts`) and the binding service call it.
 */
import {
  BINDING_NAME_PATTERN,
  BINDING_SECRET_PLACEHOLDER,
  type BindingMethod,
} from "@shells/contract";
import { AppError } from "../errors.js";

/** Headers a template may not set: they frame the request or belong to the hop. */
const FRAMING_HEADERS = new Set([
  "host",
  "content-length",
  "transfer-encoding",
  "connection",
  "keep-alive",
  "te",
  "trailer",
  "upgrade",
  "expect",
  "proxy-authorization",
  "proxy-authenticate",
  "proxy-connection",
]);

/** An HTTP header name (RFC 9110 token). */
const HEADER_NAME = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
/** Any control character (C0, DEL, C1): none may appear in a template. */
// eslint-disable-next-line no-control-regex
const CONTROL = /[\u0000-\u001f\u007f-\u009f]/;
/** A secret: printable ASCII, no leading or trailing space (header values are trimmed). */
const SECRET_FORM = /^[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?$/;
const MIN_SECRET_CHARS = 8;
const MAX_PATH_WILDCARDS = 4;

/** A parsed header template: the header's name and the value around the secret. */
export interface InjectTemplate {
  /** Lower-cased header name. */
  header: string;
  /** The value with `{secret}` in it. */
  value: string;
}

/** A binding's rules in the form the proxy applies them. */
export interface BindingRules {
  upstream: URL;
  inject: InjectTemplate;
  paths: readonly string[];
  methods: readonly BindingMethod[];
}

/** Refuses a binding name that is not lowercase letters, digits and `_` (see the contract). */
export function checkBindingName(name: string): void {
  if (!BINDING_NAME_PATTERN.test(name))
    throw new AppError(
      "binding_name_invalid",
      "A binding name is lowercase letters, digits and _, starts with a letter, at most 63 characters.",
      { name },
    );
}

/**
 * The upstream URL of a binding: `https://host[:port][/base]`, with nothing that could carry a
 * secret or change where a request goes (credentials, query, fragment). `allowHttp` admits plain
 * `http://` (tests and development only, never production: the secret would cross the network in
 * the clear).
 */
export function parseUpstream(upstream: string, options: { allowHttp: boolean }): URL {
  if (/\{secret\}|%7bsecret%7d/i.test(upstream))
    throw new AppError(
      "binding_secret_in_url",
      "A binding's upstream may not hold {secret}: the secret goes in the inject header only.",
    );
  let url: URL;
  try {
    url = new URL(upstream);
  } catch {
    throw new AppError("binding_upstream_invalid", "The upstream is not a URL.");
  }
  if (url.protocol !== "https:" && !(options.allowHttp && url.protocol === "http:"))
    throw new AppError(
      "binding_upstream_not_https",
      "A binding's upstream must be https:// (the secret must not cross the network in the clear).",
      { protocol: url.protocol },
    );
  if (!url.hostname || url.username || url.password || url.search || url.hash)
    throw new AppError(
      "binding_upstream_invalid",
      "The upstream must be a scheme, a host, an optional port and an optional base path: no credentials, query or fragment.",
    );
  return url;
}

/** Parses a header template `Name: value with {secret}`; refuses anything else. */
export function parseInjectTemplate(template: string): InjectTemplate {
  const refuse = (why: string): never => {
    throw new AppError("binding_header_invalid", `The inject template ${why}.`);
  };
  if (CONTROL.test(template)) refuse("may not hold CR, LF or other control characters");
  const colon = template.indexOf(":");
  if (colon <= 0) refuse('must be "Header-Name: value with {secret}"');
  const header = template.slice(0, colon);
  const value = template.slice(colon + 1).trim();
  if (!HEADER_NAME.test(header)) refuse("must start with a header name (letters, digits, -)");
  if (FRAMING_HEADERS.has(header.toLowerCase()) || header.toLowerCase().startsWith("proxy-"))
    refuse(`may not set ${header}, which frames the request`);
  if (!value.includes(BINDING_SECRET_PLACEHOLDER))
    refuse("must put {secret} in the header's value");
  return { header: header.toLowerCase(), value };
}

/** Refuses a path glob that is not an absolute path or has too many wildcards. */
export function checkPathGlob(glob: string): void {
  const refuse = (why: string): never => {
    throw new AppError("binding_path_invalid", `The path ${JSON.stringify(glob)} ${why}.`, {
      path: glob,
    });
  };
  if (!glob.startsWith("/")) refuse("must start with /");
  if (CONTROL.test(glob) || /[\s?#\\]/.test(glob))
    refuse("may not hold spaces, ?, #, \\ or control characters");
  const segments = glob.split("/").slice(1);
  if (segments.some((s) => s.includes("**") && s !== "**"))
    refuse("may use ** only as a whole segment");
  if (segments.some((s) => s === "." || s === "..")) refuse("may not hold . or .. segments");
  if ((glob.match(/\*+/g) ?? []).length > MAX_PATH_WILDCARDS)
    refuse(`may hold at most ${MAX_PATH_WILDCARDS} wildcards`);
}

/**
 * Refuses a secret that could not travel in a header as it is, and one that appears in a field
 * kept in the clear (it would be shown by every API that shows the binding).
 */
export function checkSecret(secret: string, clearFields: readonly string[]): void {
  if (secret.length < MIN_SECRET_CHARS || !SECRET_FORM.test(secret))
    throw new AppError(
      "binding_secret_invalid",
      `A binding secret is at least ${MIN_SECRET_CHARS} printable ASCII characters, without leading or trailing spaces.`,
    );
  if (clearFields.some((field) => field.includes(secret)))
    throw new AppError(
      "binding_secret_invalid",
      "The secret appears in the binding's upstream, template or paths, which are kept and shown in the clear.",
    );
}

/** Why a request path is refused before matching, or null when it is plain. */
export function requestPathProblem(path: string): string | null {
  if (!path.startsWith("/")) return "not absolute";
  if (path.length > 2048) return "longer than 2048 characters";
  if (CONTROL.test(path) || path.includes("\\")) return "holds \\ or control characters";
  if (/%(2f|5c|2e|00)/i.test(path)) return "holds an encoded /, \\, . or NUL";
  const segments = path.split("/").slice(1);
  if (segments.slice(0, -1).some((s) => s === "")) return "holds an empty segment";
  if (segments.some((s) => s === "." || s === "..")) return "holds a . or .. segment";
  return null;
}

/** Whether `glob` (see `checkPathGlob`) matches the plain path `path`. */
export function pathMatches(glob: string, path: string): boolean {
  const pattern = glob
    .split("/")
    .slice(1)
    .map((segment) =>
      segment === "**"
        ? "(?:/[^/]*)*"
        : `/${segment
            .split(/\*+/)
            .map((part) => part.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"))
            .join("[^/]*")}`,
    )
    .join("");
  return new RegExp(`^${pattern}$`).test(path);
}

/** The header value with the secret in place of `{secret}`. */
export function injectedValue(template: InjectTemplate, secret: string): string {
  return template.value.split(BINDING_SECRET_PLACEHOLDER).join(secret);
}

/**
 * The forms of a secret the proxy masks in what the upstream answers: as it is, URL-encoded and
 * base64 (standard and URL-safe), and the whole injected header value. An upstream that echoes the
 * secret in any other form (hashed, split, differently encoded) is not caught: see docs/security.md.
 */
export function secretForms(secret: string, injected: string): string[] {
  const forms = new Set([
    secret,
    injected,
    encodeURIComponent(secret),
    Buffer.from(secret).toString("base64"),
    Buffer.from(secret).toString("base64url"),
  ]);
  return [...forms].sort((a, b) => b.length - a.length);
}
