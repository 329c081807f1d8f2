import type { FastifyRequest } from "fastify";
import type { CapService } from "../services/cap-service.js";
import type { GovernanceService } from "../services/governance-service.js";
import type { MeteringService } from "../services/metering-service.js";
import { usageCsv } from "../services/usage-report.js";
import { sendBytes, type Handlers } from "./register-routes.js";

/** Whether the client asked for CSV by `Accept` (and not for JSON first). */
function acceptsCsvFirst(request: FastifyRequest): boolean {
  const accept = request.headers.accept ?? "";
  const csv = accept.indexOf("text/csv");
  const json = accept.indexOf("application/json");
  return csv >= 0 && (json < 0 || csv < json);
}

/** Spend and operations: usage reports (JSON or CSV), rates, project caps, governance metrics. */
export function usageHandlers(
  metering: MeteringService,
  caps: CapService,
  governance: GovernanceService,
): Pick<
  Handlers,
  "getUsage" | "getRates" | "updateRates" | "listCaps" | "setProjectCaps" | "getGovernance"
> {
  return {
    getUsage: async ({ caller, query, request, reply }) => {
      const report = await metering.report(caller, query);
      const csv = query.format ? query.format === "csv" : acceptsCsvFirst(request);
      if (!csv) return report;
      void reply.header("content-disposition", 'attachment; filename="usage.csv"');
      return sendBytes(reply, "text/csv; charset=utf-8", Buffer.from(usageCsv(report)));
    },
    getRates: async ({ caller }) => metering.rates(caller.orgId),
    updateRates: async ({ caller, body }) => metering.updateRates(caller, body),
    listCaps: async ({ caller, query }) => ({ items: await caps.list(caller, query.project) }),
    setProjectCaps: async ({ caller, params, body }) => ({
      items: await caps.replace(caller, params.project, body),
    }),
    getGovernance: async ({ caller, query }) => governance.report(caller, query),
  };
}
