import { SimulatorBackend, type SandboxInfo, type SandboxSpec } from "@shells/sandbox";
import { connect } from "node:net";
import { join } from "node:path";

/**
 * A simulator that claims to route to the egress proxy, keeping the specs it was given: the
 * control plane starts a real egress proxy for its `internet` shells (the sandboxes themselves
 * stay sealed), and tests speak to that proxy as the shell's forwarder would.
 */
export class RoutingSimulator extends SimulatorBackend {
  readonly networkModes = ["sealed", "localhost", "internet"] as const;
  readonly specs: SandboxSpec[] = [];
  override create(spec: SandboxSpec): Promise<SandboxInfo> {
    this.specs.push(spec);
    return super.create({ ...spec, network: "sealed" });
  }
}

/** The unix socket of a shell's egress proxy under a server's data dir. */
export function proxySocketOf(dataDir: string, shellId: string): string {
  return join(dataDir, "egress", `${shellId}.sock`);
}

/**
 * One plain HTTP GET of `url` through a shell's egress proxy, sent as the shell's forwarder sends
 * a connection to the proxy variables' address: its PROXY line, then the request (HTTP/1.0: one
 * request, a body without chunks). Answers the status and body (0 and "" when the proxy closed
 * without answering).
 */
export function getThroughProxy(
  socketPath: string,
  url: string,
): Promise<{ status: number; body: string }> {
  return new Promise((resolve) => {
    const socket = connect(socketPath);
    const chunks: Buffer[] = [];
    socket.on("data", (chunk: Buffer) => chunks.push(chunk));
    socket.on("error", () => undefined);
    socket.on("close", () => {
      const raw = Buffer.concat(chunks).toString("utf8");
      const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(raw)?.[1] ?? 0);
      resolve({ status, body: raw.slice(raw.indexOf("\r\n\r\n") + 4) });
    });
    const host = new URL(url).host;
    socket.write(
      `PROXY TCP4 127.0.0.1 127.0.0.1 40000 3128\r\nGET ${url} HTTP/1.0\r\nhost: ${host}\r\n\r\n`,
    );
  });
}
