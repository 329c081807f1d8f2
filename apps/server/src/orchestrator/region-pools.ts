import type { RuntimeClass } from "@shells/contract";
import type { Kysely } from "kysely";
import { AppError } from "../errors.js";
import type { LifecycleLock } from "../store/lifecycle-lock.js";
import type { Database } from "../store/schema.js";
import {
  parseClassSlots,
  ReservationService,
  type ClassSlots,
  type Reservation,
} from "./reservations.js";

/** One pool of this server's backends, labelled by the region its shells are recorded in. */
export interface RegionPool {
  region: string;
  /** Concurrent shells per class in the pool; a class left out is not limited. */
  slots: ClassSlots;
}

/** Region labels: what a create's `region` may hold, and nothing a list separator could break. */
const REGION = /^[a-z0-9][a-z0-9._-]{0,63}$/;

/** A pool as `SHELLS_REGIONS` lists it; without slots it takes `SHELLS_CLASS_SLOTS`. */
export interface RegionPoolSetting {
  region: string;
  slots?: ClassSlots;
}

/**
 * Parses `eu-west:container=8,microvm=2;us-east:container=4;lab` (see `SHELLS_REGIONS`): pools
 * separated by `;`, each a region label with its class slots after `:`. The problem in words, or
 * the pools (none for "").
 */
export function parseRegionPools(value: string): RegionPoolSetting[] | string {
  const pools: RegionPoolSetting[] = [];
  for (const item of value
    .split(";")
    .map((s) => s.trim())
    .filter(Boolean)) {
    const colon = item.indexOf(":");
    const region = (colon < 0 ? item : item.slice(0, colon)).trim();
    if (!REGION.test(region))
      return `"${region}" is not a region label (lowercase letters, digits, ".", "_" and "-", at most 64)`;
    if (pools.some((p) => p.region === region)) return `region ${region} is listed twice`;
    if (colon < 0) {
      pools.push({ region });
      continue;
    }
    const slots = parseClassSlots(item.slice(colon + 1));
    if (typeof slots === "string") return `region ${region}: ${slots}`;
    pools.push({ region, slots });
  }
  return pools;
}

/**
 * The pools a configuration describes and its default region. Without `SHELLS_REGIONS`: one pool,
 * `SHELLS_REGION` with `SHELLS_CLASS_SLOTS` (a server of one region, as before pools existed).
 * With it: its pools (a pool listed without slots takes `SHELLS_CLASS_SLOTS`), the default being
 * `SHELLS_REGION` when that is one of them, else the first listed.
 */
export function resolveRegionPools(config: {
  region: string;
  regions: readonly RegionPoolSetting[];
  classSlots: ClassSlots;
}): { pools: RegionPool[]; defaultRegion: string } {
  if (config.regions.length === 0)
    return {
      pools: [{ region: config.region, slots: config.classSlots }],
      defaultRegion: config.region,
    };
  const pools = config.regions.map((p) => ({
    region: p.region,
    slots: p.slots ?? config.classSlots,
  }));
  const defaultRegion = pools.some((p) => p.region === config.region)
    ? config.region
    : pools[0]!.region;
  return { pools, defaultRegion };
}

/** Use of one limited class in one region, as `/readyz` shows it. */
export interface RegionCapacity {
  region: string;
  runtime: RuntimeClass;
  slots: number;
  reserved: number;
  inUse: number;
}

/** What placement needs. */
export interface RegionPoolsOptions {
  db: Kysely<Database>;
  pools: readonly RegionPool[];
  /** Where a create goes first when it names no region; one of `pools`. */
  defaultRegion: string;
  /** `SHELLS_RESERVATIONS`: each held in the pool of the region it names, else the default's. */
  reservations: readonly Reservation[];
  /** Serialises admissions of one class in one region (on every server sharing the store). */
  lock: LifecycleLock;
}

/**
 * The server's backend pools, each labelled by a region, and placement among them: a create runs in
 * the region it names, or — naming none — in the first region with a free slot of its class among
 * the org's allowed regions (the default region first). Each pool counts its own shells (those
 * recorded in its region) against its own class slots, so a full region refuses with
 * `capacity_exhausted` while another still admits. The pools run on this host's backends: on one
 * machine they share its CPU, memory and disk (the host's memory budget still gates every create),
 * and a region label is what a shell is placed, counted and billed under.
 */
