import type { ApprovalDiff, EgressRules, ShellEgress } from "@shells/contract";

/** Allow lists where empty (or left out) means "no restriction at this level". */
const OPEN_WHEN_EMPTY = ["allowHosts", "allowPorts"] as const;
/** Allow lists where left out means "no restriction" but empty closes everything. */
const CLOSED_WHEN_EMPTY = ["allowCidrs"] as const;
const DENY_LISTS = ["denyHosts", "denyCidrs", "denyPorts"] as const;
const SHELL_DENY_LISTS = ["hosts", "cidrs", "ports"] as const;

const missingFrom = (list: readonly unknown[], from: readonly unknown[]) =>
  list.filter((entry) => !from.includes(entry)).map(String);

/**
 * A change of a running shell's allowlist, as the approver sees it: each destination the new
 * list adds (it widens, unless the shell had no list at all) and each it drops.
 */
export function shellEgressDiff(before: ShellEgress | null, after: ShellEgress): ApprovalDiff {
  const was = before === null ? null : before.mode === "deny_all" ? [] : before.allow;
  const now = after.mode === "deny_all" ? [] : after.allow;
  const widens: string[] = [];
  const narrows: string[] = [];
  if (was === null) narrows.push(`allow: only ${now.join(", ") || "nothing"}`);
  else {
    widens.push(...missingFrom(now, was).map((entry) => `allow + ${entry}`));
    narrows.push(...missingFrom(was, now).map((entry) => `allow - ${entry}`));
  }
  // A deny entry the shell drops lets through what it refused; one it adds refuses more.
  for (const key of SHELL_DENY_LISTS) {
    const old = before?.deny?.[key] ?? [];
    const next = after.deny?.[key] ?? [];
    widens.push(...missingFrom(old, next).map((entry) => `deny.${key} - ${entry}`));
    narrows.push(...missingFrom(next, old).map((entry) => `deny.${key} + ${entry}`));
  }
  return { subject: "shell egress", before, after, widens, narrows };
}

/**
 * A change of a project's egress rules: an allow list that gains an entry or is lifted, or a deny
 * list that loses one, widens; the opposite narrows (see `EgressRules` for what each list means).
 */
export function projectEgressDiff(before: EgressRules | null, after: EgressRules): ApprovalDiff {
  const was = before ?? {};
  const widens: string[] = [];
  const narrows: string[] = [];
  for (const key of OPEN_WHEN_EMPTY) {
    const old = was[key] ?? [];
    const next = after[key] ?? [];
    if (old.length > 0 && next.length === 0) widens.push(`${key}: restriction lifted`);
    else if (old.length === 0 && next.length > 0) narrows.push(`${key}: only ${next.join(", ")}`);
    else {
      widens.push(...missingFrom(next, old).map((entry) => `${key} + ${entry}`));
      narrows.push(...missingFrom(old, next).map((entry) => `${key} - ${entry}`));
    }
  }
  for (const key of CLOSED_WHEN_EMPTY) {
    const old = was[key];
    const next = after[key];
    if (old !== undefined && next === undefined) widens.push(`${key}: restriction lifted`);
    else if (old === undefined && next !== undefined)
      narrows.push(`${key}: only ${next.join(", ") || "none"}`);
    else if (old !== undefined && next !== undefined) {
      widens.push(...missingFrom(next, old).map((entry) => `${key} + ${entry}`));
      narrows.push(...missingFrom(old, next).map((entry) => `${key} - ${entry}`));
    }
  }
  for (const key of DENY_LISTS) {
    const old = was[key] ?? [];
    const next = after[key] ?? [];
    widens.push(...missingFrom(old, next).map((entry) => `${key} - ${entry}`));
    narrows.push(...missingFrom(next, old).map((entry) => `${key} + ${entry}`));
  }
  return { subject: "project egress", before: before ?? {}, after, widens, narrows };
}

/** A change of the service bindings a shell holds: each binding it gains widens its reach. */
export function bindingGrantsDiff(
  before: readonly string[],
  after: readonly string[],
): ApprovalDiff {
  return {
    subject: "shell bindings",
    before: [...before],
    after: [...after],
    widens: missingFrom(after, before).map((name) => `bindings + ${name}`),
    narrows: missingFrom(before, after).map((name) => `bindings - ${name}`),
  };
}
