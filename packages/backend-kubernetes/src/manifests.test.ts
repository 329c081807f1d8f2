import type { V1Container, V1Pod } from "@kubernetes/client-node";
import type { SandboxSpec } from "@shells/sandbox";
import { describe, expect, it } from "vitest";
import {
  DEFAULT_IMAGES,
  buildPod,
  buildShellObjects,
  type ManifestSettings,
} from "./internal/manifests.js";
import {
  KUBERNETES_SCHEMA_VERSION,
  assertValidObject,
  problemsOf,
  type KubernetesObject,
} from "./test-support/schemas.js";

/**
 * The objects a shell is made of, checked without a cluster: each one against the Kubernetes
 * 1.33 OpenAPI schemas (strictly: a field the schema does not know fails), and each security field
 * on its own.
 */

const SETTINGS: ManifestSettings = {
  namespace: "shells-sandboxes",
  instance: "default",
  runtimeClassName: "gvisor",
  images: DEFAULT_IMAGES,
  agentImage: "shells-control-plane:0.1.0",
  storageClassName: null,
  snapshotsDiskMb: 1024,
  egress: {
    host: "10.244.0.7",
    port: 3129,
    controlPlaneNamespace: "shells",
    controlPlaneLabels: { "app.kubernetes.io/name": "shells-control-plane" },
  },
};

const spec = (extra: Partial<SandboxSpec> = {}): SandboxSpec => ({
  shellId: "sh-0123456789",
  language: "python",
  runtime: "container",
  network: "sealed",
  resources: { cpu: 1.5, memoryMb: 512, pids: 256, diskMb: 2048 },
  env: { API_KEY: "sk-live-123", GREETING: "hello" },
  ...extra,
});

const internet = spec({ network: "internet", egress: { socketPath: "/run/shells/egress/x.sock" } });

const asObject = (o: object) => o as unknown as KubernetesObject;
const container = (pod: V1Pod, name: string): V1Container => {
  const found = [...(pod.spec?.containers ?? []), ...(pod.spec?.initContainers ?? [])].find(
    (c) => c.name === name,
  );
  if (!found) throw new Error(`no container ${name}`);
  return found;
};

describe(`shell objects against the Kubernetes ${KUBERNETES_SCHEMA_VERSION} schemas`, () => {
  it("uses the 1.33 schemas: fields new in 1.33 are known, a 1.34 field is not", async () => {
    // PodStatus.observedGeneration arrived in 1.33; PodSpec.hostnameOverride in 1.34.
    const pod = buildPod(SETTINGS, spec()) as unknown as KubernetesObject;
    expect(await problemsOf({ ...pod, status: { observedGeneration: 1 } })).toEqual([]);
    const later = { ...pod, spec: { ...(pod.spec as object), hostnameOverride: "x" } };
    expect(await problemsOf(later)).toEqual([
      "/spec/hostnameOverride is not a field of the schema",
    ]);
  });

  it("catches a misspelt field and a malformed quantity, so the checks below mean something", async () => {
    const pod = buildPod(SETTINGS, spec()) as unknown as { spec: { containers: V1Container[] } };
    const misspelt = structuredClone(pod);
    (misspelt.spec.containers[0]!.securityContext as Record<string, unknown>).runAsNonroot = true;
    expect((await problemsOf(asObject(misspelt))).join()).toContain(
      "/spec/containers/0/securityContext/runAsNonroot is not a field",
    );
    const malformed = structuredClone(pod);
    malformed.spec.containers[0]!.resources!.limits!.memory = "512 MiB";
    expect((await problemsOf(asObject(malformed))).join()).toContain("quantity");
  });

  for (const [label, shell] of [
    ["a sealed python shell", spec()],
    ["an internet shell with its egress proxy", internet],
    ["a bash shell without env", spec({ language: "bash", env: {} })],
  ] as const) {
    it(`validates every object of ${label}, and its maintenance Pod`, async () => {
      const objects = buildShellObjects(SETTINGS, shell, "token-abcdefghijklmnop");
      for (const object of Object.values(objects)) await assertValidObject(asObject(object));
      await assertValidObject(asObject(buildPod(SETTINGS, shell, "maintenance")));
    });
  }
});

