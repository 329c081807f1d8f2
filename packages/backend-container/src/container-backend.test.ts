import { describeSandboxBackend } from "@shells/sandbox/conformance";
import { describe } from "vitest";
import { CONTAINER_CAPABILITIES, hostReport, makeTestBackend } from "./internal/test-support.js";

// The shared conformance suite, against real sandboxes on the bash image.
describe.runIf(hostReport.available)("container backend", () => {
  describeSandboxBackend("container", CONTAINER_CAPABILITIES, async () => {
    const { backend, cleanup } = await makeTestBackend();
    return { backend, runtime: "container", language: "bash", cleanup };
  });
});
