import { checkContainerHost } from "@shells/backend-container";
import type { Command } from "commander";
import type { CliContext } from "../context.js";
import { formatTable } from "../format.js";

/**
 * `shells doctor`: what this host can run and why not — the container backend's host checks run
 * locally, and, when a server answers, the runtime classes it reports.
 */
export function registerDoctorCommand(program: Command, ctx: CliContext): void {
  program
    .command("doctor")
    .description("check which runtime classes this host can run, and what is missing")
    .action(async () => {
      const host = await checkContainerHost();
      let server:
        | { runtime: string; available: boolean; backend: string | null; reason: string | null }[]
        | null = null;
      let serverError: string | null = null;
      try {
        server = await ctx.client().runtimes();
      } catch (error) {
        serverError = error instanceof Error ? error.message : String(error);
      }
      if (ctx.json) return ctx.printJson({ host, server, serverError });
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
        "\nwasm: no wasm backend is installed in this build\nmicrovm: no microvm backend is installed in this build",
      );
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
      } else {
        ctx.print(
          `\nno server answered (${serverError ?? "unknown error"}); start one with: npm start`,
        );
      }
      if (!host.available) ctx.exitCode = 1;
    });
}
