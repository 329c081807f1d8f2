/**
 * Service bindings: an org's named credentials that code in a shell can *use* without ever seeing.
 * A shell granted a binding gets `SHELLS_BINDING_<NAME>_URL`; requests to it reach the shell's
 * egress proxy, which injects the secret into one header and forwards to the binding's upstream.
 */
import { z } from "zod";

/**
 * A binding's name: lowercase letters, digits and `_`, starting with a letter, at most 63
 * characters. It names the shell's variable `SHELLS_BINDING_<NAME>_URL` (upper-cased), so two
 * names never map to one variable. The server checks the form (`binding_name_invalid`).
 */
export const BINDING_NAME_PATTERN = /^[a-z][a-z0-9_]{0,62}$/;

/** The placeholder of the secret in a binding's `inject` template. */
export const BINDING_SECRET_PLACEHOLDER = "{secret}";

/** The environment variable that carries a granted binding's URL in a shell. */
export function bindingEnvName(name: string): string {
  return `SHELLS_BINDING_${name.toUpperCase()}_URL`;
}

/** HTTP methods a binding may allow. */
export const BindingMethod = z.enum(["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]);
export type BindingMethod = z.infer<typeof BindingMethod>;

/** A binding's secret: sent once (create or rotate), stored only sealed, never returned. */
const secret = z.string().min(1).max(8192);

/** Body of `POST /api/v1/bindings`. The server checks each field's form; see each field. */
export const BindingCreate = z.strictObject({
  /** See {@link BINDING_NAME_PATTERN}; unique in the org (`name_taken`). */
  name: z.string().min(1).max(64),
  /**
   * Where calls go: an `https://` URL with a host and an optional base path, no credentials, query
   * or fragment (`binding_upstream_invalid`, `binding_upstream_not_https`; a `{secret}` in it is
   * `binding_secret_in_url`). The code appends its own path to it.
   */
  upstream: z.string().min(1).max(2048),
  /**
   * The one header that carries the secret, as `Name: value` with `{secret}` in the value, e.g.
   * `Authorization: Bearer {secret}`. No CR, LF or other control characters, and not a header that
   * frames the request (`Host`, `Content-Length`, `Transfer-Encoding`, `Connection`, …):
   * `binding_header_invalid`.
   */
  inject: z.string().min(1).max(1024),
  /**
   * Path globs the code may call, matched against the path it appends to its binding URL (the
   * upstream's base path excluded): `*` is any run of characters within one segment, `**` as a whole
   * segment is any number of segments (`/v1/**`). At most 4 wildcards each (`binding_path_invalid`).
   */
  paths: z.array(z.string().min(1).max(256)).min(1).max(64).default(["/**"]),
  /** Methods the code may use. */
  methods: z.array(BindingMethod).min(1).max(7).default(["GET"]),
  /**
   * The secret: printable ASCII without leading or trailing spaces, at least 8 characters
   * (`binding_secret_invalid`). Sealed at rest; never returned by any API, log or event.
   */
  secret,
});
export type BindingCreate = z.input<typeof BindingCreate>;

/** Body of `POST /api/v1/bindings/:name/rotate`: the new secret (running shells use it at once). */
export const BindingRotate = z.strictObject({ secret });
export type BindingRotate = z.infer<typeof BindingRotate>;

/** A binding as the API returns it: everything but its secret. */
export const Binding = z.strictObject({
  id: z.string(),
  name: z.string(),
  upstream: z.string(),
  /** The header template, with `{secret}` where the secret goes. */
  inject: z.string(),
  paths: z.array(z.string()),
  methods: z.array(BindingMethod),
  /** The variable a shell granted this binding finds its URL in. */
  envVar: z.string(),
  createdBy: z.strictObject({ type: z.enum(["user", "agent"]), id: z.string() }),
  createdAt: z.iso.datetime(),
  /** When the secret was last set (creation or rotation). */
  rotatedAt: z.iso.datetime(),
});
export type Binding = z.infer<typeof Binding>;

/** Names of bindings granted to a shell or run at launch. */
export const BindingGrants = z.array(z.string().min(1).max(64)).max(16);
