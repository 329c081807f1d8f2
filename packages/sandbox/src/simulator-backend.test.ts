import { describe, expect, it } from "vitest";
import { describeSandboxBackend } from "./conformance.js";
import { SimulatorBackend } from "./simulator-backend.js";

describeSandboxBackend("simulator", async () => ({
  backend: new SimulatorBackend(),
  runtime: "container",
  language: "bash",
}));

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
