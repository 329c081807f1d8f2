import type { V1Pod, V1PodStatus } from "@kubernetes/client-node";
import { describe, expect, it } from "vitest";
import { imageVersionOf, killReasonOf, podPhaseOf, podProblemOf } from "./internal/pod-status.js";
import { fixture } from "./test-support/fake-kube-api.js";

/** Pods as the kubelet reports them (recorded status documents), read as the contract's words. */
const pod = (status: string, metadata: V1Pod["metadata"] = { name: "shells-sh-1" }): V1Pod => ({
  metadata,
  spec: { containers: [{ name: "shell", image: "docker.io/library/debian:bookworm-slim" }] },
  status: fixture<V1PodStatus>(status),
});

describe("kill reasons from a Pod's status", () => {
  it("maps a container OOMKilled to oom", () => {
    expect(killReasonOf(pod("pod-status-oomkilled.json"))).toBe("oom");
  });

  it("maps a Pod past its activeDeadlineSeconds (DeadlineExceeded) to wall_clock", () => {
    expect(killReasonOf(pod("pod-status-deadline-exceeded.json"))).toBe("wall_clock");
  });

  it("maps an eviction for ephemeral storage to disk", () => {
    expect(killReasonOf(pod("pod-status-evicted-ephemeral.json"))).toBe("disk");
  });

  it("gives no kill reason for a process that exited with an error code: an exit is a result", () => {
    expect(killReasonOf(pod("pod-status-exited-error.json"))).toBeUndefined();
    expect(killReasonOf(pod("pod-status-running.json"))).toBeUndefined();
  });

  it("maps a Pod being deleted to stopped", () => {
    const deleting = pod("pod-status-running.json", {
      name: "shells-sh-1",
      deletionTimestamp: new Date(),
    });
    expect(killReasonOf(deleting)).toBe("stopped");
    expect(podPhaseOf(deleting)).toBe("ended");
  });
});

describe("a Pod's phase and problems", () => {
  it("is running once the shell container runs, and says which image digest it runs", () => {
    const running = pod("pod-status-running.json");
    expect(podPhaseOf(running)).toBe("running");
    expect(podPhaseOf(running, "agent")).toBe("running");
    expect(podProblemOf(running)).toBeNull();
    expect(imageVersionOf(running)).toMatch(/^docker\.io\/library\/debian@sha256:/);
  });

  it("keeps waiting through an image pull back-off but gives up on an invalid image name", () => {
    const backoff = pod("pod-status-image-pull-backoff.json");
    expect(podPhaseOf(backoff)).toBe("starting");
    expect(podProblemOf(backoff)).toMatchObject({
      fatal: false,
      message: expect.stringContaining("ImagePullBackOff"),
    });
    expect(podProblemOf(pod("pod-status-invalid-image.json"))).toMatchObject({
      fatal: true,
      message: expect.stringContaining("InvalidImageName"),
    });
  });

  it("treats a failed Pod as ended for good", () => {
    const oom = pod("pod-status-oomkilled.json");
    expect(podPhaseOf(oom)).toBe("ended");
    expect(podProblemOf(oom)?.fatal).toBe(true);
  });
});
