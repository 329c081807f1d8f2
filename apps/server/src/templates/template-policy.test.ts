import type { TemplateDefinition } from "@shells/contract";
import { describe, expect, it } from "vitest";
import { AppError } from "../errors.js";
import {
  applyTemplate,
  checkDefinition,
  diffDefinitions,
  placedFiles,
  type TemplatedFields,
} from "./template-policy.js";

const LOCKED: TemplateDefinition = {
  language: "python",
  runtime: "container",
  egress: { mode: "allowlist", allow: ["pypi.org", "files.pythonhosted.org"] },
  bindings: ["github"],
  resources: { cpu: 1, memoryMb: 512 },
  ttlSeconds: 600,
  locks: ["runtime", "network", "egress", "bindings", "resources", "ttl"],
};

function refusal(definition: TemplateDefinition, request: TemplatedFields): AppError | null {
  try {
    applyTemplate(definition, request);
    return null;
  } catch (error) {
    if (error instanceof AppError) return error;
    throw error;
  }
}

describe("applyTemplate", () => {
  it("fills every field the request leaves out from the template", () => {
    expect(applyTemplate(LOCKED, { env: { A: "1" } })).toMatchObject({
      language: "python",
      runtime: "container",
      egress: LOCKED.egress,
      bindings: ["github"],
      resources: { cpu: 1, memoryMb: 512 },
      ttlSeconds: 600,
      env: { A: "1" },
    });
  });

  it("lets a request narrow every locked field", () => {
    const narrowed = applyTemplate(LOCKED, {
      runtime: "microvm",
      network: "sealed",
      bindings: [],
      resources: { cpu: 0.5 },
      ttlSeconds: 60,
    });
    expect(narrowed).toMatchObject({ runtime: "microvm", network: "sealed", bindings: [] });
    expect((narrowed as TemplatedFields).egress).toBeUndefined();
    expect(
      applyTemplate(LOCKED, { egress: { mode: "allowlist", allow: ["pypi.org"] } }).egress,
    ).toEqual({ mode: "allowlist", allow: ["pypi.org"] });
  });

  it("refuses loosening each locked field with template_locked naming it", () => {
    const cases: [TemplatedFields, string][] = [
      [{ runtime: "wasm" }, "runtime"],
      [{ network: "internet" }, "egress"],
      [{ egress: { mode: "allowlist", allow: ["pypi.org", "evil.example"] } }, "egress"],
      [{ bindings: ["github", "payments"] }, "bindings"],
      [{ resources: { memoryMb: 4096 } }, "resources"],
      [{ ttlSeconds: 3600 }, "ttl"],
    ];
    for (const [request, field] of cases) {
      const error = refusal(LOCKED, request);
      expect(error?.code, field).toBe("template_locked");
      expect(error?.details, field).toMatchObject({ field });
    }
  });

  it("refuses a wider network mode than a locked one", () => {
    const local: TemplateDefinition = {
      language: "bash",
      network: "localhost",
      locks: ["network"],
    };
    expect(refusal(local, { network: "internet" })?.details).toMatchObject({ field: "network" });
    expect(
      refusal(local, { egress: { mode: "allowlist", allow: ["example.com"] } })?.details,
    ).toMatchObject({ field: "network" });
    expect(refusal(local, { network: "sealed" })).toBeNull();
  });

  it("refuses widening a locked egress list even when network is not locked", () => {
    const definition: TemplateDefinition = { ...LOCKED, locks: ["egress"] };
    expect(refusal(definition, { network: "internet" })?.details).toMatchObject({
      field: "egress",
    });
    expect(refusal(definition, { network: "localhost" })).toBeNull();
  });

  it("keeps a locked template's egress denies on a request that reaches out", () => {
    const egress = {
      mode: "allowlist" as const,
      allow: ["pypi.org", "files.pythonhosted.org"],
      deny: { ports: [80] },
    };
    const definition: TemplateDefinition = { ...LOCKED, egress, locks: ["egress"] };
    expect(
      refusal(definition, { egress: { mode: "allowlist", allow: ["pypi.org"] } })?.message,
    ).toBe("The template locks egress: the request drops what the template's egress.deny refuses.");
    const kept = { mode: "allowlist" as const, allow: ["pypi.org"], deny: { ports: [80, 25] } };
    expect(refusal(definition, { egress: kept })).toBeNull();
    expect(refusal(definition, { network: "sealed" })).toBeNull();
    // No request of its own: the template's egress, denies included, is the shell's.
    const none: TemplatedFields = {};
    expect(applyTemplate(definition, none).egress).toEqual(egress);
  });

  it("lets an unlocked field be loosened", () => {
    const definition: TemplateDefinition = { ...LOCKED, locks: [] };
    expect(applyTemplate(definition, { runtime: "wasm", ttlSeconds: 3600 })).toMatchObject({
      runtime: "wasm",
      ttlSeconds: 3600,
    });
  });
});

