/**
 * Entry point of a shell Pod's agent container when the shell has egress (run with the control
 * plane's image: `node /app/packages/backend-kubernetes/dist/agent/egress-forwarder.js`). It
 * listens on the Pod's loopback at `SHELLS_EGRESS_LISTEN_PORT` (3128, where every backend puts the
 * egress proxy) and relays to the control plane's egress bridge (`SHELLS_EGRESS_BRIDGE`,
 * host:port) as shell `SHELLS_SHELL_ID` with the credential `SHELLS_EGRESS_TOKEN`. The credential
 * reaches this container only: the shell's processes share the Pod's network, not this
 * container's environment or files.
 */
import { startEgressForwarder } from "../internal/egress-forwarder.js";

const bridge = process.env.SHELLS_EGRESS_BRIDGE ?? "";
const at = bridge.lastIndexOf(":");
const options = {
  shellId: process.env.SHELLS_SHELL_ID ?? "",
  token: process.env.SHELLS_EGRESS_TOKEN ?? "",
  bridgeHost: bridge.slice(0, Math.max(at, 0)).replace(/^\[|\]$/g, ""),
  bridgePort: Number(bridge.slice(at + 1)),
  listenPort: Number(process.env.SHELLS_EGRESS_LISTEN_PORT ?? "3128"),
};
if (!options.shellId || !options.token || at <= 0 || !Number.isInteger(options.bridgePort)) {
  console.error(
    "egress forwarder: SHELLS_SHELL_ID, SHELLS_EGRESS_TOKEN and SHELLS_EGRESS_BRIDGE are required",
  );
  process.exit(2);
}
startEgressForwarder(options).then(
  () => console.log(`egress forwarder: 127.0.0.1:${options.listenPort} → ${bridge}`),
  (error: unknown) => {
    console.error(`egress forwarder: ${(error as Error).message}`);
    process.exit(1);
  },
);
process.on("SIGTERM", () => process.exit(0));
