/**
 * Reads the server name (SNI) from a TLS ClientHello without terminating TLS: the egress proxy
 * decides a redirected port-443 connection on the name the client asks the server for, then
 * relays the handshake untouched. Only the first handshake record is read (a ClientHello fits in
 * one record: at most 16 KiB); every length is checked against the bytes present.
 */

/** Largest TLS record payload (RFC 8446 §5.1) plus its 5-byte header. */
export const MAX_CLIENT_HELLO_BYTES = 16_384 + 5;

/** What the bytes so far say: wait for more, not a ClientHello with a name, or the name. */
export type ClientHelloResult =
  { need: "more" } | { error: "not_tls" | "no_server_name" } | { serverName: string };

/** Parses the start of a TLS connection as it arrives. */
export function readServerName(data: Buffer): ClientHelloResult {
  if (data.length < 5) return { need: "more" };
  // Record: type 22 (handshake), legacy version 3.x, payload length.
  if (data[0] !== 22 || data[1] !== 3) return { error: "not_tls" };
  const recordLength = data.readUInt16BE(3);
  if (recordLength > 16_384) return { error: "not_tls" };
  if (data.length < 5 + recordLength) return { need: "more" };
  const record = data.subarray(5, 5 + recordLength);
  // Handshake: type 1 (ClientHello), 24-bit length, within this record.
  if (record.length < 4 || record[0] !== 1) return { error: "not_tls" };
  const helloLength = record.readUIntBE(1, 3);
  if (4 + helloLength > record.length) return { error: "no_server_name" };
  const hello = record.subarray(4, 4 + helloLength);
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
