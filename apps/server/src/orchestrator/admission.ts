import {
  type Language,
  RuntimeClass,
  type NetworkMode,
  type OrgPolicy,
  type ResolvedResources,
  type Resources,
  type RouteBody,
  type ShellEgress,
} from "@shells/contract";
import type { SandboxBackend } from "@shells/sandbox";
import type { Kysely } from "kysely";
import { statfsSync } from "node:fs";
import { cpus, totalmem } from "node:os";
import { AppError } from "../errors.js";
import { actorOf, type Caller } from "../iam/principal.js";
import type { ActivityService } from "../services/activity-service.js";
import type { Database } from "../store/schema.js";
import { findProject } from "../store/shells-store.js";
import type { RegionPools } from "./region-pools.js";
import { networkModesOf, type RuntimeRegistry } from "./runtimes.js";

/** Resource limits of a shell nobody asked otherwise for. */
export const DEFAULT_RESOURCES: ResolvedResources = {
  cpu: 1,
  memoryMb: 512,
  pids: 256,
  diskMb: 1024,
};

/** What this host can give one shell at most. A field left out is not capped by the host. */
export type HostCapacity = Partial<Record<keyof ResolvedResources, number>>;

let cores = 0;
/** The host's core count, read once (`os.cpus()` parses /proc on every call). */
function hostCores(): number {
  cores ||= cpus().length;
  return cores;
}

/**
 * The host's capacity now: its cores, its memory, and the free space of the file system that
 * holds `dataDir` (where the shells' writable state lives). No host limit on pids: the org
 * policy's maximum caps them.
 */
export function hostCapacity(dataDir?: string): HostCapacity {
  const capacity: HostCapacity = {
    cpu: hostCores(),
    memoryMb: Math.floor(totalmem() / (1024 * 1024)),
  };
  if (dataDir) {
    try {
      const fs = statfsSync(dataDir);
      capacity.diskMb = Math.floor((fs.bavail * fs.bsize) / (1024 * 1024));
    } catch {
      // A data dir not created yet has no file system to ask; the policy maximum still applies.
    }
  }
  return capacity;
}

/**
 * Refuses limits above the org policy's maximum or the host's capacity, naming the field, the
 * value asked and the maximum: a shell asking for more than the host has would overcommit every
 * other shell on it. Only the fields the caller chose are checked; defaults always fit, so the
 * host is measured (`host`, a statfs and a read of /proc) only when a field was chosen.
 */
export function checkResourceLimits(
  asked: Resources,
  policy: OrgPolicy,
  host: () => HostCapacity,
): void {
  let measured: HostCapacity | undefined;
  for (const field of ["cpu", "memoryMb", "pids", "diskMb"] as const) {
    const value = asked[field];
    if (value === undefined) continue;
    const policyMax = policy.maxResources[field];
    measured ??= host();
    const hostMax = measured[field];
    const maximum = hostMax === undefined ? policyMax : Math.min(policyMax, hostMax);
    if (value > maximum) {
      throw new AppError(
        "limit_exceeded",
        `resources.${field} ${value} is above the maximum of ${maximum} (${maximum === policyMax ? "org policy" : "host capacity"}).`,
        {
          field: `resources.${field}`,
          asked: value,
          maximum,
          limitedBy: maximum === policyMax ? "policy" : "host",
        },
      );
    }
  }
}

/**
 * The network mode and egress allowlist a create asks for. The seed-004 `egress` field sets the
 * mode: `deny_all` with nothing allowed is `sealed`; an allowlist is `internet` narrowed to it. A
 * `network` that contradicts `egress` is refused rather than silently overridden.
 */
export function networkOf(
  input: { network?: NetworkMode | undefined; egress?: ShellEgress | undefined },
  policy: OrgPolicy,
): { network: NetworkMode; egress: ShellEgress | null } {
  if (!input.egress) return { network: input.network ?? policy.defaultNetwork, egress: null };
  const { mode, allow } = input.egress;
  if (mode === "allowlist" && allow.length === 0) {
    throw new AppError(
      "validation_failed",
      "egress mode allowlist needs at least one entry in egress.allow (use deny_all for no egress).",
      { field: "egress.allow" },
    );
  }
  const network = allow.length === 0 ? "sealed" : "internet";
  if (input.network && input.network !== network) {
    throw new AppError(
      "validation_failed",
      `network ${input.network} contradicts egress ${mode} with ${allow.length} allowed entries (that is network ${network}).`,
      { field: "network", network: input.network, implied: network },
    );
  }
  return { network, egress: network === "internet" ? input.egress : null };
}

