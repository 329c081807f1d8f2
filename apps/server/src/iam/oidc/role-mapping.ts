import { ROLE_SCOPES, Scope, roleAtLeast, type Role } from "@shells/contract";
import type { OidcConfig } from "../../config.js";

/** Claims of an ID token, a userinfo answer or a bearer JWT. */
export type Claims = Record<string, unknown>;

/**
 * The value of `claimName` in `claims`: the top-level claim of that exact name when there is one
 * (names such as `https://example.com/groups` contain dots), else a dotted path into nested objects
 * (`realm_access.roles`). Only own properties are followed, never the prototype chain.
 */
export function claimAt(claims: Claims, claimName: string): unknown {
  if (Object.hasOwn(claims, claimName)) return claims[claimName];
  let node: unknown = claims;
  for (const part of claimName.split(".")) {
    if (typeof node !== "object" || node === null || !Object.hasOwn(node, part)) return undefined;
    node = (node as Record<string, unknown>)[part];
  }
  return node;
}

/**
 * The Shells role the directory gives a user: every string value of the role claim (a string or an
 * array of strings) is looked up in the role map and the highest mapped role wins. Null when no
 * value maps — such a user is refused, and an existing one is offboarded.
 */
export function roleFromClaims(
  claims: Claims,
  roleClaim: string,
  roleMap: OidcConfig["roleMap"],
): Role | null {
  const raw = claimAt(claims, roleClaim);
  const values = typeof raw === "string" ? [raw] : Array.isArray(raw) ? raw : [];
  let best: Role | null = null;
  for (const value of values) {
    if (typeof value !== "string") continue;
    for (const entry of roleMap) {
      if (entry.claimValue === value && (best === null || roleAtLeast(entry.role, best)))
        best = entry.role;
    }
  }
  return best;
}

/**
 * The scopes a bearer JWT grants: when the token carries a `scope` (space-separated) or `scp`
 * (array) claim, the product scopes among it; otherwise every scope of the role. The caller's
 * effective scopes are further limited to the role's own (`resolveCaller`).
 */
export function scopesFromClaims(claims: Claims, role: Role): readonly Scope[] {
  const raw = claims.scope ?? claims.scp;
  if (raw === undefined) return ROLE_SCOPES[role];
  const granted = typeof raw === "string" ? raw.split(" ") : Array.isArray(raw) ? raw : [];
  return Scope.options.filter((scope) => granted.includes(scope));
}