describe("a shell Pod's security", () => {
  const pod = buildPod(SETTINGS, internet);
  const podSpec = pod.spec!;

  it("runs under the configured RuntimeClass, or the cluster default when none is set", () => {
    expect(podSpec.runtimeClassName).toBe("gvisor");
    expect(buildPod({ ...SETTINGS, runtimeClassName: null }, spec()).spec).not.toHaveProperty(
      "runtimeClassName",
    );
    expect(
      buildPod({ ...SETTINGS, runtimeClassName: "kata-qemu" }, spec()).spec?.runtimeClassName,
    ).toBe("kata-qemu");
  });

  it("gets no service account token, no host namespaces and no service links", () => {
    expect(podSpec.automountServiceAccountToken).toBe(false);
    expect(podSpec.hostNetwork).toBe(false);
    expect(podSpec.hostPID).toBe(false);
    expect(podSpec.hostIPC).toBe(false);
    expect(podSpec.shareProcessNamespace).toBe(false);
    expect(podSpec.enableServiceLinks).toBe(false);
    expect(podSpec.volumes?.some((v) => "hostPath" in v)).toBe(false);
  });

  it("runs every process as a non-root user with seccomp RuntimeDefault", () => {
    expect(podSpec.securityContext?.runAsNonRoot).toBe(true);
    expect(podSpec.securityContext?.runAsUser).toBe(1000);
    expect(podSpec.securityContext?.seccompProfile).toEqual({ type: "RuntimeDefault" });
  });

  for (const name of ["shell", "agent", "prepare"]) {
    it(`confines the ${name} container: non-root, no capabilities, read-only root, no escalation`, () => {
      const security = container(pod, name).securityContext!;
      expect(security.runAsNonRoot).toBe(true);
      expect(security.runAsUser).toBe(1000);
      expect(security.privileged).toBe(false);
      expect(security.allowPrivilegeEscalation).toBe(false);
      expect(security.readOnlyRootFilesystem).toBe(true);
      expect(security.capabilities).toEqual({ drop: ["ALL"] });
      expect(security.capabilities?.add).toBeUndefined();
      expect(security.seccompProfile).toEqual({ type: "RuntimeDefault" });
    });
  }

  it("takes its limits from the shell's resources, requests equal to limits", () => {
    const resources = container(pod, "shell").resources!;
    expect(resources.limits).toMatchObject({ cpu: "1500m", memory: "512Mi" });
    expect(resources.requests).toEqual(resources.limits);
    expect(buildShellObjects(SETTINGS, internet, null).statePvc.spec?.resources?.requests).toEqual({
      storage: "2048Mi",
    });
  });

  it("reads the shell's environment from its Secret, and never hands the egress credential to the shell", () => {
    const shellEnv = container(pod, "shell").env!;
    const apiKey = shellEnv.find((e) => e.name === "API_KEY")!;
    expect(apiKey.value).toBeUndefined();
    expect(apiKey.valueFrom?.secretKeyRef).toEqual({
      name: "shells-sh-0123456789",
      key: "env.API_KEY",
    });
    expect(JSON.stringify(pod)).not.toContain("sk-live-123");
    expect(shellEnv.some((e) => e.valueFrom?.secretKeyRef?.key === "egress-token")).toBe(false);
    const agentEnv = container(pod, "agent").env!;
    expect(
      agentEnv.find((e) => e.name === "SHELLS_EGRESS_TOKEN")?.valueFrom?.secretKeyRef?.key,
    ).toBe("egress-token");
    // The snapshots volume is the agent's alone.
    expect(container(pod, "shell").volumeMounts?.map((m) => m.name)).toEqual(["state", "tmp"]);
  });

  it("points an internet shell's clients at the egress forwarder on its loopback, and a sealed shell's at nothing", () => {
    const env = (p: V1Pod) =>
      Object.fromEntries(container(p, "shell").env!.map((e) => [e.name, e.value]));
    expect(env(pod)).toMatchObject({
      HTTPS_PROXY: "http://127.0.0.1:3128",
      NO_PROXY: "localhost,127.0.0.1,::1",
    });
    const sealed = buildPod(SETTINGS, spec());
    expect(env(sealed)).not.toHaveProperty("HTTPS_PROXY");
    expect(container(sealed, "agent").command).not.toContain("node");
    expect(container(sealed, "agent").env).toEqual([]);
  });

  it("has no resolver and keeps an ended Pod ended", () => {
    expect(podSpec.dnsPolicy).toBe("None");
    expect(podSpec.dnsConfig?.nameservers).toEqual(["127.0.0.1"]);
    expect(podSpec.restartPolicy).toBe("Never");
  });

  it("gives a maintenance Pod only the agent, no egress, and a deadline", () => {
    const maintenance = buildPod(SETTINGS, internet, "maintenance");
    expect(maintenance.metadata?.name).toBe("shells-sh-0123456789-maint");
    expect(maintenance.spec?.containers.map((c) => c.name)).toEqual(["agent"]);
    expect(maintenance.spec?.containers[0]?.env).toEqual([]);
    expect(maintenance.spec?.activeDeadlineSeconds).toBe(900);
    expect(maintenance.spec?.automountServiceAccountToken).toBe(false);
  });
});

