import { z } from "zod";
import { Binding, BindingCreate, BindingRotate } from "../bindings.js";
import type { RouteSpec } from "./route-spec.js";

const bindingParams = z.strictObject({ name: z.string().min(1).max(64) });

const EXAMPLE_BINDING = {
  name: "example_api",
  upstream: "https://api.example.com/v1",
  inject: "Authorization: Bearer {secret}",
  paths: ["/items/*"],
  methods: ["GET"],
  secret: "example-secret-value",
};

/**
 * Service bindings: the org's secret store. Admins create, rotate and delete bindings; anyone who
 * may read the org sees their names and rules. A binding's secret goes in (create, rotate) and never
 * comes out: no route returns it. These routes are not idempotent on purpose: an idempotency record
 * would keep a hash of a body that holds the secret.
 */
export const bindingRoutes = {
  listBindings: {
    method: "GET",
    path: "/api/v1/bindings",
    summary: "The org's service bindings (names, upstreams and rules; never secrets).",
    tag: "bindings",
    response: z.strictObject({ items: z.array(Binding) }),
    successStatus: 200,
    scope: "shells:instances:read",
  },
  getBinding: {
    method: "GET",
    path: "/api/v1/bindings/:name",
    summary: "One service binding by name (never its secret).",
    tag: "bindings",
    params: bindingParams,
    response: Binding,
    successStatus: 200,
    scope: "shells:instances:read",
    example: { params: { name: "{binding}" } },
  },
  createBinding: {
    method: "POST",
    path: "/api/v1/bindings",
    summary: "Create a service binding (admins). The secret is sealed at rest and never returned.",
    description:
      "A shell or run granted the binding at launch (`bindings: [name]`) gets `SHELLS_BINDING_<NAME>_URL`; calling it reaches the shell's egress proxy, which injects the secret into the `inject` header and forwards over TLS to `upstream`, only for the allowed paths and methods.",
    tag: "bindings",
    body: BindingCreate,
    response: Binding,
    successStatus: 201,
    scope: "shells:instances:control",
    minRole: "admin",
    example: { body: EXAMPLE_BINDING },
  },
  rotateBinding: {
    method: "POST",
    path: "/api/v1/bindings/:name/rotate",
    summary:
      "Replace a binding's secret (admins); running shells use the new one from their next call.",
    tag: "bindings",
    params: bindingParams,
    body: BindingRotate,
    response: Binding,
    successStatus: 200,
    scope: "shells:instances:control",
    minRole: "admin",
    example: { params: { name: "{binding}" }, body: { secret: "rotated-secret-value" } },
  },
  deleteBinding: {
    method: "DELETE",
    path: "/api/v1/bindings/:name",
    summary:
      "Delete a binding and its secret (admins); shells granted it are refused from then on.",
    tag: "bindings",
    params: bindingParams,
    response: Binding,
    successStatus: 200,
    scope: "shells:instances:control",
    minRole: "admin",
    example: { params: { name: "{binding}" } },
  },
} as const satisfies Record<string, RouteSpec>;
