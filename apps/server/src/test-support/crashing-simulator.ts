import { SimulatorBackend, type SandboxInfo, type SandboxSpec } from "@shells/sandbox";

/**
 * A simulator for crash tests: while `cut` names a call, that call never returns, as if the
 * control plane died in the middle of it (a cut create has made its sandbox; a cut destroy has
 * not begun). Its sandboxes outlive the app that made them (pass the
 * same instance to the next app over the same data dir), as real sandboxes outlive their control
 * plane.
 */
export class CrashingSimulator extends SimulatorBackend {
  /** The call that hangs from now on; null: none. */
  cut: "create" | "destroy" | null = null;
  /** Settles when a cut call was reached. */
  reached: Promise<void>;
  #reach: () => void = () => undefined;

  constructor() {
    super();
    this.reached = new Promise((resolve) => (this.#reach = resolve));
  }

  override async create(spec: SandboxSpec): Promise<SandboxInfo> {
    const info = await super.create(spec);
    return this.cut === "create" ? this.#hang() : info;
  }

  override async destroy(shellId: string): Promise<void> {
    if (this.cut === "destroy") return this.#hang();
    return super.destroy(shellId);
  }

  #hang(): Promise<never> {
    this.#reach();
    return new Promise<never>(() => undefined);
  }
}
