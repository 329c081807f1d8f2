import { z } from "zod";
import { Role, Scope } from "../iam.js";
import { Language, NetworkMode, RuntimeClass } from "../shells.js";
import type { RouteSpec } from "./route-spec.js";

/** Availability of one runtime class on this server. */
export const RuntimeAvailability = z.strictObject({
  runtime: RuntimeClass,
  available: z.boolean(),
  /** Backend that serves the class (`container`, `simulator`, …), when one does. */
  backend: z.string().nullable(),
  /** What is missing when unavailable, or a note (the simulator says it runs no code). */
  reason: z.string().nullable(),
  /**
   * Network modes a shell of this class can have on this server (`internet` only where the backend
   * routes through the egress proxy). Absent when the class is unavailable, and from a backend's
   * own report; the server fills it in.
   */
  networks: z.array(NetworkMode).optional(),
  /** Whether shells of this class can be granted service bindings (their calls go through the proxy). */
  bindings: z.boolean().optional(),
  /**
   * The backend's warm pool, where it keeps one: formatted shell disks of `diskMb` made ahead so a
   * create skips mkfs (`ready` of `target`), and the host disk space they hold (`diskBytes`; they
   * hold no memory).
   */
  warmPool: z
    .strictObject({
      ready: z.number().int().nonnegative(),
      target: z.number().int().nonnegative(),
      diskMb: z.number().int().positive(),
      diskBytes: z.number().int().nonnegative(),
    })
    .optional(),
  /**
   * The backend's pool of started sandboxes, where it keeps one: per language, the sandboxes
   * `ready` of `target` that creates claim (a create → first exec without starting a sandbox);
   * their disk size (`diskMb`), the memory each is limited to while pooled (`memoryMbEach`) and
   * the pool at its target is counted as (`memoryMb`, by the capacity gate), and the memory its
   * sandboxes are charged now (`memoryBytes`).
   */
  sandboxPool: z
    .strictObject({
      languages: z.array(
        z.strictObject({
          language: Language,
          /**
           * Started with the egress forwarder and its network walls: serves `internet` shells and
           * shells with service bindings (the others serve shells without an egress proxy).
           */
          internet: z.boolean(),
          ready: z.number().int().nonnegative(),
          target: z.number().int().nonnegative(),
        }),
      ),
      diskMb: z.number().int().positive(),
      memoryMbEach: z.number().int().nonnegative(),
      memoryMb: z.number().int().nonnegative(),
      memoryBytes: z.number().int().nonnegative(),
    })
    .optional(),
  /**
   * The language presets of this class, each with the toolchain its base image holds and that
   * toolchain's version as installed there (Debian's version string, read from the image's
   * package database); `image` and `version` are null until the image is built. Absent where the
   * backend does not report them. Newer toolchains come from a template's `image.toolchains`.
   */
  presets: z
    .array(
      z.strictObject({
        language: Language,
        image: z.string().nullable(),
        toolchain: z.string(),
        version: z.string().nullable(),
      }),
    )
    .optional(),
});
export type RuntimeAvailability = z.infer<typeof RuntimeAvailability>;

/** Who the caller is. */
export const Principal = z.strictObject({
  orgId: z.string(),
  actor: z.strictObject({ type: z.enum(["user", "agent"]), id: z.string() }),
  role: Role,
  /** The API key used, or null for a console session or a JWT. */
  keyId: z.string().nullable(),
  /** Effective scopes: the credential's scopes within the role's. */
  scopes: z.array(Scope),
  /** Entitlements held (e.g. `shells.agent.invoke`). */
  entitlements: z.array(z.string()),
  /** For console sessions: the token to send as `x-csrf-token` on mutating requests. */
  csrfToken: z.string().optional(),
});
export type Principal = z.infer<typeof Principal>;

/** Health, readiness, the caller's identity and the runtime classes this server runs. */
export const systemRoutes = {
  health: {
    method: "GET",
    path: "/healthz",
    summary: "Liveness: the process answers.",
    tag: "health",
    response: z.strictObject({ status: z.literal("ok") }),
    successStatus: 200,
    scope: null,
  },
  ready: {
    method: "GET",
    path: "/readyz",
    summary:
      "Readiness: the store answers; which runtime classes this host can run; the regions of its backend pools and each limited class's slots per region.",
    tag: "health",
    response: z.strictObject({
      status: z.literal("ready"),
      runtimes: z.array(RuntimeAvailability),
      /** The default region: where a create naming none goes first. */
      region: z.string().optional(),
      /** The regions of this server's backend pools, the default first. */
      regions: z.array(z.string()).optional(),
      /**
       * Each limited class of each region's pool (`SHELLS_REGIONS`, `SHELLS_CLASS_SLOTS`): its
       * slots, how many are reserved (for any org or project; who holds them is not shown here) and
       * how many shells of the region provision or run now.
       */
      capacity: z
        .array(
          z.strictObject({
            region: z.string().optional(),
            runtime: RuntimeClass,
            slots: z.int(),
            reserved: z.int(),
            inUse: z.int(),
          }),
        )
        .optional(),
    }),
    successStatus: 200,
    scope: null,
  },
  whoami: {
    method: "GET",
    path: "/api/v1/me",
    summary:
      "The authenticated principal: org, actor, role, key, effective scopes and entitlements.",
    tag: "identity",
    response: Principal,
    successStatus: 200,
    scope: "shells:instances:read",
  },
  listRuntimes: {
    method: "GET",
    path: "/api/v1/runtimes",
    summary: "Runtime classes and whether this server can run each (and why not).",
    tag: "shells",
    response: z.strictObject({ items: z.array(RuntimeAvailability) }),
    successStatus: 200,
    scope: "shells:instances:read",
  },
} as const satisfies Record<string, RouteSpec>;
