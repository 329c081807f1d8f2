/**
 * Retention of what runs keep (artifacts, workspace changes, diffs): days after a run ends, set
 * per org and per project, below the server's default. A sweeper removes what ran out.
 */
import { z } from "zod";
import { Actor } from "./activity.js";

/** Days a run's artifacts, changes and diff are kept after it ends (fractions allowed; 0: until the next sweep). */
export const RetentionDays = z.number().min(0).max(36_500);

/** The retention of runs at one level (the org, or one of its projects) as the API answers it. */
export const RunRetention = z.strictObject({
  /** The project's name; null for the org's own level. */
  project: z.string().nullable(),
  /** Days set at this level; null: this level says nothing (the level above decides). */
  days: RetentionDays.nullable(),
  /** Days in effect for its runs: this level's, else the org's (for a project), else the server's default. */
  effectiveDays: RetentionDays,
  /** When it last changed, and by whom; null when never set. */
  updatedAt: z.iso.datetime().nullable(),
  updatedBy: Actor.nullable(),
});
export type RunRetention = z.infer<typeof RunRetention>;

/** Body of `PUT /api/v1/org/retention` and `PUT /api/v1/projects/:project/retention`. */
export const RunRetentionUpdate = z.strictObject({ days: RetentionDays.nullable() });
export type RunRetentionUpdate = z.infer<typeof RunRetentionUpdate>;
