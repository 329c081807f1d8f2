import { createServer, type AddressInfo } from "node:net";
import { connect } from "node:tls";
import { describe, expect, it } from "vitest";
import { readServerName } from "./tls-client-hello.js";

/** The first bytes a real TLS client sends (Node's OpenSSL), captured by a plain TCP server. */
async function clientHello(servername?: string): Promise<Buffer> {
  let captured: (hello: Buffer) => void = () => undefined;
  const got = new Promise<Buffer>((resolve) => (captured = resolve));
  const server = createServer((socket) => {
    socket.once("data", (chunk: Buffer) => {
      captured(chunk);
      socket.destroy();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const client = connect({
    host: "127.0.0.1",
    port: (server.address() as AddressInfo).port,
    ...(servername === undefined ? {} : { servername }),
  });
  client.on("error", () => undefined);
  const hello = await got;
  client.destroy();
  server.close();
  return hello;
}

describe("server name of a TLS ClientHello", () => {
  it("reads the SNI of a real ClientHello, and asks for more while it is incomplete", async () => {
    const hello = await clientHello("api.example.test");
    expect(readServerName(hello)).toEqual({ serverName: "api.example.test" });
    expect(readServerName(hello.subarray(0, hello.length - 1))).toEqual({ need: "more" });
  });

  it("has no name for a hello without SNI, and refuses what is not TLS", async () => {
    expect(readServerName(await clientHello(""))).toEqual({ error: "no_server_name" });
    expect(readServerName(Buffer.from("GET / HTTP/1.1\r\n"))).toEqual({ error: "not_tls" });
  });

  it("never reads past the bytes it has when lengths lie", async () => {
    // Buffer reads past the end throw: every corrupted or cut hello must give an answer instead.
    const hello = await clientHello("api.example.test");
    for (let i = 0; i < hello.length; i++) {
      for (const value of [0x00, 0xff]) {
        const broken = Buffer.from(hello);
        broken[i] = value;
        expect(() => readServerName(broken)).not.toThrow();
      }
      expect(() => readServerName(hello.subarray(0, i))).not.toThrow();
    }
  });
});
