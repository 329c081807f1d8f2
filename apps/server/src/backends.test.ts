import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { createKubernetesBackend } from "./backends.js";
import { loadConfig } from "./config.js";
import { createLogger } from "./logger.js";

const dir = mkdtempSync(join(tmpdir(), "shells-backends-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** A kubeconfig naming a cluster that does not answer (a closed loopback port). */
function kubeconfig(): string {
  const path = join(dir, "kubeconfig");
  writeFileSync(
    path,
    [
      "apiVersion: v1",
      "kind: Config",
      "clusters: [{name: c, cluster: {server: 'https://127.0.0.1:9', insecure-skip-tls-verify: true}}]",
      "users: [{name: u, user: {token: t}}]",
      "contexts: [{name: x, context: {cluster: c, user: u}}]",
      "current-context: x",
    ].join("\n"),
  );
  return path;
}

describe("the Kubernetes backend as the server configures it", () => {
  it("takes its namespace, RuntimeClass and images from SHELLS_KUBERNETES_*", async () => {
    const config = loadConfig(["--data-dir", dir], {
      SHELLS_KUBERNETES: "1",
      SHELLS_KUBERNETES_KUBECONFIG: kubeconfig(),
      SHELLS_KUBERNETES_NAMESPACE: "sandboxes",
      SHELLS_KUBERNETES_RUNTIME_CLASS: "none",
      SHELLS_KUBERNETES_IMAGES: "python=registry.example/python:3.12",
    });
    const backend = await createKubernetesBackend(config, createLogger("silent"));
    expect(backend.name).toBe("kubernetes");
    expect(backend.settings).toMatchObject({
      namespace: "sandboxes",
      runtimeClassName: null,
      images: { python: "registry.example/python:3.12", bash: expect.stringContaining("debian") },
      egress: null,
    });
    // Without the egress bridge, shells get no way out.
    expect(backend.networkModes).toEqual(["sealed", "localhost"]);
  });

  it("reports a cluster that does not answer as unavailable, with the reason", async () => {
    const config = loadConfig(["--data-dir", dir], {
      SHELLS_KUBERNETES: "1",
      SHELLS_KUBERNETES_KUBECONFIG: kubeconfig(),
    });
    const backend = await createKubernetesBackend(config, createLogger("silent"));
    const [offered] = await backend.availability();
    expect(offered).toMatchObject({
      runtime: "container",
      available: false,
      backend: "kubernetes",
    });
    expect(offered?.reason).toContain("listing pods in namespace shells-sandboxes");
    await backend.close();
  });
});

describe("the container sandbox pool as the server configures it", () => {
  it("reads SHELLS_CONTAINER_POOL per language and pools nothing when it is unset", () => {
    expect(loadConfig(["--data-dir", dir], {}).containerPool).toEqual({});
    expect(
      loadConfig(["--data-dir", dir], { SHELLS_CONTAINER_POOL: "bash=2, python=1" }).containerPool,
    ).toEqual({ bash: 2, python: 1 });
    expect(
      loadConfig(["--data-dir", dir], { SHELLS_CONTAINER_POOL: "bash=1,bash:internet=3" })
        .containerPool,
    ).toEqual({ bash: 1, "bash:internet": 3 });
  });

  it.each([
    "bash",
    "cobol=1",
    "bash=-1",
    "bash=101",
    "bash:web=1",
    "bash:internet",
    "bash=1,bash=2",
  ])("refuses SHELLS_CONTAINER_POOL=%s at start, naming the entry", (value) => {
    expect(() => loadConfig(["--data-dir", dir], { SHELLS_CONTAINER_POOL: value })).toThrow(
      value.split(",")[0],
    );
  });
});
