import { connect, createServer, type Server } from "node:net";
import { encodePreamble } from "./egress-preamble.js";

/** What a shell Pod's agent needs to forward the shell's egress. */
export interface EgressForwarderOptions {
  shellId: string;
  /** The shell's egress credential (from its Secret, in the agent container only). */
  token: string;
  /** The control plane's egress bridge. */
  bridgeHost: string;
  bridgePort: number;
  /** Port on the Pod's loopback the shell's clients use (3128); 0 picks a free one (tests). */
  listenPort: number;
}

/**
 * Listens on the Pod's loopback and relays each connection to the egress bridge, after the
 * preamble naming the shell and its credential. Resolves with the listening server.
 */
export function startEgressForwarder(options: EgressForwarderOptions): Promise<Server> {
  const server = createServer({ pauseOnConnect: true }, (client) => {
    const upstream = connect({ host: options.bridgeHost, port: options.bridgePort }, () => {
      upstream.write(encodePreamble(options.shellId, options.token));
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
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(options.listenPort, "127.0.0.1", () => {
      server.off("error", reject);
      resolve(server);
    });
  });
}
