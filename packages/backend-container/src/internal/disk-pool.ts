import { randomBytes } from "node:crypto";
import { mkdir, readdir, rename, rm, stat } from "node:fs/promises";
import { createDisk } from "./disk.js";

/**
 * Formatted, empty shell disks made ahead of time, so a create of the pool's disk size takes one
 * (an atomic rename into the shell's dir) instead of running mkfs.ext4 (about 40 ms of a ~110 ms
 * create here). A disk holds no language, limits, env or network: everything of the shell's own is
 * applied when the shell starts on it, as on a disk made at create. Disks are finished under a
 * temporary name and renamed into the pool, so a crash leaves no half-made disk to claim.
 */
export class DiskPool {
  #refilling: Promise<void> | null = null;

  constructor(
    private readonly dir: string,
    /** How many disks to keep ready. */
    readonly target: number,
    /** The size of each (shells asking for another size get a disk made at create). */
    readonly diskMb: number,
    private readonly onError: (error: unknown) => void,
  ) {}

  /** Moves a ready disk to `path` and starts refilling; false when none of `diskMb` is ready. */
  async claim(path: string, diskMb: number): Promise<boolean> {
    if (diskMb !== this.diskMb || this.target === 0) return false;
    let claimed = false;
    for (const name of await this.#ready()) {
      try {
        await rename(`${this.dir}/${name}`, path);
        claimed = true;
        break;
      } catch (error) {
        // Taken by a concurrent claim: try the next one.
        if ((error as NodeJS.ErrnoException).code !== "ENOENT") throw error;
      }
    }
    this.refill();
    return claimed;
  }

  /** Makes disks until `target` are ready, in the background; one refill runs at a time. */
  refill(): void {
    if (this.target === 0 || this.#refilling) return;
    this.#refilling = (async () => {
      await mkdir(this.dir, { recursive: true, mode: 0o700 });
      for (const name of await readdir(this.dir))
        if (name.startsWith(".")) await rm(`${this.dir}/${name}`, { force: true });
      while ((await this.#ready()).length < this.target) {
        const name = randomBytes(6).toString("hex");
        await createDisk(`${this.dir}/.${name}`, this.diskMb);
        await rename(`${this.dir}/.${name}`, `${this.dir}/${name}.img`);
      }
    })()
      .catch(this.onError)
      .finally(() => {
        this.#refilling = null;
      });
  }

  /** Settles when the refill under way (if any) ends. */
  async settled(): Promise<void> {
    await this.#refilling;
  }

  /** Disks ready now and the host disk space they hold (allocated blocks, not their size). */
  async report(): Promise<{ ready: number; target: number; diskMb: number; diskBytes: number }> {
    let bytes = 0;
    const ready = await this.#ready();
    for (const name of ready) {
      try {
        bytes += (await stat(`${this.dir}/${name}`)).blocks * 512;
      } catch {
        // claimed meanwhile
      }
    }
    return { ready: ready.length, target: this.target, diskMb: this.diskMb, diskBytes: bytes };
  }

  async #ready(): Promise<string[]> {
    try {
      return (await readdir(this.dir)).filter(
        (name) => name.endsWith(".img") && !name.startsWith("."),
      );
    } catch {
      return [];
    }
  }
}
