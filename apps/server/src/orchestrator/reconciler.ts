import type { FastifyBaseLogger } from "fastify";
import type { ShellService } from "./shell-service.js";

/**
 * Keeps recorded shells in line with their backends: `reconcile()` once at start (a sandbox that
 * died while the server was down is marked `error`), and a periodic sweep that stops shells whose
 * TTL has passed.
 */
export class Reconciler {
  #timer: NodeJS.Timeout | null = null;

  constructor(
    private readonly shells: ShellService,
    private readonly logger: FastifyBaseLogger,
  ) {}

  /** Reconciles every shell with its backend once. */
  async reconcile(): Promise<void> {
    const counts = await this.shells.reconcile();
    this.logger.info(counts, "reconciled shells with their backends");
  }

  /** Starts the TTL sweep every `intervalMs` (0 leaves it off). */
  startSweep(intervalMs: number): void {
    if (intervalMs <= 0 || this.#timer) return;
    this.#timer = setInterval(() => {
      this.shells
        .expire()
        .catch((error: unknown) => this.logger.error({ err: error }, "ttl sweep failed"));
    }, intervalMs);
    this.#timer.unref();
  }

  /** Stops the sweep. */
  stop(): void {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = null;
  }
}
