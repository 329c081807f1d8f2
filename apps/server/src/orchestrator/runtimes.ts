import { RuntimeClass, type NetworkMode, type RuntimeAvailability } from "@shells/contract";
import type { SandboxBackend } from "@shells/sandbox";

/** The network modes a backend runs: its own list, or sealed and localhost when it names none. */
export function networkModesOf(backend: SandboxBackend): readonly NetworkMode[] {
  return backend.networkModes ?? ["sealed", "localhost"];
}

const AVAILABILITY_TTL_MS = 30_000;

/**
 * Which backend serves each runtime class on this server. A class no backend serves is
 * unavailable, and says so; a shell is never placed on a weaker class than it asked for.
 */
export class RuntimeRegistry {
  #cache: { at: number; value: RuntimeAvailability[] } | null = null;

  constructor(readonly backends: readonly SandboxBackend[]) {}

  /** Availability of every runtime class, cached briefly (host checks spawn processes). */
  async availability(): Promise<RuntimeAvailability[]> {
    if (this.#cache && Date.now() - this.#cache.at < AVAILABILITY_TTL_MS) return this.#cache.value;
    const offered = (await Promise.all(this.backends.map((b) => b.availability()))).flat();
    const value = RuntimeClass.options.map((runtime): RuntimeAvailability => {
      const entry = offered.find((o) => o.runtime === runtime && o.available) ??
        offered.find((o) => o.runtime === runtime) ?? {
          runtime,
          available: false,
          backend: null,
          reason: `no ${runtime} backend is installed on this server`,
        };
      const backend = entry.available ? this.backends.find((b) => b.name === entry.backend) : null;
      if (!backend) return entry;
      // What a client may ask of the class: its network modes, and bindings where the backend
      // routes to the egress proxy (the backends that offer `internet` do, in every mode).
      const networks = [...networkModesOf(backend)];
      return { ...entry, networks, bindings: networks.includes("internet") };
    });
    this.#cache = { at: Date.now(), value };
    return value;
  }

  /** The backend that runs `runtime`, or the availability entry explaining why none can. */
  async backendFor(
    runtime: RuntimeClass,
  ): Promise<{ backend: SandboxBackend } | { refusal: RuntimeAvailability }> {
    const entry = (await this.availability()).find((a) => a.runtime === runtime);
    const backend = entry?.available
      ? this.backends.find((b) => b.name === entry.backend)
      : undefined;
    if (backend) return { backend };
    return {
      refusal: entry ?? {
        runtime,
        available: false,
        backend: null,
        reason: `no ${runtime} backend is installed`,
      },
    };
  }

  /** The backend recorded on a shell. */
  byName(name: string): SandboxBackend | undefined {
    return this.backends.find((b) => b.name === name);
  }
}
