import type { EgressRuleLists, EgressRules, OrgEgressPolicy, ShellEgress } from "@shells/contract";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  EgressPolicy,
  hostMatches,
  isNarrowing,
  isPublicAddress,
  type EgressLevels,
} from "./policy.js";

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

  it("refuses what a shell's deny lists name, within its allowlist and above its org's policy", () => {
    const policy = new EgressPolicy({
      org: { ...OPEN, allowCidrs: ["10.9.0.0/16"] },
      shell: {
        mode: "allowlist",
        allow: ["*.example.com", "10.9.0.0/16"],
        deny: {
          hosts: ["admin.example.com", "*.internal.example.com"],
          cidrs: ["10.9.3.0/24"],
          ports: [22],
        },
      },
    });
    expect(policy.decide("api.example.com", 443, ["93.184.216.34"])).toBeNull();
    expect(policy.decideName("admin.example.com", 443)).toBe("host_denied");
    expect(policy.decideName("db.internal.example.com", 443)).toBe("host_denied");
    // A denied name is refused before it is looked up (a DNS question: no port yet).
    expect(policy.decideName("admin.example.com", null)).toBe("host_denied");
    expect(policy.decideName("api.example.com", 22)).toBe("port_denied");
    expect(policy.decide("lab", 80, ["10.9.1.1"])).toBeNull();
    expect(policy.decide("lab", 80, ["10.9.3.7"])).toBe("address_denied");
    // A deny never widens: allowing a port or range there is not a thing, and a host not on the
    // allowlist stays refused whatever the deny lists say.
    expect(policy.decide("other.example.org", 443, ["93.184.216.34"])).toBe(
      "not_in_shell_allowlist",
    );
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

  it("counts a deny added as narrowing and a deny dropped or shrunk as widening", () => {
    const old: ShellEgress = {
      mode: "allowlist",
      allow: ["*.example.com"],
      deny: { hosts: ["*.admin.example.com"], cidrs: ["203.0.113.0/25"], ports: [22] },
    };
    const same = { ...old, deny: { ...old.deny } };
    expect(isNarrowing(old, same)).toBe(true);
    expect(isNarrowing(old, { ...old, deny: { ...old.deny, ports: [22, 25] } })).toBe(true);
    expect(isNarrowing(old, { ...old, deny: { ...old.deny, cidrs: ["203.0.113.0/24"] } })).toBe(
      true,
    );
    expect(isNarrowing(old, { ...old, deny: { ...old.deny, hosts: ["*.example.com"] } })).toBe(
      true,
    );
    expect(isNarrowing(list("*.example.com"), old)).toBe(true);
    expect(isNarrowing(old, list("*.example.com"))).toBe(false);
    expect(isNarrowing(old, { ...old, deny: { ...old.deny, ports: [] } })).toBe(false);
    expect(isNarrowing(old, { ...old, deny: { ...old.deny, cidrs: ["203.0.113.0/26"] } })).toBe(
      false,
    );
    expect(
      isNarrowing(old, { ...old, deny: { ...old.deny, hosts: ["x.admin.example.com"] } }),
    ).toBe(false);
  });
});

describe("egress rules in levels: org, project, template, shell", () => {
  it("refuses at a project what the org allows, and reports the rule that refused", () => {
    const project: EgressRules = { denyHosts: ["*.blocked.example"], denyPorts: [25] };
    const policy = new EgressPolicy({ org: OPEN, project });
    expect(policy.decideName("api.blocked.example", 443)).toBe("host_denied");
    expect(policy.decideName("mail.example", 25)).toBe("port_denied");
    expect(policy.decide("mail.example", 443, ["93.184.216.34"])).toBeNull();
    // The same org without the project's rules allows both.
    expect(new EgressPolicy({ org: OPEN }).decideName("api.blocked.example", 443)).toBeNull();
  });

  it("narrows by every level's allow lists: hosts and ports must be on each list that exists", () => {
    const org = { ...OPEN, allowHosts: ["*.example.com"] };
    const project: EgressRules = { allowHosts: ["*.api.example.com", "www.example.com"] };
    const template: EgressRules = { allowPorts: [443] };
    const policy = new EgressPolicy({ org, project, template });
    expect(policy.decideName("v1.api.example.com", 443)).toBeNull();
    expect(policy.decideName("v1.api.example.com", 80)).toBe("port_not_allowed");
    expect(policy.decideName("cdn.example.com", 443)).toBe("host_not_allowed"); // the project's list
    expect(policy.decideName("www.other.net", 443)).toBe("host_not_allowed"); // the org's list
    // A project listing a host its org does not allow does not open it.
    const wider = new EgressPolicy({ org, project: { allowHosts: ["www.other.net"] } });
    expect(wider.decideName("www.other.net", 443)).toBe("host_not_allowed");
  });

  it("keeps open only the non-public ranges every level with a list names", () => {
    const org = { ...OPEN, allowCidrs: ["10.0.0.0/8"] };
    const lab = new EgressPolicy({ org, project: { allowCidrs: ["10.1.0.0/16"] } });
    expect(lab.decide("db", 5432, ["10.1.2.3"])).toBeNull();
    expect(lab.decide("db", 5432, ["10.2.0.1"])).toBe("address_not_public");
    // A project's list beyond the org's opens nothing; an empty one closes the org's ranges.
    const beyond = new EgressPolicy({ org, project: { allowCidrs: ["192.168.0.0/16"] } });
    expect(beyond.decide("db", 5432, ["192.168.1.1"])).toBe("address_not_public");
    const closed = new EgressPolicy({ org, template: { allowCidrs: [] } });
    expect(closed.decide("db", 5432, ["10.1.2.3"])).toBe("address_not_public");
    // Without a list, a level leaves non-public ranges to the org.
    const silent = new EgressPolicy({ org, project: { denyHosts: ["x.example"] } });
    expect(silent.decide("db", 5432, ["10.1.2.3"])).toBeNull();
    // Public addresses are never a matter of allowCidrs; denyCidrs refuses at any level.
    expect(lab.decide("example.com", 443, ["93.184.216.34"])).toBeNull();
    const denied = new EgressPolicy({ org, template: { denyCidrs: ["93.184.0.0/16"] } });
    expect(denied.decide("example.com", 443, ["93.184.216.34"])).toBe("address_denied");
  });

  it("lets no shell allowlist widen what its project refuses", () => {
    const policy = new EgressPolicy({
      org: OPEN,
      project: { denyHosts: ["pypi.org"] },
      shell: { mode: "allowlist", allow: ["pypi.org", "0.0.0.0/0"] },
    });
    expect(policy.decide("pypi.org", 443, ["151.101.0.223"])).toBe("host_denied");
  });
});