export class RegionPools {
  readonly defaultRegion: string;
  /** The regions offered, the default first. */
  readonly regions: readonly string[];
  readonly #services = new Map<string, ReservationService>();

  /** Throws when the default region is not a pool or reservations do not fit its slots. */
  constructor(options: RegionPoolsOptions) {
    const { db, pools, defaultRegion, reservations, lock } = options;
    if (!pools.some((p) => p.region === defaultRegion))
      throw new Error(`invalid configuration: the default region ${defaultRegion} has no pool`);
    this.defaultRegion = defaultRegion;
    this.regions = [
      defaultRegion,
      ...pools.map((p) => p.region).filter((r) => r !== defaultRegion),
    ];
    for (const r of reservations)
      if (r.region !== undefined && !pools.some((p) => p.region === r.region))
        throw new Error(
          `invalid configuration: a reservation for ${r.orgId} names region ${r.region}, which has no pool in SHELLS_REGIONS`,
        );
    for (const pool of pools)
      this.#services.set(
        pool.region,
        new ReservationService({
          db,
          region: pool.region,
          slots: pool.slots,
          reservations: reservations.filter((r) => (r.region ?? defaultRegion) === pool.region),
          lock,
        }),
      );
  }

  /**
   * The regions a create may be placed in, most preferred first: the one it names (when the org
   * allows it and this server offers it), else the offered regions the org allows, the default
   * first. Throws `region_not_allowed` or `region_unavailable`.
   */
  candidates(requested: string | undefined, allowedRegions: readonly string[]): string[] {
    const allowed = (region: string) =>
      allowedRegions.length === 0 || allowedRegions.includes(region);
    if (requested !== undefined) {
      if (!allowed(requested))
        throw new AppError(
          "region_not_allowed",
          `Region ${requested} is not allowed in this org; allowed: ${allowedRegions.join(", ")}.`,
          { region: requested, allowedRegions },
        );
      if (!this.#services.has(requested))
        throw new AppError(
          "region_unavailable",
          `This server runs shells in ${this.regions.join(", ")}, not ${requested}.`,
          { region: requested, offered: this.regions },
        );
      return [requested];
    }
    const candidates = this.regions.filter(allowed);
    if (candidates.length === 0)
      throw new AppError(
        "region_not_allowed",
        `None of the regions this server runs shells in (${this.regions.join(", ")}) is allowed in this org; allowed: ${allowedRegions.join(", ")}.`,
        { region: this.defaultRegion, allowedRegions, offered: this.regions },
      );
    return candidates;
  }

  /**
   * Runs `insert(region)` in the first of `regions` with a free slot of `runtime` for the org's
   * project. When every one is full, throws the first region's `capacity_exhausted`, its details
   * naming every region tried.
   */
  async admit<T>(
    orgId: string,
    project: { id: string; name: string },
    runtime: RuntimeClass,
    regions: readonly string[],
    insert: (region: string) => Promise<T>,
  ): Promise<T> {
    let first: AppError | undefined;
    for (const region of regions) {
      const service = this.#services.get(region);
      if (!service) continue;
      try {
        return await service.admit(orgId, project, runtime, () => insert(region));
      } catch (error) {
        if (!(error instanceof AppError) || error.code !== "capacity_exhausted") throw error;
        first ??= error;
      }
    }
    if (!first) throw new Error(`no pool for regions ${regions.join(", ")}`);
    if (regions.length === 1) throw first;
    throw new AppError(
      "capacity_exhausted",
      `${first.message} The other regions allowed (${regions.slice(1).join(", ")}) are full too.`,
      { ...first.details, regionsTried: [...regions] },
    );
  }

  /** Throws `capacity_exhausted` when no slot of `runtime` is free in `region` (a start). */
  async check(orgId: string, projectId: string, runtime: string, region: string): Promise<void> {
    // A region this server no longer offers limits nothing here.
    await this.#services.get(region)?.check(orgId, projectId, runtime);
  }

  /** Each region's limited classes: slots, reserved slots and shells holding one now. */
  async capacity(): Promise<RegionCapacity[]> {
    const out: RegionCapacity[] = [];
    for (const region of this.regions) {
      const service = this.#services.get(region)!;
      for (const use of await service.capacity()) out.push({ region, ...use });
    }
    return out;
  }
}
