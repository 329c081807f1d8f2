import { RuntimeClass } from "@shells/contract";
import type { Kysely } from "kysely";
import { AppError } from "../errors.js";
import { CONCURRENT_STATES } from "../store/caps-store.js";
import type { LifecycleLock } from "../store/lifecycle-lock.js";
import type { Database } from "../store/schema.js";

/** Concurrent shells of a class this server runs at most; a class left out is not limited. */
export type ClassSlots = Partial<Record<RuntimeClass, number>>;

/**
 * Slots of one class held for one org, or one project of it: that many of its shells of the
 * class always find room, and no other org or project can take them.
 */
export interface Reservation {
  orgId: string;
  /** The project's name; absent: the reservation is the whole org's. */
  project?: string;
  /** The region whose pool holds it (`SHELLS_REGIONS`); absent: the default region's. */
  region?: string;
  runtime: RuntimeClass;
  slots: number;
}

/** Parses `container=8,microvm=2` (see `SHELLS_CLASS_SLOTS`); the problem in words, or the slots. */
export function parseClassSlots(value: string): ClassSlots | string {
  const slots: ClassSlots = {};
  for (const item of value
    .split(",")
    .map((s) => s.trim())
    .filter(Boolean)) {
    const match = /^([a-z]+)=(\d+)$/.exec(item);
    const runtime = RuntimeClass.safeParse(match?.[1]);
    if (!match || !runtime.success) return `"${item}" is not <wasm|container|microvm>=<count>`;
    slots[runtime.data] = Number(match[2]);
  }
  return slots;
}

/** Parses `org_a:container=2,org_b/ci:microvm=1` (see `SHELLS_RESERVATIONS`). */
export function parseReservations(value: string): Reservation[] | string {
  const reservations: Reservation[] = [];
  for (const item of value
    .split(",")
    .map((s) => s.trim())
    .filter(Boolean)) {
    const match =
      /^([^/:@\s]+)(?:\/([^:@\s]+))?(?:@([a-z0-9][a-z0-9._-]{0,63}))?:([a-z]+)=(\d+)$/.exec(item);
    const runtime = RuntimeClass.safeParse(match?.[4]);
    if (!match?.[1] || !runtime.success || Number(match[5]) < 1)
      return `"${item}" is not <org id>[/<project>][@<region>]:<wasm|container|microvm>=<count of at least 1>`;
    const holder = { orgId: match[1], ...(match[2] ? { project: match[2] } : {}) };
    const region = match[3];
    if (
      reservations.some(
        (r) => sameHolder(r, holder) && r.runtime === runtime.data && r.region === region,
      )
    )
      return `"${item}" reserves ${runtime.data} for the same holder twice`;
    reservations.push({
      ...holder,
      ...(region ? { region } : {}),
      runtime: runtime.data,
      slots: Number(match[5]),
    });
  }
  return reservations;
}

/**
 * Why the reservations cannot be honoured with these slots, or null: a reserved class must be
 * limited (else nothing is held back from anyone), and its reservations must fit in its slots.
 */
export function reservationProblem(
  reservations: readonly Reservation[],
  slots: ClassSlots,
): string | null {
  for (const runtime of RuntimeClass.options) {
    const reserved = sum(reservations.filter((r) => r.runtime === runtime).map((r) => r.slots));
    if (reserved === 0) continue;
    const limit = slots[runtime];
    if (limit === undefined)
      return `${runtime} is reserved but not limited: set its slots in SHELLS_CLASS_SLOTS`;
    if (reserved > limit)
      return `${reserved} ${runtime} slots are reserved but the server has ${limit}`;
  }
  return null;
}

/** Use of one class's slots as a create sees it (`capacity_exhausted` carries it). */
export interface SlotUse {
  runtime: RuntimeClass;
  /** The project the create is in. */
  project: string;
  slots: number;
  /** Slots reserved for other holders, whether or not they use them. */
  reservedForOthers: number;
  /** The caller's own reservation of the class (0 without one) and how much of it is in use. */
  reserved: number;
  reservedInUse: number;
  /** Shells in the unreserved slots (every holder's overflow past its reservation included). */
  sharedInUse: number;
  sharedSlots: number;
}

/** What the reservation check needs. */
export interface ReservationServiceDeps {
  db: Kysely<Database>;
  /** The region whose pool this is: only shells recorded in it count against its slots. */
  region: string;
  /** Concurrent shells per class in the pool. */
  slots: ClassSlots;
  reservations: readonly Reservation[];
  /** Serialises admissions of one class (on every server sharing the store). */
  lock: LifecycleLock;
}

/**
 * Reserved capacity: a class's slots in one region's pool are split into the reservations (each held for
 * one org or project) and a shared rest. A shell counts against its holder's reservation (its
 * project's if that has one, else its org's) and past it against the shared rest; a holder without a
 * reservation uses only the shared rest. So a create is admitted when its holder has a reserved
 * slot free, or the shared rest has one; it never takes a slot reserved for someone else.
 *
 * Shells count while they are provisioning or running, as concurrent-shell caps count them.
 */
