/**
 * Egress rules by level. An `internet` shell's destinations pass the rules of its org, of its
 * project, of the template version it was made from, and its own allowlist (`ShellEgress`); a
 * connection goes through only when every level allows it, so a lower level can narrow what the
 * levels above allow and never widen it.
 */
import { z } from "zod";
import { Actor } from "./activity.js";
import { EgressCidr, EgressHostRule, EgressPort } from "./shells.js";

/** The rule lists every level has, with the meaning they have at each. */
export const EgressRuleLists = z.strictObject({
  /** When not empty, only these hosts (exact or `*.suffix`). */
  allowHosts: z.array(EgressHostRule).max(256),
  /** Never these hosts. */
  denyHosts: z.array(EgressHostRule).max(256),
  /**
   * Non-public ranges shells may reach all the same (a lab network, an internal mirror). At the
   * org this opens them; below it, it keeps open only those of the org's that it also names.
   */
  allowCidrs: z.array(EgressCidr).max(256),
  /** Never these ranges, even when public. */
  denyCidrs: z.array(EgressCidr).max(256),
  /** When not empty, only these destination ports. */
  allowPorts: z.array(EgressPort).max(64),
  /** Never these destination ports. */
  denyPorts: z.array(EgressPort).max(64),
});
export type EgressRuleLists = z.infer<typeof EgressRuleLists>;

/**
 * The egress rules of a project or of a template version. A list left out says nothing at this
 * level (the levels above decide); a list given has the org's meaning and narrows further — in
 * particular `allowCidrs: []` closes every non-public range the org opened.
 */
export const EgressRules = EgressRuleLists.partial();
export type EgressRules = z.infer<typeof EgressRules>;

/** A project's egress rules as the API answers them. */
export const ProjectEgress = z.strictObject({
  project: z.string(),
  rules: EgressRules,
  /** When they last changed, and by whom; null for a project that never had any. */
  updatedAt: z.iso.datetime().nullable(),
  updatedBy: Actor.nullable(),
});
export type ProjectEgress = z.infer<typeof ProjectEgress>;

/** Body of `PUT /api/v1/projects/:project/egress`: the project's rules, replaced whole. */
export const ProjectEgressUpdate = z.strictObject({
  rules: EgressRules,
  /**
   * Typed confirmation (the project's name) when the org gates widening of project rules
   * (`project_egress_change`) by `confirm`.
   */
  confirm: z.string().max(256).optional(),
});
export type ProjectEgressUpdate = z.infer<typeof ProjectEgressUpdate>;
