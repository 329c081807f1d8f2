import { describe, expect, it } from "vitest";
import { bindingGrantsDiff, projectEgressDiff, shellEgressDiff } from "./approval-diff.js";

describe("approval diffs", () => {
  it("names each binding a shell gains as widening and each it loses as narrowing", () => {
    expect(bindingGrantsDiff(["github"], ["github", "payments"])).toEqual({
      subject: "shell bindings",
      before: ["github"],
      after: ["github", "payments"],
      widens: ["bindings + payments"],
      narrows: [],
    });
    expect(bindingGrantsDiff(["github", "payments"], ["payments"]).narrows).toEqual([
      "bindings - github",
    ]);
  });

  it("names each destination a shell's new allowlist adds as widening, each it drops as narrowing", () => {
    const diff = shellEgressDiff(
      { mode: "allowlist", allow: ["a.example", "b.example"] },
      { mode: "allowlist", allow: ["b.example", "c.example"] },
    );
    expect(diff.widens).toEqual(["allow + c.example"]);
    expect(diff.narrows).toEqual(["allow - a.example"]);
    expect(
      shellEgressDiff({ mode: "deny_all", allow: [] }, { mode: "allowlist", allow: ["x.example"] })
        .widens,
    ).toEqual(["allow + x.example"]);
    expect(shellEgressDiff(null, { mode: "allowlist", allow: ["x.example"] }).widens).toEqual([]);
  });

  it("names a shell deny entry dropped as widening and one added as narrowing", () => {
    const diff = shellEgressDiff(
      { mode: "allowlist", allow: ["*.example"], deny: { hosts: ["a.example"], ports: [25] } },
      { mode: "allowlist", allow: ["*.example"], deny: { hosts: ["b.example"], ports: [25] } },
    );
    expect(diff.widens).toEqual(["deny.hosts - a.example"]);
    expect(diff.narrows).toEqual(["deny.hosts + b.example"]);
  });

  it("widens a project's rules when an allow list gains or is lifted, or a deny list loses", () => {
    expect(projectEgressDiff({ allowHosts: ["a.example"] }, { allowHosts: [] }).widens).toEqual([
      "allowHosts: restriction lifted",
    ]);
    expect(
      projectEgressDiff({ allowHosts: ["a.example"] }, { allowHosts: ["a.example", "b.example"] })
        .widens,
    ).toEqual(["allowHosts + b.example"]);
    expect(projectEgressDiff({ denyPorts: [25, 587] }, { denyPorts: [25] }).widens).toEqual([
      "denyPorts - 587",
    ]);
    expect(projectEgressDiff({ allowCidrs: [] }, {}).widens).toEqual([
      "allowCidrs: restriction lifted",
    ]);
  });

  it("finds nothing widening in a change that only narrows", () => {
    const diff = projectEgressDiff(null, {
      allowHosts: ["a.example"],
      denyHosts: ["*.bad.example"],
      allowCidrs: [],
    });
    expect(diff.widens).toEqual([]);
    expect(diff.narrows).toEqual([
      "allowHosts: only a.example",
      "allowCidrs: only none",
      "denyHosts + *.bad.example",
    ]);
  });
});
