import { checkContainerHost } from "@shells/backend-container";
import { checkMicrovmHost } from "@shells/backend-microvm";
import { join } from "node:path";
import type { RouteResponse } from "@shells/contract";
import type { Command } from "commander";
import type { CliContext } from "../context.js";
import { formatTable } from "../format.js";

type ReadyResponse = RouteResponse<"ready">;

/** What doctor says of a class the server runs on the Kubernetes backend. */
export const KUBERNETES_UNVERIFIED =
  "the kubernetes backend is unverified against a live cluster: its objects are checked against the Kubernetes 1.33 schemas and its handling of the API's answers against recorded ones, but no cluster has run it";

/**
 * `shells doctor`: what this host can run and why not — the container and microvm backends' host
 * checks run locally, and, when a server answers, the runtime classes it reports. A class served
 * by the Kubernetes backend is flagged as unverified against a live cluster.
 */
export function registerDoctorCommand(program: Command, ctx: CliContext): void {
  program
    .command("doctor")
    .description("check which runtime classes this host can run, and what is missing")
    .action(async () => {
      const host = await checkContainerHost();
      const microvm = await checkMicrovmHost(
        ctx.io.env.SHELLS_MICROVM_CACHE_DIR ?? join(ctx.dataDir, "microvm", "cache"),
      );
      let server:
        | { runtime: string; available: boolean; backend: string | null; reason: string | null }[]
        | null = null;
      let serverError: string | null = null;
      let placement: Pick<ReadyResponse, "region" | "regions" | "capacity"> | null = null;
      try {
        server = await ctx.client().runtimes();
        const { region, regions, capacity } = await ctx.client().ready();
        placement = { region, regions, capacity };
      } catch (error) {
        serverError = error instanceof Error ? error.message : String(error);
      }
      const kubernetes = server?.some((r) => r.backend === "kubernetes") ?? false;
      if (ctx.json)
        return ctx.printJson({
          host,
          microvm,
          server,
          ...(placement ? { placement } : {}),
          serverError,
          ...(kubernetes ? { kubernetes: KUBERNETES_UNVERIFIED } : {}),
        });
      ctx.print(
        `container runtime on this host: ${host.available ? "available" : "NOT available"}${host.cgroupVersion ? ` (cgroup v${host.cgroupVersion})` : ""}`,
      );
      ctx.print(
        formatTable(
          ["check", "ok", "detail"],
          host.checks.map((c) => [c.name, c.ok ? "yes" : "NO", c.detail]),
        ),
      );
      if (host.installCommand) ctx.print(`\nto fix, as root: ${host.installCommand}`);
      ctx.print(
        `\nmicrovm runtime on this host: ${microvm.available ? `available, ${microvm.reason}` : "NOT available"}`,
      );
      ctx.print(
        formatTable(
          ["check", "ok", "detail"],
          microvm.checks.map((c) => [c.name, c.ok ? "yes" : "NO", c.detail]),
        ),
      );
      if (microvm.installCommand) ctx.print(`\nto fix, as root: ${microvm.installCommand}`);
      if (server) {
        ctx.print("\nthe server reports:");
        ctx.print(
          formatTable(
            ["runtime", "available", "backend", "note"],
            server.map((r) => [
              r.runtime,
              r.available ? "yes" : "no",
              r.backend ?? "-",
              r.reason ?? "",
            ]),
          ),
        );
        if (kubernetes) ctx.print(`\nnote: ${KUBERNETES_UNVERIFIED}`);
        if (placement) printPlacement(ctx, placement);
      } else {
        ctx.print(
          `\nno server answered (${serverError ?? "unknown error"}); start one with: npm start`,
        );
      }
      if (!host.available) ctx.exitCode = 1;
    });
}

/**
 * The server's regions (the default first) and each limited class's slots per region, as its
 * readiness reports them; a region with no limited class shows "unlimited".
 */
function printPlacement(
  ctx: CliContext,
  placement: Pick<ReadyResponse, "region" | "regions" | "capacity">,
): void {
  const regions = placement.regions ?? (placement.region ? [placement.region] : []);
  if (regions.length === 0) return;
  const capacity = placement.capacity ?? [];
  ctx.print(`\nregions (default ${placement.region ?? regions[0]}):`);
  ctx.print(
    formatTable(
      ["region", "runtime", "in use", "slots", "reserved"],
      regions.flatMap((region) => {
        const limited = capacity.filter((c) => (c.region ?? regions[0]) === region);
        if (limited.length === 0) return [[region, "all", "-", "unlimited", "-"]];
        return limited.map((c) => [
          region,
          c.runtime,
          String(c.inUse),
          String(c.slots),
          String(c.reserved),
        ]);
      }),
    ),
  );
}