/** What admission needs from the rest of the control plane. */
export interface AdmissionDeps {
  db: Kysely<Database>;
  activity: ActivityService;
  runtimes: RuntimeRegistry;
  /** The server's backend pools by region: where a shell may be placed. */
  pools: RegionPools;
  /** Host capacity, read on each admission that chooses resource limits (free disk changes). */
  capacity: () => HostCapacity;
}

/** Where and how an admitted shell runs. */
export interface Admitted {
  runtime: RuntimeClass;
  /** The region placement tries first (`regions[0]`). */
  region: string;
  /** The regions the shell may be placed in, most preferred first (see `RegionPools.candidates`). */
  regions: string[];
  network: NetworkMode;
  /** The shell's own egress allowlist (`internet` only). */
  egress: ShellEgress | null;
  project: { id: string; name: string };
  backend: SandboxBackend;
  resources: ResolvedResources;
}

/**
 * Decides whether a new shell may exist and where it runs: the org's isolation floor and allowed
 * regions, a backend that serves the runtime class, a network mode this server offers, resource
 * limits within policy and host, and an existing project. Throws the first refusal.
 */
export async function admitShell(
  deps: AdmissionDeps,
  caller: Caller,
  policy: OrgPolicy,
  input: RouteBody<"createShell"> & { language: Language },
): Promise<Admitted> {
  const strength = (r: RuntimeClass) => RuntimeClass.options.indexOf(r);
  const runtime =
    input.runtime ??
    (strength(policy.isolationFloor) > strength("container") ? policy.isolationFloor : "container");
  if (strength(runtime) < strength(policy.isolationFloor)) {
    throw new AppError(
      "below_isolation_floor",
      `This org runs shells in ${policy.isolationFloor} or stronger; ${runtime} is below that floor.`,
      { runtime, isolationFloor: policy.isolationFloor },
    );
  }
  // The regions of this server's pools the org allows; which has a free slot is decided as the
  // shell's row is written (see `RegionPools.admit`).
  const regions = deps.pools.candidates(input.region, policy.allowedRegions);
  const { network, egress } = networkOf(input, policy);
  const placement = await deps.runtimes.backendFor(runtime);
  if ("refusal" in placement) {
    await deps.activity.record({
      orgId: caller.orgId,
      actor: actorOf(caller),
      action: "shell.create",
      target: null,
      outcome: "failure",
      details: { runtime, reason: placement.refusal.reason },
    });
    throw new AppError(
      "runtime_unavailable",
      `This server cannot run ${runtime} shells: ${placement.refusal.reason}.`,
      { runtime, missing: placement.refusal.reason },
    );
  }
  // What the placed backend runs: its language presets and network modes (the wasm class runs
  // the python and node interpreters; only backends wired to the egress proxy offer internet).
  const { backend } = placement;
  if (backend.languages && !backend.languages.includes(input.language))
    throw new AppError(
      "runtime_unavailable",
      `The ${runtime} runtime runs the ${backend.languages.join(" and ")} presets; ${input.language} needs another runtime class.`,
      {
        runtime,
        language: input.language,
        presets: backend.languages,
        missing: `a ${runtime} build of this language`,
      },
    );
  if (!networkModesOf(backend).includes(network))
    throw new AppError(
      "network_mode_unavailable",
      network === "internet"
        ? `Network mode internet needs a backend that routes through the egress proxy; ${backend.name} does not. Use sealed or localhost.`
        : `Network mode ${network} is not offered by the ${runtime} runtime; it offers ${networkModesOf(backend).join(", ")}.`,
      { network, runtime },
    );
  checkResourceLimits(input.resources ?? {}, policy, deps.capacity);
  const projectName = input.project ?? "default";
  const project = await findProject(deps.db, caller.orgId, projectName);
  if (!project)
    throw new AppError("project_not_found", `No project named ${projectName} in this org.`);
  return {
    runtime,
    region: regions[0]!,
    regions,
    network,
    egress,
    project,
    backend: placement.backend,
    resources: { ...DEFAULT_RESOURCES, ...input.resources },
  };
}
