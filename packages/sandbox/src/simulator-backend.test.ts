import type { Snapshot } from "@shells/contract";
import { describe, expect, it } from "vitest";
import {
  SandboxError,
  type SandboxExecOptions,
  type SandboxInfo,
  type SandboxProcess,
  type SandboxSpawnRequest,
  type SandboxSpec,
} from "./backend.js";
import { describeSandboxBackend, type BackendCapabilities } from "./conformance.js";
import { SimulatorBackend } from "./simulator-backend.js";

/** The simulator models every capability a container has (see its doc for what it models). */
const SIMULATOR_CAPABILITIES: BackendCapabilities = {
  posixShell: true,
  pidsLimit: true,
  memoryLimit: true,
  diskLimit: true,
  binaryStdin: true,
  files: true,
  spawn: true,
  pty: true,
  snapshots: true,
  reinstallOs: true,
  cpuUsage: false,
  networkModes: ["sealed", "localhost"],
  pause: true,
  fork: true,
};

describeSandboxBackend("simulator", SIMULATOR_CAPABILITIES, async () => ({
  backend: new SimulatorBackend(),
  runtime: "container",
  language: "bash",
}));

/**
 * The simulator narrowed to a backend with no terminals, no restore points and no loopback
 * network, the way a backend that is not a Linux container may be. It holds the suite to its
 * profile: the tests of what it lacks are skipped by name, and each lacking entry point must be
 * refused with `unsupported`.
 */
class NarrowSimulatorBackend extends SimulatorBackend {
  override async create(spec: SandboxSpec): Promise<SandboxInfo> {
    if (spec.network !== "sealed")
      throw new SandboxError("unsupported", `network mode ${spec.network} is not offered`);
    return super.create(spec);
  }
  override async spawn(
    shellId: string,
    request: SandboxSpawnRequest,
    options: { onOutput: NonNullable<SandboxExecOptions["onOutput"]> },
  ): Promise<SandboxProcess> {
    if (request.pty) throw new SandboxError("unsupported", "this backend has no terminals");
    return super.spawn(shellId, request, options);
  }
  override async snapshot(): Promise<Snapshot> {
    throw new SandboxError("unsupported", "this backend keeps no snapshots");
  }
  override async listSnapshots(): Promise<Snapshot[]> {
    throw new SandboxError("unsupported", "this backend keeps no snapshots");
  }
  override async restore(): Promise<Snapshot> {
    throw new SandboxError("unsupported", "this backend keeps no snapshots");
  }
}

describeSandboxBackend(
  "simulator without pty, snapshots or localhost",
  { ...SIMULATOR_CAPABILITIES, pty: false, snapshots: false, networkModes: ["sealed"] },
  async () => ({ backend: new NarrowSimulatorBackend(), runtime: "container", language: "bash" }),
);
describe("SimulatorBackend", () => {
  it("says it is a model wherever it reports availability", async () => {
    const offered = await new SimulatorBackend().availability();
    expect(offered.map((o) => o.runtime)).toEqual(["wasm", "container", "microvm"]);
    for (const entry of offered) expect(entry.reason).toMatch(/runs no code/);
  });

  it("answers exit 127 for a command it does not model instead of pretending", async () => {
    const backend = new SimulatorBackend();
    await backend.create({
      shellId: "s1",
      language: "python",
      runtime: "container",
      network: "sealed",
      resources: { cpu: 1, memoryMb: 128, pids: 64, diskMb: 64 },
      env: {},
    });
    const result = await backend.exec("s1", {
      command: ["python3", "-c", "print(1)"],
      env: {},
      cwd: "/workspace",
      stdin: undefined,
      timeoutMs: 1000,
      maxOutputBytes: 1024,
    });
    expect(result.exitCode).toBe(127);
    expect(result.stderr).toMatch(/not modeled/);
  });

  it("refuses a runtime class it was not configured to model", async () => {
    const backend = new SimulatorBackend({ runtimes: ["container"] });
    await expect(
      backend.create({
        shellId: "s2",
        language: "bash",
        runtime: "microvm",
        network: "sealed",
        resources: { cpu: 1, memoryMb: 128, pids: 64, diskMb: 64 },
        env: {},
      }),
    ).rejects.toMatchObject({ code: "unavailable" });
  });
});