describe("a shell's NetworkPolicy", () => {
  it("denies everything both ways for a sealed shell", () => {
    const { networkPolicy } = buildShellObjects(SETTINGS, spec(), null);
    expect(networkPolicy.spec?.policyTypes).toEqual(["Ingress", "Egress"]);
    expect(networkPolicy.spec?.ingress).toEqual([]);
    expect(networkPolicy.spec?.egress).toEqual([]);
    expect(networkPolicy.spec?.podSelector?.matchLabels).toMatchObject({
      "shells.dev/shell-id": "sh-0123456789",
    });
  });

  it("lets an internet shell reach the control plane's egress bridge port and nothing else", () => {
    const { networkPolicy } = buildShellObjects(SETTINGS, internet, "t");
    expect(networkPolicy.spec?.ingress).toEqual([]);
    expect(networkPolicy.spec?.egress).toEqual([
      {
        to: [
          {
            namespaceSelector: { matchLabels: { "kubernetes.io/metadata.name": "shells" } },
            podSelector: { matchLabels: { "app.kubernetes.io/name": "shells-control-plane" } },
          },
        ],
        ports: [{ protocol: "TCP", port: 3129 }],
      },
    ]);
    // No address block at all: neither the internet nor the cloud metadata address.
    expect(JSON.stringify(networkPolicy)).not.toMatch(/ipBlock|0\.0\.0\.0|169\.254/);
  });
});

describe("a shell's Secret", () => {
  it("holds the spec, each env variable under its own key and the egress credential", () => {
    const { secret } = buildShellObjects(SETTINGS, internet, "token-abcdefghijklmnop");
    expect(secret.immutable).toBe(true);
    expect(Object.keys(secret.stringData!).sort()).toEqual([
      "egress-token",
      "env.API_KEY",
      "env.GREETING",
      "spec.json",
    ]);
    const stored = JSON.parse(secret.stringData!["spec.json"]!) as Record<string, unknown>;
    expect(stored).not.toHaveProperty("env");
    expect(stored.envNames).toEqual(["API_KEY", "GREETING"]);
  });

  it("labels every object for reconciliation by shell and instance", () => {
    for (const object of Object.values(buildShellObjects(SETTINGS, spec(), null)))
      expect(object.metadata?.labels).toMatchObject({
        "app.kubernetes.io/managed-by": "shells",
        "shells.dev/instance": "default",
        "shells.dev/shell-id": "sh-0123456789",
      });
  });
});
