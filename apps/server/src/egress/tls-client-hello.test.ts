import { createServer, type AddressInfo } from "node:net";
import { connect } from "node:tls";
import { describe, expect, it } from "vitest";
import { MAX_CLIENT_HELLO_BYTES, readServerName } from "./tls-client-hello.js";

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

/** The handshake message inside a one-record ClientHello (type, 24-bit length, body). */
function handshakeOf(hello: Buffer): Buffer {
  return hello.subarray(5, 5 + hello.readUInt16BE(3));
}

/** One TLS record of `type` carrying `payload`. */
function tlsRecord(payload: Buffer, type = 22): Buffer {
  const head = Buffer.from([type, 3, 1, payload.length >> 8, payload.length & 0xff]);
  return Buffer.concat([head, payload]);
}

/** A handshake message split into records of at most `size` bytes each. */
function fragmented(message: Buffer, size: number): Buffer {
  const records: Buffer[] = [];
  for (let at = 0; at < message.length; at += size)
    records.push(tlsRecord(message.subarray(at, at + size)));
  return Buffer.concat(records);
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

describe("a ClientHello fragmented over several TLS records", () => {
  it("reads the SNI whatever the split, even inside the 4-byte handshake header", async () => {
    const message = handshakeOf(await clientHello("split.example.test"));
    for (const size of [1, 3, 4, 5, 64, 200, message.length - 1]) {
      const records = fragmented(message, size);
      expect(readServerName(records), `records of ${size} bytes`).toEqual({
        serverName: "split.example.test",
      });
      // Until the last record is whole, it asks for more (and never decides on a part).
      expect(readServerName(records.subarray(0, records.length - 1))).toEqual({ need: "more" });
    }
  });

  it("refuses a hello whose records are interleaved with another record type", async () => {
    const message = handshakeOf(await clientHello("split.example.test"));
    const half = Math.floor(message.length / 2);
    const interleaved = Buffer.concat([
      tlsRecord(message.subarray(0, half)),
      tlsRecord(Buffer.from([1]), 20), // change_cipher_spec between the fragments
      tlsRecord(message.subarray(half)),
    ]);
    expect(readServerName(interleaved)).toEqual({ error: "no_server_name" });
    const emptyFragment = Buffer.concat([
      tlsRecord(message.subarray(0, half)),
      tlsRecord(Buffer.alloc(0)),
      tlsRecord(message.subarray(half)),
    ]);
    expect(readServerName(emptyFragment)).toEqual({ error: "no_server_name" });
  });

  it("refuses a hello claiming more than 16 KiB, and one spread past the read limit stays undecided", async () => {
    const message = Buffer.from(handshakeOf(await clientHello("split.example.test")));
    const huge = Buffer.from(message);
    huge.writeUIntBE(64 * 1024, 1, 3);
    expect(readServerName(fragmented(huge, 100))).toEqual({ error: "no_server_name" });
    // An 8 KiB hello in 1-byte records is larger than what the proxy reads: until then it is
    // undecided, and the proxy refuses it at its read limit (see egress-proxy.test.ts).
    const padded = Buffer.concat([message, Buffer.alloc(8192)]);
    padded.writeUIntBE(padded.length - 4, 1, 3);
    const thin = fragmented(padded, 1);
    expect(thin.length).toBeGreaterThan(MAX_CLIENT_HELLO_BYTES);
    expect(readServerName(thin.subarray(0, MAX_CLIENT_HELLO_BYTES))).toEqual({ need: "more" });
  });
});