export class ReservationService {
  /** Throws when the reservations do not fit the slots (see `reservationProblem`). */
  constructor(private readonly deps: ReservationServiceDeps) {
    const problem = reservationProblem(deps.reservations, deps.slots);
    if (problem)
      throw new Error(
        `invalid configuration: SHELLS_RESERVATIONS: ${problem} (in region ${deps.region})`,
      );
  }

  /** Runs `insert` (of a new shell) if a slot of `runtime` is free for the org's project. */
  async admit<T>(
    orgId: string,
    project: { id: string; name: string },
    runtime: RuntimeClass,
    insert: () => Promise<T>,
  ): Promise<T> {
    if (this.deps.slots[runtime] === undefined) return insert();
    return this.deps.lock.run(`slots:${this.deps.region}:${runtime}`, async () => {
      await this.check(orgId, project.id, runtime);
      return insert();
    });
  }

  /** Throws `capacity_exhausted` when no slot of `runtime` is free for the org's project. */
  async check(orgId: string, projectId: string, runtime: string): Promise<void> {
    const use = await this.use(orgId, projectId, runtime);
    if (!use) return;
    if (use.reservedInUse < use.reserved || use.sharedInUse < use.sharedSlots) return;
    throw new AppError(
      "capacity_exhausted",
      `No ${runtime} slot is free for project ${use.project} in region ${this.deps.region}: ${use.slots} slots, ${use.reservedForOthers} reserved for others, ${use.sharedInUse} of ${use.sharedSlots} shared in use${use.reserved > 0 ? `, ${use.reservedInUse} of ${use.reserved} reserved for you in use` : ""}.`,
      { ...use, region: this.deps.region },
    );
  }

  /** Each limited class's slots, how many are reserved, and how many shells hold one now. */
  async capacity(): Promise<
    { runtime: RuntimeClass; slots: number; reserved: number; inUse: number }[]
  > {
    const rows = await this.deps.db
      .selectFrom("shells")
      .select("runtime")
      .select((eb) => eb.fn.countAll<number | string>().as("count"))
      .where("status", "in", [...CONCURRENT_STATES])
      .where("region", "=", this.deps.region)
      .groupBy("runtime")
      .execute();
    return RuntimeClass.options.flatMap((runtime) => {
      const slots = this.deps.slots[runtime];
      if (slots === undefined) return [];
      const reserved = sum(
        this.deps.reservations.filter((r) => r.runtime === runtime).map((r) => r.slots),
      );
      const inUse = Number(rows.find((row) => row.runtime === runtime)?.count ?? 0);
      return [{ runtime, slots, reserved, inUse }];
    });
  }

  /** How the class's slots are used as a create in this org's project sees them; null: unlimited. */
  async use(orgId: string, projectId: string, runtime: string): Promise<SlotUse | null> {
    const parsed = RuntimeClass.safeParse(runtime);
    const slots = parsed.success ? this.deps.slots[parsed.data] : undefined;
    if (!parsed.success || slots === undefined) return null;
    const { name: projectName } = await this.deps.db
      .selectFrom("projects")
      .select("name")
      .where("org_id", "=", orgId)
      .where("id", "=", projectId)
      .executeTakeFirstOrThrow();
    const reservations = this.deps.reservations.filter((r) => r.runtime === runtime);
    const rows = await this.deps.db
      .selectFrom("shells")
      .innerJoin("projects", "projects.id", "shells.project_id")
      .select(["shells.org_id as orgId", "projects.name as project"])
      .select((eb) => eb.fn.countAll<number | string>().as("count"))
      .where("shells.runtime", "=", runtime)
      .where("shells.status", "in", [...CONCURRENT_STATES])
      .where("shells.region", "=", this.deps.region)
      .groupBy(["shells.org_id", "projects.name"])
      .execute();
    const inUse = new Map(reservations.map((r) => [r, 0]));
    let sharedInUse = 0;
    for (const row of rows) {
      const holder = holderOf(reservations, row.orgId, row.project);
      const count = Number(row.count);
      if (!holder) {
        sharedInUse += count;
        continue;
      }
      const used = inUse.get(holder)! + count;
      inUse.set(holder, used);
    }
    for (const [reservation, used] of inUse) sharedInUse += Math.max(0, used - reservation.slots);
    const own = holderOf(reservations, orgId, projectName);
    const reservedTotal = sum(reservations.map((r) => r.slots));
    return {
      runtime: parsed.data,
      project: projectName,
      slots,
      reservedForOthers: reservedTotal - (own?.slots ?? 0),
      reserved: own?.slots ?? 0,
      reservedInUse: own ? Math.min(own.slots, inUse.get(own)!) : 0,
      sharedInUse,
      sharedSlots: slots - reservedTotal,
    };
  }
}

/** The reservation a shell of this org's project counts against: the project's, else the org's. */
function holderOf(
  reservations: readonly Reservation[],
  orgId: string,
  project: string,
): Reservation | undefined {
  return (
    reservations.find((r) => r.orgId === orgId && r.project === project) ??
    reservations.find((r) => r.orgId === orgId && r.project === undefined)
  );
}

function sameHolder(
  a: { orgId: string; project?: string },
  b: { orgId: string; project?: string },
) {
  return a.orgId === b.orgId && a.project === b.project;
}

function sum(values: number[]): number {
  return values.reduce((a, b) => a + b, 0);
}
