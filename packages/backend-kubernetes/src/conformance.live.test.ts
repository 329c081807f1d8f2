import { describeSandboxBackend } from "@shells/sandbox/conformance";
import { describe, it } from "vitest";
import { loadKubeConfig } from "./kube-config.js";
import { KubernetesBackend } from "./kubernetes-backend.js";

/**
 * The conformance suite against a live cluster: runs only when `SHELLS_TEST_KUBECONFIG` names a
 * kubeconfig (and `SHELLS_TEST_KUBERNETES_NAMESPACE` a namespace the backend may use, default
 * `shells-sandboxes`; `SHELLS_TEST_KUBERNETES_AGENT_IMAGE` the control plane's image). No cluster
 * was available where the backend was built, so the capabilities below are what it implements,
 * not what a run has shown; `memoryLimit`, `pidsLimit` and `diskLimit` are not claimed: per-shell
 * pids limits do not exist in a Pod spec (the kubelet's `podPidsLimit` is node-wide), disk limits
 * are the storage class's, and OOM reporting under gVisor is unproven.
 */
const kubeconfigPath = process.env.SHELLS_TEST_KUBECONFIG;

if (kubeconfigPath) {
  describeSandboxBackend(
    "kubernetes (live cluster)",
    {
      posixShell: true,
      pidsLimit: false,
      memoryLimit: false,
      diskLimit: false,
      binaryStdin: true,
      files: true,
      spawn: true,
      pty: true,
      snapshots: true,
      reinstallOs: true,
      cpuUsage: false,
      networkModes: ["sealed", "localhost"],
    },
    async () => ({
      backend: new KubernetesBackend({
        kubeConfig: loadKubeConfig({ kubeconfigPath }),
        namespace: process.env.SHELLS_TEST_KUBERNETES_NAMESPACE ?? "shells-sandboxes",
        agentImage: process.env.SHELLS_TEST_KUBERNETES_AGENT_IMAGE ?? "shells-control-plane:0.1.0",
        runtimeClassName: process.env.SHELLS_TEST_KUBERNETES_RUNTIME_CLASS ?? "gvisor",
      }),
      runtime: "container",
      language: "bash",
    }),
  );
} else {
  describe("SandboxBackend conformance: kubernetes (live cluster)", () => {
    it.skip("needs a cluster: set SHELLS_TEST_KUBECONFIG (none here: the backend is unverified against a live cluster)", () => {});
  });
}
