import type { ShellsClient } from "@l1fe/shells";
import { usePoll } from "./use-poll.js";

/** Capacity changes as shells start and stop elsewhere; a slower poll than the fleet's is enough. */
const CAPACITY_POLL_MS = 10_000;

/**
 * The server's regions (its backend pools, the default first) with each limited class's shells in
 * use against its slots, from `/readyz`. Nothing shows until it answers; a server of one region with
 * no limited class shows that one region as unlimited.
 */
export function RegionCapacity({ client }: { client: ShellsClient }) {
  const ready = usePoll(() => client.ready(), CAPACITY_POLL_MS);
  const data = ready.data;
  if (!data) return null;
  const regions = data.regions ?? (data.region ? [data.region] : []);
  const capacity = data.capacity ?? [];
  return (
    <ul aria-label="Capacity by region" className="flex flex-wrap gap-2 text-xs">
      {regions.map((region) => {
        const limited = capacity.filter((c) => (c.region ?? regions[0]) === region);
        return (
          <li
            key={region}
            className="rounded-md border border-zinc-200 px-2 py-1 text-zinc-600 dark:border-zinc-800 dark:text-zinc-300"
          >
            <span className="font-medium">{region}</span>
            {region === data.region && <span className="text-zinc-400"> (default)</span>}
            {limited.length === 0 ? (
              <span> · unlimited</span>
            ) : (
              limited.map((c) => (
                <span key={c.runtime} title={`${c.reserved} reserved`}>
                  {" "}
                  · {c.runtime} {c.inUse}/{c.slots}
                </span>
              ))
            )}
          </li>
        );
      })}
    </ul>
  );
}
