import { describeSandboxBackend } from "@shells/sandbox/conformance";
import { describe } from "vitest";
import { hostReport, makeTestBackend } from "./internal/test-support.js";

// The shared conformance suite, against real sandboxes on the bash image.
describe.runIf(hostReport.available)("container backend", () => {
  describeSandboxBackend(
    "container",
    {
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
      cpuUsage: true,
      networkModes: ["sealed", "localhost", "internet"],
      pause: true,
      fork: true,
    },
    async () => {
      const { backend, cleanup } = await makeTestBackend();
      return { backend, runtime: "container", language: "bash", cleanup };
    },
  );
});
