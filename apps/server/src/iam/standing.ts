import type { Scope } from "@shells/contract";
import type { Kysely } from "kysely";
import type { Database } from "../store/schema.js";
import { AGENT_ENTITLEMENT } from "./authorize.js";
import { keyLapse, lapseText, resolveCaller } from "./principal.js";

/** Who holds a long-lived grant (a terminal, a stream): the holder and the key it came through. */
export interface Holder {
  orgId: string;
  actor: { type: "user" | "agent"; id: string };
  /** The API key the grant came through; null for console sessions and bearer JWTs. */
  keyId: string | null;
}

/** How often a live grant re-checks its holder's standing. */
export const STANDING_CHECK_MS = 1000;

/**
 * Why `holder` may no longer use what it was granted with `needed`, or null while it still may: the
 * key revoked, the holder removed or disabled, the scope gone (a demotion), or — for agents — the
 * `shells.agent.invoke` entitlement revoked. The same test a new request would pass, so a terminal
 * or a stream opened before an offboarding does not outlive it.
 */
export async function lostStanding(
  db: Kysely<Database>,
  holder: Holder,
  needed: Scope,
): Promise<string | null> {
  // A console session or JWT carries its holder's role scopes; `resolveCaller` bounds them by role.
  let scopes: readonly Scope[] = [needed];
  if (holder.keyId !== null) {
    const key = await db
      .selectFrom("api_keys")
      .select(["revoked_at", "expires_at", "scopes"])
      .where("org_id", "=", holder.orgId)
      .where("id", "=", holder.keyId)
      .executeTakeFirst();
    if (!key) return "the API key behind it was revoked";
    const lapse = keyLapse(key);
    if (lapse) return `the API key behind it ${lapseText(lapse)}`;
    scopes = JSON.parse(key.scopes) as Scope[];
  }
  const caller = await resolveCaller(
    db,
    { orgId: holder.orgId, ...holder.actor },
    { keyId: holder.keyId, scopes },
  );
  if (!caller) return `its ${holder.actor.type} was removed or disabled`;
  if (!caller.scopes.includes(needed)) return `its ${holder.actor.type} no longer holds ${needed}`;
  if (caller.actor.type === "agent" && !caller.entitlements.includes(AGENT_ENTITLEMENT))
    return `its agent no longer holds the ${AGENT_ENTITLEMENT} entitlement`;
  return null;
}

/**
 * Re-checks `holder`'s standing every second while a stream runs and calls `onLost` once with the
 * reason when it is gone (a failed check counts as lost: a stream never outlives a doubt). Returns
 * the function that stops watching.
 */
export function watchStanding(
  db: Kysely<Database>,
  holder: Holder,
  needed: Scope,
  onLost: (reason: string) => void,
): () => void {
  let stopped = false;
  const timer = setInterval(() => {
    lostStanding(db, holder, needed).then(
      (reason) => {
        if (reason && !stopped) {
          stop();
          onLost(reason);
        }
      },
      () => {
        if (!stopped) {
          stop();
          onLost("its standing could not be checked");
        }
      },
    );
  }, STANDING_CHECK_MS);
  timer.unref();
  const stop = () => {
    stopped = true;
    clearInterval(timer);
  };
  return stop;
}

/** Watches a holder's standing for a stream: `watchStanding` with the store bound. */
export type StandingWatch = (
  holder: Holder,
  needed: Scope,
  onLost: (reason: string) => void,
) => () => void;

/** Binds `watchStanding` to a store, for the routes that hold streams open. */
export function standingWatch(db: Kysely<Database>): StandingWatch {
  return (holder, needed, onLost) => watchStanding(db, holder, needed, onLost);
}
