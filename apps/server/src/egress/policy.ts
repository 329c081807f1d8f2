/**
 * SECURITY BOUNDARY: what an `internet` shell may reach.
 *
 * Every connection a shell makes leaves through its egress proxy, and the proxy asks `decide`
 * before it dials anything. The rules, in order (the first refusal wins):
 * The rules come in levels — the org's policy, the shell's project's rules, the rules of the
 * template version it was made from, the shell's own allowlist and deny lists — and a destination
 * passes only
 * when every level allows it, so no level can widen what a level above it allows (the shell's
 * `deny` is one more level with deny lists only: it can only refuse). Per level, in
 * order (the first refusal wins):
 *   1. the port must be one the level allows (none listed: any port) and not one it denies;
 *   2. the host must not be on the level's deny list, and must be on its allow list when it has
 *      one;
 *   3. with a shell allowlist, the host (exact or `*.suffix`) or every resolved address (a CIDR)
 *      must be on it;
 *   4. every address the name resolved to must be public — not loopback, private, shared (CGNAT),
 *      link-local (the cloud metadata service at 169.254.169.254 and fd00:ec2::254), multicast,
 *      reserved, documentation, unspecified, or a v6 form that embeds or tunnels to one of those
 *      (IPv4-mapped, NAT64, 6to4, Teredo) — unless the org's `allowCidrs` names it explicitly (and
 *      the project's and template's too, where they have that list), and none may be on any
 *      level's `denyCidrs`.
 * The proxy then dials exactly the address it checked, so a name cannot be re-resolved to
 * somewhere else between the decision and the connection (DNS rebinding).
 */
import { BlockList, isIP } from "node:net";
import type { EgressRuleLists, EgressRules, ShellEgress } from "@shells/contract";

/** Address ranges that are not the public internet (IANA special-purpose registries). */
const NON_PUBLIC_V4: readonly [string, number][] = [
  ["0.0.0.0", 8], // "this network", unspecified
  ["10.0.0.0", 8], // private
  ["100.64.0.0", 10], // shared address space (carrier-grade NAT)
  ["127.0.0.0", 8], // loopback
  ["169.254.0.0", 16], // link-local, cloud metadata (169.254.169.254)
  ["172.16.0.0", 12], // private
  ["192.0.0.0", 24], // IETF protocol assignments
  ["192.0.2.0", 24], // documentation
  ["192.88.99.0", 24], // 6to4 relay anycast
  ["192.168.0.0", 16], // private
  ["198.18.0.0", 15], // benchmarking
  ["198.51.100.0", 24], // documentation
  ["203.0.113.0", 24], // documentation
  ["224.0.0.0", 4], // multicast
  ["240.0.0.0", 4], // reserved, broadcast
];
const NON_PUBLIC_V6: readonly [string, number][] = [
  ["::", 96], // unspecified, loopback, IPv4-compatible
  ["64:ff9b::", 96], // NAT64: would reach an IPv4 address through a translator
  ["64:ff9b:1::", 48], // local-use NAT64
  ["100::", 64], // discard
  ["2001::", 23], // IETF protocol assignments (Teredo at 2001::/32 included)
  ["2001:db8::", 32], // documentation
  ["2002::", 16], // 6to4: tunnels to an embedded IPv4 address
  ["fc00::", 7], // unique local (fd00:ec2::254, the IPv6 metadata service, included)
  ["fe80::", 10], // link-local
  ["fec0::", 10], // site-local (deprecated, still routed by some stacks)
  ["ff00::", 8], // multicast
];

const nonPublic = new BlockList();
for (const [address, prefix] of NON_PUBLIC_V4) nonPublic.addSubnet(address, prefix, "ipv4");
for (const [address, prefix] of NON_PUBLIC_V6) nonPublic.addSubnet(address, prefix, "ipv6");

/** `ipv4` or `ipv6` of an IP literal, or null. */
export function ipFamily(address: string): "ipv4" | "ipv6" | null {
  const version = isIP(address);
  return version === 4 ? "ipv4" : version === 6 ? "ipv6" : null;
}

/**
 * Whether an address is on the public internet. Node's BlockList matches an IPv4-mapped IPv6
 * address (`::ffff:127.0.0.1`, `::ffff:7f00:1`) against the IPv4 ranges, so the mapped form of a
 * private address is not public either.
 */
export function isPublicAddress(address: string): boolean {
  const family = ipFamily(address);
  return family !== null && !nonPublic.check(address, family);
}

