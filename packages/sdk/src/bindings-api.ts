/**
 * `shells.bindings`: the org's service bindings — credentials code in a shell can use without
 * ever seeing them. Grant one at launch (`shells.create({ …, bindings: ["name"] })`); the shell
 * finds its URL in `SHELLS_BINDING_<NAME>_URL`.
 */
import type {
  Binding,
  BindingCreate as BindingCreateSchema,
  BindingRotate as BindingRotateSchema,
} from "@shells/contract";
import { segment, type ApiCall } from "./internal/api-call.js";
import type { SchemaInput } from "./internal/schema-types.js";
import type { RequestOptions } from "./shells-client.js";

/**
 * Body of `bindings.create()`: a name, the `https://` upstream, the header template with
 * `{secret}` (e.g. `Authorization: Bearer {secret}`), the allowed path globs and methods, and the
 * secret itself (sent once, never returned).
 */
export type BindingCreate = SchemaInput<typeof BindingCreateSchema>;
/** Body of `bindings.rotate()`: the new secret. */
export type BindingRotate = SchemaInput<typeof BindingRotateSchema>;

/**
 * `shells.bindings`: list and read for every member; create, rotate and delete for admins. No
 * method returns a secret: it goes in with `create` and `rotate` and is never given back.
 */
export class BindingsApi {
  readonly #call: ApiCall;

  /** @internal The client builds its namespaces; use `shells.bindings`. */
  constructor(call: ApiCall) {
    this.#call = call;
  }

  /** The org's bindings: names, upstreams and rules. */
  async list(options: RequestOptions = {}): Promise<Binding[]> {
    const { items } = await this.#call<{ items: Binding[] }>("GET", "/api/v1/bindings", options);
    return items;
  }

  /** One binding by name; `binding_not_found` when the org has none by that name. */
  get(name: string, options: RequestOptions = {}): Promise<Binding> {
    return this.#call<Binding>("GET", `/api/v1/bindings/${segment(name)}`, options);
  }

  /**
   * Creates a binding (admins). Bad fields answer stable codes: `binding_name_invalid`,
   * `binding_upstream_not_https`, `binding_secret_in_url`, `binding_header_invalid`,
   * `binding_path_invalid`, `binding_secret_invalid`; a taken name is `name_taken`.
   */
  create(body: BindingCreate, options: RequestOptions = {}): Promise<Binding> {
    return this.#call<Binding>("POST", "/api/v1/bindings", { ...options, body });
  }

  /** Replaces a binding's secret (admins); shells granted it use the new one from their next call. */
  rotate(name: string, body: BindingRotate, options: RequestOptions = {}): Promise<Binding> {
    return this.#call<Binding>("POST", `/api/v1/bindings/${segment(name)}/rotate`, {
      ...options,
      body,
    });
  }

  /** Deletes a binding and its secret (admins); shells granted it are refused from then on. */
  remove(name: string, options: RequestOptions = {}): Promise<Binding> {
    return this.#call<Binding>("DELETE", `/api/v1/bindings/${segment(name)}`, options);
  }
}
