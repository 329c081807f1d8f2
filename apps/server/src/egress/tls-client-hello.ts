/**
 * Reads the server name (SNI) from a TLS ClientHello without terminating TLS: the egress proxy
 * decides a redirected port-443 connection on the name the client asks the server for, then
 * relays the handshake untouched. TLS lets a client fragment its ClientHello over several
 * handshake records (RFC 8446 §5.1), so the message is put together from consecutive handshake
 * records first; anything else between them, or a hello larger than the bounds below, is refused,
 * never waved through. Every length is checked against the bytes present.
 */

/** Largest ClientHello message read (real ones are a few KiB, post-quantum key shares included). */
export const MAX_CLIENT_HELLO_MESSAGE_BYTES = 16 * 1024;

/**
 * Most bytes of records read for one ClientHello, headers included: room for the largest message
 * in records of a few hundred bytes each. The proxy stops reading there (refused).
 */
export const MAX_CLIENT_HELLO_BYTES = 32 * 1024;

/** Largest TLS record payload (RFC 8446 §5.1). */
const MAX_RECORD_PAYLOAD = 16_384;

/** What the bytes so far say: wait for more, not a ClientHello with a name, or the name. */
export type ClientHelloResult =
  { need: "more" } | { error: "not_tls" | "no_server_name" } | { serverName: string };

/** Parses the start of a TLS connection as it arrives. */
export function readServerName(data: Buffer): ClientHelloResult {
  const message = clientHelloMessage(data);
  return "hello" in message ? serverNameOfHello(message.hello) : message;
}

/**
 * The ClientHello's body, put together from the handshake records at the start of `data`:
 * records of type 22 (handshake), legacy version 3.x, 1 to 16 KiB each, carrying one handshake
 * message of type 1 (ClientHello) with a 24-bit length.
 */
function clientHelloMessage(
  data: Buffer,
): { need: "more" } | { error: "not_tls" | "no_server_name" } | { hello: Buffer } {
  const fragments: Buffer[] = [];
  let received = 0;
  let helloLength: number | null = null;
  for (let offset = 0; ;) {
    if (data.length < offset + 5) return { need: "more" };
    // After the first record, a record of another kind is a hello cut short, not another protocol.
    const refusal = offset === 0 ? "not_tls" : "no_server_name";
    if (data[offset] !== 22 || data[offset + 1] !== 3) return { error: refusal };
    const recordLength = data.readUInt16BE(offset + 3);
    // Zero-length handshake fragments are not allowed (RFC 8446 §5.1).
    if (recordLength === 0 || recordLength > MAX_RECORD_PAYLOAD) return { error: refusal };
    if (data.length < offset + 5 + recordLength) return { need: "more" };
    fragments.push(data.subarray(offset + 5, offset + 5 + recordLength));
    received += recordLength;
    offset += 5 + recordLength;
    if (helloLength === null && received >= 4) {
      const head = fragments.length === 1 ? (fragments[0] as Buffer) : Buffer.concat(fragments);
      if (head[0] !== 1) return { error: "not_tls" };
      helloLength = head.readUIntBE(1, 3);
      if (helloLength > MAX_CLIENT_HELLO_MESSAGE_BYTES) return { error: "no_server_name" };
    }
    if (helloLength !== null && received >= 4 + helloLength)
      return { hello: Buffer.concat(fragments).subarray(4, 4 + helloLength) };
  }
}

/** The server name in a ClientHello's body (after its 4-byte handshake header). */
function serverNameOfHello(hello: Buffer): ClientHelloResult {
  let offset = 2 + 32; // legacy_version, random
  const skip = (lengthBytes: 1 | 2): boolean => {
    if (offset + lengthBytes > hello.length) return false;
    const length = lengthBytes === 1 ? (hello[offset] as number) : hello.readUInt16BE(offset);
    offset += lengthBytes + length;
    return offset <= hello.length;
  };
  // legacy_session_id, cipher_suites, legacy_compression_methods
  if (!skip(1) || !skip(2) || !skip(1)) return { error: "no_server_name" };
  if (offset + 2 > hello.length) return { error: "no_server_name" };
  const extensionsEnd = offset + 2 + hello.readUInt16BE(offset);
  if (extensionsEnd > hello.length) return { error: "no_server_name" };
  offset += 2;
  while (offset + 4 <= extensionsEnd) {
    const type = hello.readUInt16BE(offset);
    const length = hello.readUInt16BE(offset + 2);
    const start = offset + 4;
    if (start + length > extensionsEnd) return { error: "no_server_name" };
    if (type === 0) return serverNameOf(hello.subarray(start, start + length));
    offset = start + length;
  }
  return { error: "no_server_name" };
}

/** The host_name entry of a server_name extension (RFC 6066 §3). */
function serverNameOf(extension: Buffer): ClientHelloResult {
  if (extension.length < 2) return { error: "no_server_name" };
  const listEnd = 2 + extension.readUInt16BE(0);
  if (listEnd > extension.length) return { error: "no_server_name" };
  let offset = 2;
  while (offset + 3 <= listEnd) {
    const nameType = extension[offset] as number;
    const length = extension.readUInt16BE(offset + 1);
    const start = offset + 3;
    if (start + length > listEnd) return { error: "no_server_name" };
    if (nameType === 0) {
      const name = extension.toString("latin1", start, start + length);
      return /^[A-Za-z0-9._-]{1,253}$/.test(name)
        ? { serverName: name }
        : { error: "no_server_name" };
    }
    offset = start + length;
  }
  return { error: "no_server_name" };
}
