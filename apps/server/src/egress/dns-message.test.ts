import { describe, expect, it } from "vitest";
import {
  buildDnsAnswer,
  DNS_RCODE,
  DNS_TYPE_A,
  DNS_TYPE_AAAA,
  MAX_ANSWERS,
  parseDnsQuery,
} from "./dns-message.js";

function query(name: string, type: number, flags = 0x0100): Buffer {
  const labels = name
    .split(".")
    .map((l) => Buffer.concat([Buffer.from([l.length]), Buffer.from(l)]));
  const head = Buffer.alloc(12);
  head.writeUInt16BE(0xbeef, 0);
  head.writeUInt16BE(flags, 2);
  head.writeUInt16BE(1, 4);
  const tail = Buffer.alloc(4);
  tail.writeUInt16BE(type, 0);
  tail.writeUInt16BE(1, 2);
  return Buffer.concat([head, ...labels, Buffer.from([0]), tail]);
}

describe("DNS questions and answers", () => {
  it("reads a standard query's question and answers it with records of the asked family", () => {
    const question = parseDnsQuery(query("Web.Example", DNS_TYPE_AAAA));
    if ("error" in question) throw new Error(question.error);
    expect(question).toMatchObject({
      id: 0xbeef,
      rd: true,
      name: "web.example",
      type: DNS_TYPE_AAAA,
    });
    const answer = buildDnsAnswer(question, DNS_RCODE.noError, [
      "192.0.2.1",
      "2001:db8::1",
      "::ffff:10.0.0.1",
    ]);
    expect(answer.readUInt16BE(0)).toBe(0xbeef);
    expect(answer.readUInt16BE(2) & 0x800f).toBe(0x8000); // a response, NOERROR
    expect(answer.readUInt16BE(6)).toBe(2); // the two IPv6 addresses only
    const first = 12 + question.raw.length;
    expect(answer.subarray(first + 12, first + 28).toString("hex")).toBe(
      "20010db8000000000000000000000001",
    );
    expect(answer.subarray(answer.length - 16).toString("hex")).toBe(
      "00000000000000000000ffff0a000001",
    );
  });

  it("keeps a response small enough for UDP", () => {
    const question = parseDnsQuery(query("many.example", DNS_TYPE_A));
    if ("error" in question) throw new Error(question.error);
    const many = Array.from({ length: 50 }, (_, i) => `198.51.100.${i}`);
    const answer = buildDnsAnswer(question, DNS_RCODE.noError, many);
    expect(answer.readUInt16BE(6)).toBe(MAX_ANSWERS);
    expect(answer.length).toBeLessThan(512);
  });

  it("refuses what is not a one-question standard query, without reading past the packet", () => {
    expect(parseDnsQuery(Buffer.alloc(5))).toEqual({ error: "malformed" });
    expect(parseDnsQuery(query("a.example", DNS_TYPE_A, 0x8100))).toMatchObject({
      error: "not_a_query",
    });
    const pointer = query("a.example", DNS_TYPE_A);
    pointer[12] = 0xc0; // a compression pointer where a label belongs
    expect(parseDnsQuery(pointer)).toMatchObject({ error: "malformed" });
    const cut = query("a.example", DNS_TYPE_A).subarray(0, 20);
    expect(parseDnsQuery(cut)).toMatchObject({ error: "malformed" });
    const long = query(Array.from({ length: 5 }, () => "x".repeat(60)).join("."), DNS_TYPE_A);
    expect(parseDnsQuery(long)).toMatchObject({ error: "malformed" }); // over 255 bytes
  });
});