describe("checkDefinition", () => {
  it("refuses definitions that cannot work with template_invalid", () => {
    const bad: TemplateDefinition[] = [
      { language: "bash", locks: ["runtime"] },
      { language: "bash", locks: ["network"] },
      { language: "bash", files: [{ path: "../etc/passwd", content: "" }] },
      { language: "bash", files: [{ path: "/etc/motd", content: "" }] },
      { language: "bash", files: [{ path: ".shells/tools/x", content: "" }] },
      {
        language: "bash",
        files: [
          { path: "a.txt", content: "" },
          { path: "/workspace/a.txt", content: "" },
        ],
      },
    ];
    for (const definition of bad)
      expect(() => checkDefinition(definition), JSON.stringify(definition)).toThrow(
        expect.objectContaining({ code: "template_invalid" }),
      );
  });

  it("refuses image recipes that cannot build, naming the field", () => {
    const bad: [TemplateDefinition, string][] = [
      [{ language: "bash", runtime: "wasm", image: { packages: ["jq"] } }, "image"],
      [{ language: "bash", runtime: "microvm", image: { packages: ["jq"] } }, "image"],
      [{ language: "bash", image: { packages: ["jq", "tree", "jq"] } }, "image.packages"],
      [
        {
          language: "bash",
          image: { packages: [], files: [{ path: "/etc/../root/x", content: "" }] },
        },
        "image.files",
      ],
      [
        { language: "bash", image: { packages: [], files: [{ path: "/etc/", content: "" }] } },
        "image.files",
      ],
      [
        { language: "bash", image: { packages: [], files: [{ path: "/sys/x", content: "" }] } },
        "image.files",
      ],
      [
        {
          language: "bash",
          image: {
            packages: [],
            files: [
              { path: "/etc/a", content: "1" },
              { path: "/etc/a", content: "2" },
            ],
          },
        },
        "image.files",
      ],
    ];
    for (const [definition, field] of bad)
      expect(() => checkDefinition(definition), JSON.stringify(definition)).toThrow(
        expect.objectContaining({ code: "template_invalid", details: { field } }),
      );
    expect(() =>
      checkDefinition({
        language: "python",
        runtime: "container",
        image: {
          packages: ["jq", "libxml2-dev", "g++"],
          files: [{ path: "/etc/a.conf", content: "" }],
        },
      }),
    ).not.toThrow();
  });

  it("adds node from the npm registry and refuses a toolchain it cannot fetch, naming node", () => {
    for (const name of ["go", "rust"])
      expect(() =>
        checkDefinition({ language: "bash", image: { packages: [], toolchains: { [name]: "1" } } }),
      ).toThrow(
        expect.objectContaining({
          code: "template_invalid",
          details: { field: "image.toolchains" },
          message: expect.stringMatching(
            new RegExp(`^Toolchain ${name} .*offers node \\(from the npm registry`),
          ),
        }),
      );
    expect(() =>
      checkDefinition({ language: "bash", image: { packages: [], toolchains: { node: "22" } } }),
    ).not.toThrow();
  });

  it("places read-only files at 0444 and metadata under /workspace/.shells", () => {
    expect(
      placedFiles({
        language: "bash",
        files: [
          { path: "POLICY.md", content: "p", readOnly: true },
          { path: "run.sh", content: "r", mode: 0o755 },
        ],
        metadata: [{ kind: "mcp", name: "github.json", content: "{}" }],
      }),
    ).toEqual([
      { path: "/workspace/POLICY.md", content: "p", mode: 0o444 },
      { path: "/workspace/run.sh", content: "r", mode: 0o755 },
      { path: "/workspace/.shells/mcps/github.json", content: "{}", mode: 0o444 },
    ]);
  });
});

describe("diffDefinitions", () => {
  it("names each changed, added and removed field", () => {
    const changes = diffDefinitions(
      { ...LOCKED, env: { A: "1" }, files: [{ path: "a.txt", content: "one" }] },
      {
        ...LOCKED,
        resources: { cpu: 2, memoryMb: 512 },
        env: { B: "2" },
        files: [{ path: "a.txt", content: "two" }],
        reviewBeforeRun: true,
      },
    );
    expect(changes.map((c) => [c.field, c.change])).toEqual([
      ["env.A", "removed"],
      ["env.B", "added"],
      ["files[/workspace/a.txt]", "changed"],
      ["resources.cpu", "changed"],
      ["reviewBeforeRun", "added"],
    ]);
    expect(changes.find((c) => c.field === "resources.cpu")).toMatchObject({ from: 1, to: 2 });
  });

  it("names a changed image recipe by its packages and each baked file", () => {
    const changes = diffDefinitions(
      {
        language: "bash",
        image: { packages: ["tree", "jq"], files: [{ path: "/etc/a", content: "1" }] },
      },
      {
        language: "bash",
        image: { packages: ["jq", "tree"], files: [{ path: "/etc/b", content: "1" }] },
      },
    );
    expect(changes.map((c) => [c.field, c.change])).toEqual([
      ["image.files[/etc/a]", "removed"],
      ["image.files[/etc/b]", "added"],
    ]);
  });
});