/** Parses `a.b.c.d/n` or `x::/n`; null when it is not a CIDR. */
export function parseCidr(
  cidr: string,
): { address: string; prefix: number; family: "ipv4" | "ipv6" } | null {
  const match = /^([^/]+)\/(\d{1,3})$/.exec(cidr);
  if (!match) return null;
  const address = match[1] as string;
  const prefix = Number(match[2]);
  const family = ipFamily(address);
  if (!family || prefix > (family === "ipv4" ? 32 : 128)) return null;
  return { address, prefix, family };
}

function blockListOf(cidrs: readonly string[]): BlockList {
  const list = new BlockList();
  for (const cidr of cidrs) {
    const parsed = parseCidr(cidr);
    if (parsed) list.addSubnet(parsed.address, parsed.prefix, parsed.family);
  }
  return list;
}

/** A host name as it is compared: lower case, without a trailing dot. */
export function normalizeHost(host: string): string {
  const lower = host.toLowerCase();
  return lower.endsWith(".") ? lower.slice(0, -1) : lower;
}

/** `example.com` matches itself only; `*.example.com` matches names under it, not itself. */
export function hostMatches(host: string, pattern: string): boolean {
  const name = normalizeHost(host);
  const rule = normalizeHost(pattern);
  if (rule.startsWith("*.")) return name.endsWith(rule.slice(1)) && name.length > rule.length - 1;
  return name === rule;
}

/** Why a connection was refused; stable strings recorded on `egress.denied` events. */
export type EgressDenial =
  | "port_not_allowed"
  | "port_denied"
  | "host_denied"
  | "host_not_allowed"
  | "not_in_shell_allowlist"
  | "address_denied"
  | "address_not_public"
  | "no_address"
  | "no_server_name"
  | "egress_limit"
  | "rate_limited"
  | "connection_limit";

/** Every level of a shell's egress rules, widest first. */
export interface EgressLevels {
  /** The org's policy: every list given. */
  org: EgressRuleLists;
  /** The shell's project's rules (none: the project says nothing). */
  project?: EgressRules | null | undefined;
  /** The rules of the template version the shell was made from. */
  template?: EgressRules | null | undefined;
  /** The shell's own allowlist (null: none). */
  shell?: ShellEgress | null | undefined;
}

/** One level's rule lists, compiled once. */
interface RuleLevel {
  rules: EgressRules;
  denyCidrs: BlockList;
  /** The non-public ranges this level keeps open; null: it says nothing about them. */
  allowCidrs: BlockList | null;
}

function ruleLevel(rules: EgressRules): RuleLevel {
  return {
    rules,
    denyCidrs: blockListOf(rules.denyCidrs ?? []),
    allowCidrs: rules.allowCidrs ? blockListOf(rules.allowCidrs) : null,
  };
}

/**
 * A shell's effective rules: its org's policy, its project's and template's rules and its own
 * allowlist, compiled once. A destination passes only when it passes every level — each level is
 * checked on its own, in the same way, and any one refusal refuses — so a lower level narrows
 * what the levels above allow and cannot widen it, whatever it lists.
 */
export class EgressPolicy {
  /** The org's level first, then the project's, the template's and the shell's deny lists. */
  readonly #levels: readonly RuleLevel[];
  readonly #shellAllow: readonly string[] | null;
  readonly #shellCidrs: BlockList;
  readonly #shellHosts: readonly string[];
  readonly #shellCidrRules: number;

  constructor(levels: EgressLevels) {
    const shell = levels.shell ?? null;
    this.#levels = [levels.org, levels.project, levels.template, shellDenyRules(shell)]
      .filter((rules): rules is EgressRules => !!rules)
      .map(ruleLevel);
    this.#shellAllow = shell ? shell.allow : null;
    const entries = shell?.allow ?? [];
    this.#shellCidrs = blockListOf(entries.filter((e) => parseCidr(e)));
    this.#shellHosts = entries.filter((e) => !parseCidr(e));
    this.#shellCidrRules = entries.length - this.#shellHosts.length;
  }

  /**
   * The checks that need no resolution, made before the name is looked up: a name the policy
   * refuses anyway is never sent to DNS (a lookup of `<data>.attacker.example` would carry data out
   * of the shell by itself). `port` is null for a DNS question (no connection yet).
   */
  decideName(host: string, port: number | null): EgressDenial | null {
    for (const { rules } of this.#levels) {
      if (port !== null) {
        if (rules.allowPorts?.length && !rules.allowPorts.includes(port)) return "port_not_allowed";
        if (rules.denyPorts?.includes(port)) return "port_denied";
      }
      if (rules.denyHosts?.some((rule) => hostMatches(host, rule))) return "host_denied";
      if (rules.allowHosts?.length && !rules.allowHosts.some((rule) => hostMatches(host, rule)))
        return "host_not_allowed";
    }
    if (
      this.#shellAllow !== null &&
      this.#shellCidrRules === 0 &&
      !this.#shellHosts.some((rule) => hostMatches(host, rule))
    )
      return "not_in_shell_allowlist";
    return null;
  }

