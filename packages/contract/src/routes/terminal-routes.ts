import { z } from "zod";
import { TermCredential } from "../terminals.js";
import { shellId, type RouteSpec } from "./route-spec.js";

/** Terminals: the short-lived credential that attaches a WebSocket PTY to a shell. */
export const terminalRoutes = {
  mintTermCredential: {
    method: "POST",
    path: "/api/v1/shells/:id/term",
    summary:
      "Mint a short-lived, single-use credential that attaches a terminal (WebSocket PTY) to the shell.",
    description:
      "The token is in this response only and is stored as a hash. It expires after the org's term credential TTL (default 5 minutes); the first attach consumes it and the connection ends when it expires. The mint is an activity event; the material never is.",
    tag: "shells",
    params: z.strictObject({ id: shellId }),
    response: TermCredential,
    successStatus: 201,
    scope: "shells:instances:control",
    example: { params: { id: "{shell}" } },
  },
} as const satisfies Record<string, RouteSpec>;
