import type { Language } from "@shells/contract";
import { sleep } from "./proc.js";

/**
 * How long after the last claim the refill waits: a sandbox start takes CPU a burst of creates
 * (and their first execs) would otherwise share it with, on the same cores.
 */
const QUIET_MS = 250;

/**
 * Started sandboxes kept ready per pool kind (a language, plain or with egress), claimed by creates (see the package README, "Warm
 * sandbox pool"). The pool only keeps the books: which sandboxes (box ids) are ready for which
 * kind, which kind is short, and the one refill under way. Starting a sandbox, claiming
 * it and tearing it down are the backend's.
 *
 * A refill starts one sandbox at a time, and only once creates have left the host alone for a
 * moment: it waits while creates are starting sandboxes of their own (`busy`) and until
 * `QUIET_MS` after the last claim. So the pool absorbs a burst and refills after it; a burst is
 * never slowed by more than the one start already under way, and a pool drained by a steady
 * stream of creates leaves them to start their own sandboxes, as without a pool.
 */
/**
 * What a pooled sandbox is started as: a language, with `:internet` for one started with the egress
 * forwarder and its network walls, which serves `internet` shells and shells with service bindings
 * (the forwarder is pointed at the claiming shell's egress proxy at the claim).
 */
export type PoolKind = Language | `${Language}:internet`;

/** The pool kind a create of `language` takes from: an egress-forwarded one when it has a proxy. */
export function poolKindOf(language: Language, forwarded: boolean): PoolKind {
  return forwarded ? `${language}:internet` : language;
}

/** A pool kind's language, and whether its sandboxes are started with the egress forwarder. */
export function parsePoolKind(kind: PoolKind): { language: Language; internet: boolean } {
  const [language, suffix] = kind.split(":") as [Language, string | undefined];
  return { language, internet: suffix === "internet" };
}

export class SandboxPool {
  readonly #ready = new Map<PoolKind, string[]>();
  #lastClaimAt = 0;
  #refilling: Promise<void> | null = null;
  #closed = false;

  constructor(
    /** How many started sandboxes to keep per kind. */
    readonly targets: ReadonlyMap<PoolKind, number>,
    /** The disk size of the pooled sandboxes, MiB (creates of another size start their own). */
    readonly diskMb: number,
    private readonly hooks: {
      /** Starts one pooled sandbox of `kind`; its box id. */
      start: (kind: PoolKind) => Promise<string>;
      /** Whether creates are starting sandboxes now (the refill waits for them). */
      busy: () => boolean;
      onError: (error: unknown) => void;
    },
  ) {}

  /** Whether any kind has a pool. */
  get enabled(): boolean {
    return [...this.targets.values()].some((count) => count > 0);
  }

  /** A ready sandbox of `kind` and `diskMb`, taken out of the pool (refilled after), or null. */
  take(kind: PoolKind, diskMb: number): string | null {
    if (diskMb !== this.diskMb) return null;
    const boxId = this.#ready.get(kind)?.shift() ?? null;
    if (boxId !== null) {
      this.#lastClaimAt = Date.now();
      this.refill();
    }
    return boxId;
  }

  /** Forgets a sandbox (it was found gone, or torn down). */
  drop(boxId: string): void {
    for (const ids of this.#ready.values()) {
      const at = ids.indexOf(boxId);
      if (at >= 0) ids.splice(at, 1);
    }
  }

  /** Every sandbox ready now. */
  boxes(): string[] {
    return [...this.#ready.values()].flat();
  }

  /** Starts sandboxes until every kind has its target, in the background, one at a time. */
  refill(): void {
    if (this.#closed || !this.enabled || this.#refilling) return;
    this.#refilling = (async () => {
      for (;;) {
        const short = [...this.targets].find(
          ([kind, target]) => (this.#ready.get(kind)?.length ?? 0) < target,
        );
        if (!short || this.#closed) return;
        while ((this.hooks.busy() || Date.now() - this.#lastClaimAt < QUIET_MS) && !this.#closed)
          await sleep(20);
        const boxId = await this.hooks.start(short[0]);
        let ids = this.#ready.get(short[0]);
        if (!ids) this.#ready.set(short[0], (ids = []));
        ids.push(boxId);
      }
    })()
      .catch(this.hooks.onError)
      .finally(() => {
        this.#refilling = null;
      });
  }

  /** Settles when the refill under way (if any) ends. */
  async settled(): Promise<void> {
    await this.#refilling;
  }

  /** Stops refilling (the sandboxes stay; a restarted backend discards them at `recover`). */
  close(): void {
    this.#closed = true;
  }

  /** Ready and target per kind with a pool. */
  report(): { language: Language; internet: boolean; ready: number; target: number }[] {
    return [...this.targets]
      .filter(([, target]) => target > 0)
      .map(([kind, target]) => ({
        ...parsePoolKind(kind),
        ready: this.#ready.get(kind)?.length ?? 0,
        target,
      }));
  }
}