  /**
   * Decides one connection to `host:port` whose name resolved to `addresses` (an IP literal host
   * resolves to itself). Refuses when any address fails: a name that points anywhere forbidden is
   * refused as a whole, whichever of its addresses a client would have picked. `port` is null for
   * a DNS question: the shell is told only addresses it could then connect to.
   */
  decide(host: string, port: number | null, addresses: readonly string[]): EgressDenial | null {
    const byName = this.decideName(host, port);
    if (byName) return byName;
    if (addresses.length === 0 || addresses.some((a) => ipFamily(a) === null)) return "no_address";
    if (this.#shellAllow !== null) {
      const byHost = this.#shellHosts.some((rule) => hostMatches(host, rule));
      const byAddress = addresses.every((a) =>
        this.#shellCidrs.check(a, ipFamily(a) as "ipv4" | "ipv6"),
      );
      if (!byHost && !byAddress) return "not_in_shell_allowlist";
    }
    for (const address of addresses) {
      const family = ipFamily(address);
      if (!family) return "no_address";
      const isPublic = isPublicAddress(address);
      for (const level of this.#levels) {
        if (level.denyCidrs.check(address, family)) return "address_denied";
        // The org's level always has its list; a lower level without one leaves it to the org.
        if (!isPublic && level.allowCidrs && !level.allowCidrs.check(address, family))
          return "address_not_public";
      }
    }
    return null;
  }
}

/** A shell's `deny` as a rule level of deny lists (null: it has none). */
function shellDenyRules(shell: ShellEgress | null): EgressRules | null {
  const deny = shell?.deny;
  if (!deny) return null;
  return { denyHosts: deny.hosts ?? [], denyCidrs: deny.cidrs ?? [], denyPorts: deny.ports ?? [] };
}

function cidrWithin(inner: string, outer: string): boolean {
  const a = parseCidr(inner);
  const b = parseCidr(outer);
  if (!a || !b || a.family !== b.family || a.prefix < b.prefix) return false;
  const list = new BlockList();
  list.addSubnet(b.address, b.prefix, b.family);
  return list.check(a.address, a.family);
}

/** Whether one allowlist entry lets through nothing that the entries of `old` do not. */
function entryCovered(entry: string, old: readonly string[]): boolean {
  if (parseCidr(entry))
    return old.some((rule) => parseCidr(rule) !== null && cidrWithin(entry, rule));
  const name = normalizeHost(entry);
  return old.some((rule) => {
    if (parseCidr(rule)) return false;
    if (normalizeHost(rule) === name) return true;
    // `*.a.example` is within `*.example`; a plain `a.example` too.
    return hostMatches(name.startsWith("*.") ? name.slice(2) : name, rule);
  });
}

/**
 * Whether `next` denies at least what `old` denies: each old denied host and range is covered by
 * one of the new ones, and each old denied port is still denied.
 */
export function keepsDenies(old: ShellEgress, next: ShellEgress): boolean {
  const before = old.deny ?? {};
  const after = next.deny ?? {};
  return (
    (before.hosts ?? []).every((entry) => entryCovered(entry, after.hosts ?? [])) &&
    (before.cidrs ?? []).every((entry) => entryCovered(entry, after.cidrs ?? [])) &&
    (before.ports ?? []).every((port) => (after.ports ?? []).includes(port))
  );
}

/**
 * Whether changing a shell's allowlist from `old` to `next` only narrows it: every new entry is
 * already covered by an old one (an old null is no allowlist at all — the org's policy alone —
 * which every allowlist narrows), and every old deny is still denied (a deny added narrows; one
 * dropped widens). Only a narrowing skips the approval gate; anything this cannot prove narrower
 * (a host an old CIDR might have covered, say) counts as widening.
 */
export function isNarrowing(old: ShellEgress | null, next: ShellEgress): boolean {
  if (old === null) return true;
  if (next.mode === "deny_all" || next.allow.length === 0) return true;
  if (old.mode === "deny_all") return false;
  return next.allow.every((entry) => entryCovered(entry, old.allow)) && keepsDenies(old, next);
}
