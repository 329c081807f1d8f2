/**
 * Runs in a shell Pod's agent container (the control plane's image): listens on the Pod's loopback
 * at `SHELLS_EGRESS_LISTEN_PORT` (3128, where every backend puts the egress proxy) and relays each
 * connection to the control plane's egress bridge, after a preamble naming the shell and its egress
 * credential. The credential comes from the shell's Secret into this container only: the shell's
 * own processes share the Pod's network but not this container's environment or files.
 */
import { connect, createServer } from "node:net";
import { encodePreamble } from "../internal/egress-preamble.js";

const shellId = process.env.SHELLS_SHELL_ID ?? "";
const token = process.env.SHELLS_EGRESS_TOKEN ?? "";
const bridge = process.env.SHELLS_EGRESS_BRIDGE ?? "";
const listenPort = Number(process.env.SHELLS_EGRESS_LISTEN_PORT ?? "3128");
const at = bridge.lastIndexOf(":");
const bridgeHost = bridge.slice(0, at).replace(/^\[|\]$/g, "");
const bridgePort = Number(bridge.slice(at + 1));
if (!shellId || !token || at <= 0 || !Number.isInteger(bridgePort)) {
  console.error("egress forwarder: SHELLS_SHELL_ID, SHELLS_EGRESS_TOKEN and SHELLS_EGRESS_BRIDGE are required");
  process.exit(2);
}

const server = createServer({ pauseOnConnect: true }, (client) => {
  const upstream = connect({ host: bridgeHost, port: bridgePort }, () => {
    upstream.write(encodePreamble(shellId, token));
    client.pipe(upstream);
    upstream.pipe(client);
    client.resume();
  });
  const end = () => {
    client.destroy();
    upstream.destroy();
  };
  client.on("error", end);
  upstream.on("error", end);
  client.on("close", end);
  upstream.on("close", end);
});
server.listen(listenPort, "127.0.0.1", () => {
  console.log(`egress forwarder: 127.0.0.1:${listenPort} → ${bridge}`);
});
process.on("SIGTERM", () => process.exit(0));
