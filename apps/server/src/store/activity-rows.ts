import type { ActivityEvent, Actor } from "@shells/contract";
import type { Selectable } from "kysely";
import type { ActivityTable } from "./schema.js";

/** An activity row as the event it stores. */
export function activityEventOf(row: Selectable<ActivityTable>): ActivityEvent {
  return {
    id: row.id,
    seq: row.seq,
    orgId: row.org_id,
    actor: JSON.parse(row.actor) as Actor,
    action: row.action,
    target: row.target_type && row.target_id ? { type: row.target_type, id: row.target_id } : null,
    outcome: row.outcome,
    details: JSON.parse(row.details) as Record<string, unknown>,
    time: row.time,
    prevHash: row.prev_hash,
    hash: row.hash,
  };
}
