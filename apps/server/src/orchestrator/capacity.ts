import { AppError } from "../errors.js";

/** How much a host takes on: creates starting at once, and memory promised to its shells. */
export interface CapacityOptions {
  /** Creates that may start sandboxes at once on this host; 0: no limit. */
  maxProvisioning: number;
  /** Longest a create waits for a provisioning slot before it is refused, ms. */
  queueTimeoutMs: number;
  /** Memory the shells of this host may be promised in all (host memory × overcommit), MiB; 0: no limit. */
  memoryBudgetMb: number;
  /** Memory promised now to the shells the store holds as living on this host, MiB. */
  committedMb: () => Promise<number>;
}

/** A create's hold on the host: its memory reserved, then a provisioning slot. */
export interface CapacityTicket {
  /** The shell's row exists: the store counts its memory from now on, so the reservation ends. */
  recorded(): void;
  /** The create is done (started, answered `provisioning`, or failed): its slot goes to the next. */
  release(): void;
}

/** The first guess of a create's time in a slot, before one has been measured. */
const INITIAL_SLOT_MS = 500;
/** Retry-After bounds, seconds: never "now", never longer than clients wait out. */
const MIN_RETRY_AFTER_SECONDS = 1;
const MAX_RETRY_AFTER_SECONDS = 60;
/** What a refusal for memory asks clients to wait: memory frees only when shells end. */
const MEMORY_RETRY_AFTER_SECONDS = 30;

interface Waiter {
  grant: () => void;
  timer: NodeJS.Timeout;
}

/**
 * Admission for the host's capacity, apart from the org's policy and caps: a burst of creates is
 * let through a bounded number at a time (a queue in arrival order, each waiting at most
 * `queueTimeoutMs`), and a create whose memory limit would take the host's shells past the
 * memory budget is refused at once. A refusal is `capacity_unavailable` (503) with the wait in
 * `details.retryAfterMs`, made before anything of the shell exists.
 *
 * Memory, not a count of shells, is the measure: one shell's limit can be sixteen times
 * another's, and memory is what a host runs out of first (CPU is shared by time, pids and disk are
 * capped per shell). The budget overcommits physical memory because a limit is a ceiling, not a
 * reservation: idle shells hold a few MB each.
 */
export class CapacityGate {
  readonly #options: CapacityOptions;
  #provisioning = 0;
  readonly #queue: Waiter[] = [];
  /** Memory reserved by admitted creates whose rows the store does not hold yet. */
  #reservedMb = 0;
  /** Reservations are checked one at a time, so two creates never pass on the same reading. */
  #checking: Promise<unknown> = Promise.resolve();
  /** How long a create holds a slot, smoothed: the base of Retry-After. */
  #slotMs = INITIAL_SLOT_MS;

  constructor(options: CapacityOptions) {
    this.#options = options;
  }

  /** Creates starting now, creates waiting for a slot, and memory reserved but not yet recorded. */
  get load(): { provisioning: number; queued: number; reservedMb: number } {
    return {
      provisioning: this.#provisioning,
      queued: this.#queue.length,
      reservedMb: this.#reservedMb,
    };
  }

  /**
   * Reserves `memoryMb` and waits for a provisioning slot; refuses with `capacity_unavailable`
   * when the memory does not fit or no slot frees within the queue timeout.
   */
  async admit(memoryMb: number): Promise<CapacityTicket> {
    let reserved = await this.#reserve(memoryMb);
    const unreserve = () => {
      if (reserved) this.#reservedMb -= memoryMb;
      reserved = false;
    };
    try {
      await this.#slot();
    } catch (error) {
      unreserve();
      throw error;
    }
    const since = performance.now();
    let released = false;
    return {
      recorded: unreserve,
      release: () => {
        if (released) return;
        released = true;
        unreserve();
        this.#slotMs = 0.8 * this.#slotMs + 0.2 * (performance.now() - since);
        this.#provisioning -= 1;
        this.#queue.shift()?.grant();
      },
    };
  }

  /** Reserves `memoryMb` within the budget; false when there is no budget to reserve from. */
  async #reserve(memoryMb: number): Promise<boolean> {
    const { memoryBudgetMb, committedMb } = this.#options;
    if (memoryBudgetMb <= 0) return false;
    const check = this.#checking.then(async () => {
      const committed = (await committedMb()) + this.#reservedMb;
      if (committed + memoryMb > memoryBudgetMb) {
        throw refusal(
          `This host has promised ${committed} of its ${memoryBudgetMb} MiB of shell memory; a shell of ${memoryMb} MiB does not fit. Retry after shells are stopped or deleted, or ask for less memory.`,
          MEMORY_RETRY_AFTER_SECONDS,
          { reason: "memory", askedMb: memoryMb, committedMb: committed, budgetMb: memoryBudgetMb },
        );
      }
      this.#reservedMb += memoryMb;
    });
    this.#checking = check.catch(() => undefined);
    await check;
    return true;
  }

  #slot(): Promise<void> {
    const { maxProvisioning, queueTimeoutMs } = this.#options;
    if (maxProvisioning <= 0 || (this.#provisioning < maxProvisioning && !this.#queue.length)) {
      this.#provisioning += 1;
      return Promise.resolve();
    }
    return new Promise((resolve, reject) => {
      const waiter: Waiter = {
        grant: () => {
          clearTimeout(waiter.timer);
          this.#provisioning += 1;
          resolve();
        },
        timer: setTimeout(() => {
          this.#queue.splice(this.#queue.indexOf(waiter), 1);
          // The queue drains maxProvisioning creates per slot time.
          const seconds = Math.ceil(
            (this.#slotMs * (this.#queue.length + 1)) / maxProvisioning / 1000,
          );
          reject(
            refusal(
              `This host is starting ${this.#provisioning} shells and ${this.#queue.length} more wait; none finished within ${queueTimeoutMs} ms. Retry shortly.`,
              seconds,
              {
                reason: "provisioning",
                provisioning: this.#provisioning,
                queued: this.#queue.length,
                waitedMs: queueTimeoutMs,
              },
            ),
          );
        }, queueTimeoutMs),
      };
      this.#queue.push(waiter);
    });
  }
}

/** The `capacity_unavailable` refusal, its wait clamped to what clients honour. */
function refusal(message: string, seconds: number, details: Record<string, unknown>): AppError {
  const retryAfterSeconds = Math.min(
    MAX_RETRY_AFTER_SECONDS,
    Math.max(MIN_RETRY_AFTER_SECONDS, seconds),
  );
  return new AppError("capacity_unavailable", message, {
    ...details,
    retryAfterMs: retryAfterSeconds * 1000,
  });
}
