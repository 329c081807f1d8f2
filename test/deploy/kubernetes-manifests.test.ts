import { spawnSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { documentedSettings, ServerConfig } from "../../apps/server/src/config.js";
import { KUBERNETES_API_PERMISSIONS } from "@shells/backend-kubernetes";
import { describe, expect, it } from "vitest";
import { parseAllDocuments } from "yaml";
import {
  KUBERNETES_SCHEMA_VERSION,
  assertValidObject,
  type KubernetesObject,
} from "../../packages/backend-kubernetes/src/test-support/schemas.js";

/**
 * deploy/kubernetes rendered the way an operator renders it (`kubectl kustomize`), every object
 * validated against the Kubernetes OpenAPI schemas, and the properties that matter checked one by
 * one. There is no cluster here: this shows the manifests are well-formed and say what they should,
 * not that a cluster accepts and runs them.
 */

const ROOT = join(import.meta.dirname, "../..");
const KUBECTL = process.env.SHELLS_KUBECTL ?? "kubectl";
const kubectl = spawnSync(KUBECTL, ["version", "--client"], { encoding: "utf8" });
const haveKubectl = kubectl.status === 0;
if (!haveKubectl)
  console.warn(
    `SKIPPED deploy/kubernetes rendering: no ${KUBECTL} (Debian: apt-get install kubernetes-client)`,
  );

/** Rendered YAML, read field by field: the schemas checked its shape already. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Json = any;
type Rendered = (KubernetesObject & {
  spec?: Json;
  rules?: Json;
  subjects?: Json;
  handler?: string;
})[];

function render(overlay: string): Rendered {
  const result = spawnSync(
    KUBECTL,
    ["kustomize", join(ROOT, "deploy/kubernetes/overlays", overlay)],
    {
      encoding: "utf8",
    },
  );
  if (result.status !== 0) throw new Error(`kubectl kustomize ${overlay}: ${result.stderr}`);
  return parseAllDocuments(result.stdout)
    .map((doc) => doc.toJS() as Rendered[number] | null)
    .filter((object): object is Rendered[number] => object !== null);
}

const find = (objects: Rendered, kind: string, name: string) => {
  const found = objects.find((o) => o.kind === kind && o.metadata?.name === name);
  if (!found) throw new Error(`no ${kind} ${name}`);
  return found;
};

const envOf = (deployment: Rendered[number]) =>
  Object.fromEntries(
    (
      deployment.spec.template.spec.containers[0].env as {
        name: string;
        value?: string;
        valueFrom?: unknown;
      }[]
    ).map((e) => [e.name, e.value ?? e.valueFrom]),
  );

/** Variables the server reads: its documented settings, and the PostgreSQL store's URL. */
const KNOWN_VARIABLES = new Set([
  ...documentedSettings(ServerConfig.shape).map((s) => s.doc.env),
  "SHELLS_OIDC_ISSUER",
  "SHELLS_OIDC_CLIENT_ID",
  "SHELLS_OIDC_CLIENT_SECRET",
  "SHELLS_OIDC_ROLE_MAP",
  // Read by the PostgreSQL store (SHELLS_DATABASE_URL=postgres://…).
  "SHELLS_DATABASE_URL",
]);

describe.skipIf(!haveKubectl)(
  `deploy/kubernetes (Kubernetes ${KUBERNETES_SCHEMA_VERSION} schemas)`,
  () => {
    const overlays = haveKubectl
      ? { "self-host": render("self-host"), hosted: render("hosted") }
      : null;

    for (const overlay of ["self-host", "hosted"] as const) {
      describe(`the ${overlay} overlay`, () => {
        const objects = () => overlays![overlay];

        it("renders objects that all validate against the schemas", async () => {
          expect(objects().length).toBeGreaterThan(10);
          for (const object of objects()) await assertValidObject(object);
        });

        it("has the namespaces, the gVisor RuntimeClass, a LimitRange, a ResourceQuota, a Service and a PodDisruptionBudget", () => {
          const sandboxes = find(objects(), "Namespace", "shells-sandboxes");
          expect(sandboxes.metadata).toMatchObject({
            labels: { "pod-security.kubernetes.io/enforce": "restricted" },
          });
          find(objects(), "Namespace", "shells");
          expect(find(objects(), "RuntimeClass", "gvisor").handler).toBe("runsc");
          expect(find(objects(), "LimitRange", "shells-sandbox-limits").metadata?.namespace).toBe(
            "shells-sandboxes",
          );
          expect(
            find(objects(), "ResourceQuota", "shells-sandbox-quota").spec.hard.pods,
          ).toBeDefined();
          expect(find(objects(), "Service", "shells").spec.selector).toEqual({
            "app.kubernetes.io/name": "shells-control-plane",
          });
          find(objects(), "PodDisruptionBudget", "shells-control-plane");
        });

        it("grants the control plane exactly the API requests the backend makes, in the shells' namespace", () => {
          const role = find(objects(), "Role", "shells-backend");
          expect(role.metadata?.namespace).toBe("shells-sandboxes");
          const rules = (
            role.rules as { apiGroups: string[]; resources: string[]; verbs: string[] }[]
          ).map((r) => ({
            apiGroup: r.apiGroups.join(),
            resource: r.resources.join(),
            verbs: [...r.verbs].sort(),
          }));
          expect(rules).toEqual(
            KUBERNETES_API_PERMISSIONS.namespaced.map((p) => ({
              ...p,
              verbs: [...p.verbs].sort(),
            })),
          );
          const clusterRole = find(objects(), "ClusterRole", "shells-runtimeclass-reader");
          expect(clusterRole.rules).toEqual([
            {
              apiGroups: ["node.k8s.io"],
              resources: ["runtimeclasses"],
              resourceNames: ["gvisor"],
              verbs: ["get"],
            },
          ]);
          for (const binding of [
            find(objects(), "RoleBinding", "shells-backend"),
            find(objects(), "ClusterRoleBinding", "shells-runtimeclass-reader"),
          ])
            expect(binding.subjects).toEqual([
              { kind: "ServiceAccount", name: "shells-control-plane", namespace: "shells" },
            ]);
          // Nothing broader anywhere: no wildcard, no other role.
          expect(JSON.stringify(objects().filter((o) => /Role/.test(o.kind)))).not.toContain('"*"');
          expect(
            objects().filter((o) => o.kind === "Role" || o.kind === "ClusterRole"),
          ).toHaveLength(2);
        });

        it("runs the control plane non-root, without capabilities, on a read-only root, with both probes", () => {
          const pod = find(objects(), "Deployment", "shells-control-plane").spec.template.spec;
          expect(pod.serviceAccountName).toBe("shells-control-plane");
          // It calls the API server: the one Pod that needs its account's token.
          expect(pod.automountServiceAccountToken).toBe(true);
          expect(pod.securityContext).toMatchObject({
            runAsNonRoot: true,
            seccompProfile: { type: "RuntimeDefault" },
          });
          const [container] = pod.containers;
          expect(container.securityContext).toEqual({
            runAsNonRoot: true,
            allowPrivilegeEscalation: false,
            privileged: false,
            readOnlyRootFilesystem: true,
            capabilities: { drop: ["ALL"] },
            seccompProfile: { type: "RuntimeDefault" },
          });
          expect(container.livenessProbe.httpGet).toEqual({ path: "/healthz", port: "http" });
          expect(container.readinessProbe.httpGet).toEqual({ path: "/readyz", port: "http" });
          expect(container.ports.map((p: { containerPort: number }) => p.containerPort)).toEqual([
            8080, 3129,
          ]);
        });

        it("configures the Kubernetes backend with variables the server reads", () => {
          const env = envOf(find(objects(), "Deployment", "shells-control-plane"));
          expect(env).toMatchObject({
            SHELLS_KUBERNETES: "1",
            SHELLS_KUBERNETES_NAMESPACE: "shells-sandboxes",
            SHELLS_KUBERNETES_RUNTIME_CLASS: "gvisor",
            SHELLS_KUBERNETES_EGRESS_HOST: { fieldRef: { fieldPath: "status.podIP" } },
            SHELLS_HOST: "0.0.0.0",
          });
          for (const name of Object.keys(env)) expect(KNOWN_VARIABLES, name).toContain(name);
          // The egress bridge port the shells' NetworkPolicy opens is the one the bridge listens on.
          const policy = find(objects(), "NetworkPolicy", "shells-control-plane");
          expect(JSON.stringify(policy.spec.ingress)).toContain('"port":3129');
          expect(env.SHELLS_KUBERNETES_EGRESS_PORT).toBe("3129");
        });
      });
    }

    it("self-host: one replica, recreated, with SQLite's data directory on a PVC", () => {
      const objects = overlays!["self-host"];
      const deployment = find(objects, "Deployment", "shells-control-plane");
      expect(deployment.spec.replicas).toBe(1);
      expect(deployment.spec.strategy).toEqual({ type: "Recreate" });
      const data = deployment.spec.template.spec.volumes.find(
        (v: { name: string }) => v.name === "data",
      );
      expect(data).toEqual({ name: "data", persistentVolumeClaim: { claimName: "shells-data" } });
      find(objects, "PersistentVolumeClaim", "shells-data");
      const env = envOf(deployment);
      expect(env).not.toHaveProperty("SHELLS_DATABASE_URL");
      expect(env).not.toHaveProperty("SHELLS_PROFILE");
    });

    it("hosted: several replicas over PostgreSQL, in the hosted profile with OIDC, secrets from Secrets", () => {
      const objects = overlays!.hosted;
      const deployment = find(objects, "Deployment", "shells-control-plane");
      expect(deployment.spec.replicas).toBeGreaterThanOrEqual(2);
      const env = envOf(deployment);
      expect(env.SHELLS_PROFILE).toBe("hosted");
      for (const [name, secret] of [
        ["SHELLS_DATABASE_URL", "shells-database"],
        ["SHELLS_SEALING_KEY", "shells-sealing"],
        ["SHELLS_OIDC_ISSUER", "shells-oidc"],
        ["SHELLS_OIDC_CLIENT_ID", "shells-oidc"],
        ["SHELLS_OIDC_CLIENT_SECRET", "shells-oidc"],
        ["SHELLS_OIDC_ROLE_MAP", "shells-oidc"],
      ])
        expect(env[name!], name).toMatchObject({ secretKeyRef: { name: secret } });
      expect(objects.some((o) => o.kind === "PersistentVolumeClaim")).toBe(false);
      expect(find(objects, "PodDisruptionBudget", "shells-control-plane").spec).toMatchObject({
        minAvailable: 2,
      });
    });
  },
);

describe("the control plane's image and systemd unit", () => {
  const dockerfile = readFileSync(join(ROOT, "deploy/Dockerfile"), "utf8");

  it("builds in two stages on node:20-bookworm-slim and runs as the non-root node user", () => {
    expect(dockerfile.match(/^FROM node:20-bookworm-slim/gm)).toHaveLength(2);
    expect(dockerfile).toMatch(/^USER node$/m);
    expect(dockerfile).toMatch(/^CMD \["node", "apps\/server\/dist\/server\.js"\]$/m);
  });

  it("puts the agent's egress forwarder where shell Pods run it from", async () => {
    const { AGENT_FORWARDER } =
      await import("../../packages/backend-kubernetes/src/internal/manifests.js");
    expect(dockerfile).toMatch(/^WORKDIR \/app$/m);
    expect(AGENT_FORWARDER).toBe("/app/packages/backend-kubernetes/dist/agent/egress-forwarder.js");
    expect(
      existsSync(join(ROOT, "packages/backend-kubernetes/src/agent/egress-forwarder.ts")),
    ).toBe(true);
  });

  const analyze = spawnSync("systemd-analyze", ["--version"]).status === 0;
  it.skipIf(!analyze)("has a systemd unit systemd-analyze accepts", () => {
    const verify = spawnSync(
      "systemd-analyze",
      ["verify", join(ROOT, "deploy/systemd/shells.service")],
      {
        encoding: "utf8",
      },
    );
    expect(verify.status, verify.stderr).toBe(0);
    expect(verify.stderr.trim()).toBe("");
  });
});
