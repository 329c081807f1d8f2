import type { OrgEgressPolicy } from "@shells/contract";
import { describe, expect, it } from "vitest";
import { EgressPolicy, hostMatches, isNarrowing, isPublicAddress } from "./policy.js";

const OPEN: OrgEgressPolicy = {
  allowHosts: [],
  denyHosts: [],
  allowCidrs: [],
  denyCidrs: [],
  allowPorts: [],
  denyPorts: [],
  maxRequestsPerSecond: 1000,
  maxConnections: 64,
  maxBytes: 1 << 30,
};

describe("egress policy", () => {
  it("counts only the public internet as public, in every notation", () => {
    for (const address of ["93.184.216.34", "1.1.1.1", "2606:4700:4700::1111"])
      expect(isPublicAddress(address), address).toBe(true);
    for (const address of [
      "127.0.0.1",
      "10.1.2.3",
      "172.31.0.1",
      "192.168.1.1",
      "100.64.0.1",
      "169.254.169.254",
      "0.0.0.0",
      "224.0.0.1",
      "255.255.255.255",
      "::",
      "::1",
      "fd00:ec2::254",
      "fe80::1",
      "ff02::1",
      "::ffff:127.0.0.1",
      "::ffff:7f00:1",
      "::ffff:169.254.169.254",
      "64:ff9b::a9fe:a9fe",
      "2002:a9fe:a9fe::1",
      "2001:0:4136:e378:8000:63bf:3fff:fdd2",
      "not an address",
    ])
      expect(isPublicAddress(address), address).toBe(false);
  });

  it("matches exact names and *.suffix, never a bare suffix", () => {
    expect(hostMatches("Example.COM.", "example.com")).toBe(true);
    expect(hostMatches("api.example.com", "*.example.com")).toBe(true);
    expect(hostMatches("example.com", "*.example.com")).toBe(false);
    expect(hostMatches("badexample.com", "*.example.com")).toBe(false);
    expect(hostMatches("example.com.evil.net", "example.com")).toBe(false);
  });

  it("allows public addresses by default and refuses the rest", () => {
    const policy = new EgressPolicy({ org: OPEN });
    expect(policy.decide("example.com", 443, ["93.184.216.34"])).toBeNull();
    expect(policy.decide("example.com", 443, ["93.184.216.34", "10.0.0.1"])).toBe(
      "address_not_public",
    );
    expect(policy.decide("example.com", 443, [])).toBe("no_address");
  });

  it("opens a private range only where the org names it", () => {
    const policy = new EgressPolicy({ org: { ...OPEN, allowCidrs: ["10.9.0.0/16"] } });
    expect(policy.decide("lab", 80, ["10.9.1.1"])).toBeNull();
    expect(policy.decide("lab", 80, ["10.8.1.1"])).toBe("address_not_public");
    expect(policy.decide("lab", 80, ["169.254.169.254"])).toBe("address_not_public");
  });

  it("applies the org's host, CIDR and port rules before anything else", () => {
    const org = {
      ...OPEN,
      denyHosts: ["*.evil.net"],
      denyCidrs: ["93.184.0.0/16"],
      allowPorts: [443],
    };
    const policy = new EgressPolicy({ org });
    expect(policy.decideName("example.com", 80)).toBe("port_not_allowed");
    expect(policy.decideName("x.evil.net", 443)).toBe("host_denied");
    expect(policy.decide("example.com", 443, ["93.184.216.34"])).toBe("address_denied");
    const only = new EgressPolicy({ org: { ...OPEN, allowHosts: ["*.corp.example"] } });
    expect(only.decideName("example.com", 443)).toBe("host_not_allowed");
    expect(only.decideName("git.corp.example", 443)).toBeNull();
  });

  it("lets a shell narrow its org's policy but never widen it", () => {
    const shell = new EgressPolicy({
      org: OPEN,
      shell: { mode: "allowlist", allow: ["pypi.org", "10.0.0.0/8"] },
    });
    expect(shell.decideName("example.com", 443)).toBeNull(); // a CIDR entry needs the addresses
    expect(shell.decide("example.com", 443, ["93.184.216.34"])).toBe("not_in_shell_allowlist");
    expect(shell.decide("pypi.org", 443, ["151.101.0.223"])).toBeNull();
    // The shell lists a private range; its org does not open it.
    expect(shell.decide("internal", 443, ["10.1.1.1"])).toBe("address_not_public");
    const hostsOnly = new EgressPolicy({
      org: OPEN,
      shell: { mode: "allowlist", allow: ["pypi.org"] },
    });
    expect(hostsOnly.decideName("attacker.example", 443)).toBe("not_in_shell_allowlist");
  });
});

describe("narrowing a shell's allowlist", () => {
  const list = (...allow: string[]) => ({ mode: "allowlist" as const, allow });
  it("counts only changes that let nothing new through as narrowing", () => {
    const old = list("api.example.com", "*.pypi.org", "203.0.113.0/24");
    expect(isNarrowing(old, list("api.example.com"))).toBe(true);
    expect(isNarrowing(old, list("files.pypi.org", "*.cdn.pypi.org"))).toBe(true);
    expect(isNarrowing(old, list("203.0.113.128/25"))).toBe(true);
    expect(isNarrowing(old, { mode: "deny_all", allow: [] })).toBe(true);
    expect(isNarrowing(null, list("anything.example"))).toBe(true);
    expect(isNarrowing(old, list("other.example.com"))).toBe(false);
    expect(isNarrowing(old, list("pypi.org"))).toBe(false); // `*.pypi.org` is not pypi.org itself
    expect(isNarrowing(old, list("*.org"))).toBe(false);
    expect(isNarrowing(old, list("203.0.112.0/23"))).toBe(false);
    expect(isNarrowing(old, list("203.0.113.7"))).toBe(false); // a host rule, not within the CIDR
    expect(isNarrowing({ mode: "deny_all", allow: [] }, list("api.example.com"))).toBe(false);
  });
});
