import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { ServerConfig, loadConfig, settingDocs } from "./config.js";
import { PROGRAMMATIC_SETTINGS, renderConfigReference } from "./config-reference.js";

const REFERENCE = new URL("../../../docs/configuration.md", import.meta.url);

describe("the configuration reference", () => {
  it("is what the generator prints from the schema (run `npm run docs:config` after changing a setting)", () => {
    expect(readFileSync(REFERENCE, "utf8")).toBe(renderConfigReference());
  });

  it("documents every setting: each field has a variable and a description, or is set only in code", () => {
    const undocumented = Object.entries(ServerConfig.shape)
      .filter(
        ([field, schema]) =>
          !settingDocs.get(schema) && !(PROGRAMMATIC_SETTINGS as readonly string[]).includes(field),
      )
      .map(([field]) => field);
    expect(undocumented).toEqual([]);
    const reference = renderConfigReference();
    for (const variable of ["SHELLS_PORT", "SHELLS_KUBERNETES_NAMESPACE", "SHELLS_OIDC_ROLE_MAP"])
      expect(reference).toContain(`\`${variable}\``);
  });
});

describe("loading settings from their variables and flags", () => {
  it("takes a flag over its variable, and the variable over the default", () => {
    expect(loadConfig(["--port", "9000"], { SHELLS_PORT: "9100" }).port).toBe(9000);
    expect(loadConfig([], { SHELLS_PORT: "9100" }).port).toBe(9100);
    expect(loadConfig([], {}).port).toBe(8080);
  });

  it("reads the Kubernetes settings", () => {
    const config = loadConfig([], {
      SHELLS_KUBERNETES: "1",
      SHELLS_KUBERNETES_NAMESPACE: "sandboxes",
      SHELLS_KUBERNETES_RUNTIME_CLASS: "kata-qemu",
      SHELLS_KUBERNETES_IMAGES:
        "python=registry.example/python:3.12, node=registry.example/node:20",
      SHELLS_KUBERNETES_CONTROL_PLANE_LABELS: "app=shells,tier=control",
    });
    expect(config).toMatchObject({
      kubernetes: true,
      kubernetesNamespace: "sandboxes",
      kubernetesRuntimeClass: "kata-qemu",
      kubernetesImages: {
        python: "registry.example/python:3.12",
        node: "registry.example/node:20",
      },
      kubernetesControlPlaneLabels: { app: "shells", tier: "control" },
      kubernetesEgressPort: 3129,
    });
    expect(loadConfig([], {}).kubernetes).toBe(false);
  });

  it("names the variable to fix when a value is bad", () => {
    expect(() => loadConfig([], { SHELLS_KUBERNETES_IMAGES: "cobol=x" })).toThrow(
      /SHELLS_KUBERNETES_IMAGES: "cobol=x" is not <language>=<image>/,
    );
    expect(() => loadConfig([], { SHELLS_PORT: "http" })).toThrow(/--port \/ SHELLS_PORT:/);
    expect(() =>
      loadConfig([], {
        SHELLS_OIDC_ISSUER: "http://idp.example",
        SHELLS_OIDC_CLIENT_ID: "c",
        SHELLS_OIDC_ROLE_MAP: "a=admin",
      }),
    ).toThrow(/SHELLS_OIDC_ISSUER: must be an https URL/);
  });
});