// Small universes, so that random rules and destinations often meet.
const HOST_RULES = ["a.example", "*.a.example", "b.example", "*.example", "evil.test"];
const CIDRS = ["10.0.0.0/8", "10.1.0.0/16", "93.184.0.0/16", "127.0.0.1/32", "2606:4700::/32"];
const NAMES = ["a.example", "x.a.example", "b.example", "c.example", "evil.test"];
const ADDRESSES = [
  "10.1.2.3",
  "10.9.9.9",
  "93.184.216.34",
  "1.1.1.1",
  "127.0.0.1",
  "169.254.169.254",
  "2606:4700::1111",
  "::ffff:10.1.2.3",
];
const PORTS = [22, 80, 443, 8080];

/** A list: often empty (so that other rules get their say), else a few entries. */
const some = <T>(values: T[]) =>
  fc.oneof(fc.constant<T[]>([]), fc.subarray(values, { minLength: 1, maxLength: 3 }));
const lists = {
  allowHosts: some(HOST_RULES),
  denyHosts: some(HOST_RULES),
  allowCidrs: some(CIDRS),
  denyCidrs: some(CIDRS),
  allowPorts: some(PORTS),
  denyPorts: some(PORTS),
};
const orgRules: fc.Arbitrary<EgressRuleLists> = fc.record(lists);
const levelRules: fc.Arbitrary<EgressRules> = fc.record(lists, { requiredKeys: [] });
const shellAllowlist: fc.Arbitrary<ShellEgress | null> = fc.option(
  fc.record({
    mode: fc.constantFrom("allowlist" as const, "deny_all" as const),
    allow: some([...HOST_RULES, ...CIDRS]),
  }),
);
/** A name with what it resolved to, or an IP literal (which resolves to itself). */
const destination = fc.oneof(
  fc.record({
    host: fc.constantFrom(...NAMES),
    addresses: fc.subarray(ADDRESSES, { minLength: 1, maxLength: 2 }),
  }),
  fc.constantFrom(...ADDRESSES).map((address) => ({ host: address, addresses: [address] })),
);
/** An org that allows everything: under it, a lower level decides by its own rules alone. */
const EVERYTHING: EgressRuleLists = {
  allowHosts: [],
  denyHosts: [],
  allowCidrs: ["0.0.0.0/0", "::/0"],
  denyCidrs: [],
  allowPorts: [],
  denyPorts: [],
};

/** Each level's rules as a policy of their own. */
function alone(levels: EgressLevels): EgressPolicy[] {
  return [
    new EgressPolicy({ org: levels.org }),
    new EgressPolicy({ org: EVERYTHING, project: levels.project }),
    new EgressPolicy({ org: EVERYTHING, template: levels.template }),
    new EgressPolicy({ org: EVERYTHING, shell: levels.shell }),
  ];
}

describe("the effective egress policy (property)", () => {
  const levels = fc.record({
    org: orgRules,
    project: fc.option(levelRules),
    template: fc.option(levelRules),
    shell: shellAllowlist,
  });
  const port = fc.option(fc.constantFrom(...PORTS)); // null: a DNS question

  it("allows a destination exactly when every level on its own allows it: never wider than any level", () => {
    fc.assert(
      fc.property(levels, destination, port, (given, { host, addresses }, p) => {
        const effective = new EgressPolicy(given).decide(host, p, addresses) === null;
        const each = alone(given).map((policy) => policy.decide(host, p, addresses) === null);
        expect(effective).toBe(each.every(Boolean));
      }),
      { numRuns: 3000 },
    );
  });

  it("never lets a lower level turn a refusal of the levels above into an allowance", () => {
    fc.assert(
      fc.property(levels, levelRules, destination, port, (given, extra, { host, addresses }, p) => {
        const before = new EgressPolicy(given).decide(host, p, addresses);
        // Whatever a project (or template) lists, added below the rest:
        const after = new EgressPolicy({ ...given, project: extra }).decide(host, p, addresses);
        const withoutProject = new EgressPolicy({ ...given, project: null });
        if (withoutProject.decide(host, p, addresses) !== null) expect(after).not.toBeNull();
        if (before !== null && given.project === null) expect(after).not.toBeNull();
        // The name check before resolution never allows what the full decision would not.
        if (new EgressPolicy(given).decideName(host, p) !== null) expect(before).not.toBeNull();
      }),
      { numRuns: 3000 },
    );
  });
});
