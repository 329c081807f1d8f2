/** Every operation a crash cycle may cut, in the order cycles take them. */
export declare const CRASH_OPERATIONS: readonly string[];

/** A host object of a data dir's container shells (a loop device, a cgroup, a process, a mount). */
export interface HostObject {
  kind: "loop" | "cgroup" | "process" | "mount";
  /** The shell it belongs to, when its name says. */
  shellId: string | null;
  what: string;
}

/** The host objects of a data dir's container shells. */
export declare function hostObjectsOf(dataDir: string): HostObject[];

/** Options of {@link runCrashCycles}. */
export interface CrashCycleOptions {
  cycles: number;
  /** Seed of the kill points (default: random; reported, so a failing run can be repeated). */
  seed?: number;
  /** `container`, or `simulator` where the host cannot run containers (host checks are skipped). */
  backend?: "container" | "simulator";
  /** A fresh data dir, made and removed by the caller. */
  dataDir: string;
  /** Shared base images (`SHELLS_IMAGES_DIR`). */
  imagesDir?: string;
  /** Called with one line per cycle. */
  log?: (line: string) => void;
}

/** What a run of crash cycles checked and found. */
export interface CrashCycleReport {
  seed: number;
  checked: {
    cycles: number;
    /** Cycles whose request had no answer when the server was killed. */
    killedMidRequest: number;
    keyedRetries: number;
    /** Retries whose first request had answered: the retry must answer the same. */
    keysAnsweredFirstOutcome: number;
    creates: number;
    shellsChecked: number;
    hostChecks: number;
    chainEvents: number;
  };
  /** Every failed check, with its cycle and the seed. */
  failures: string[];
  /** From spawning the server to its first ready answer, ms, for every start. */
  restartToReadyMs: number[];
}

/**
 * Kills the real server (SIGKILL) at a random point of one lifecycle operation per cycle,
 * restarts it on the same data dir and database, and checks what a crash must not break.
 */
export declare function runCrashCycles(options: CrashCycleOptions): Promise<CrashCycleReport>;
