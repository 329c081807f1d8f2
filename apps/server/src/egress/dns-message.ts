/**
 * The little of the DNS wire format (RFC 1035) the egress resolver needs: one question in, A or
 * AAAA records out. No DNS library is installed in this project, and the resolver answers only
 * from the proxy's own vetted lookups, so it reads exactly one thing — the question of a standard
 * query — and refuses every other shape. Every length is checked against the buffer before it is
 * read; compression pointers, which a question never needs, are refused (they are how malformed
 * packets loop a parser).
 */
import { isIPv4, isIPv6 } from "node:net";

/** Record types the resolver answers. */
export const DNS_TYPE_A = 1;
export const DNS_TYPE_AAAA = 28;
const CLASS_IN = 1;

/** Response codes the resolver sends. */
export const DNS_RCODE = {
  noError: 0,
  formErr: 1,
  servFail: 2,
  nxDomain: 3,
  notImp: 4,
  refused: 5,
};

/** Most answer records per response: a UDP answer stays under 512 bytes without EDNS. */
export const MAX_ANSWERS = 8;
/** Lifetime of an answer in the shell's caches, seconds: short, so a policy change shows soon. */
const ANSWER_TTL = 30;

/** A standard query's one question. */
export interface DnsQuestion {
  id: number;
  /** Recursion desired, echoed in the answer. */
  rd: boolean;
  /** The name, lower case, without a trailing dot. */
  name: string;
  type: number;
  klass: number;
  /** The question's bytes as sent (name, type, class), echoed in the answer. */
  raw: Buffer;
}

/** Why a packet is not a query the resolver reads. */
export type DnsParseError = "malformed" | "not_a_query";

/**
 * Reads the question of a standard query. The header must say: a query (QR 0), opcode 0, exactly
 * one question and no answers or authority records (additional records, such as an EDNS OPT, are
 * ignored).
 */
export function parseDnsQuery(packet: Buffer): DnsQuestion | { error: DnsParseError; id?: number } {
  if (packet.length < 12) return { error: "malformed" };
  const id = packet.readUInt16BE(0);
  const flags = packet.readUInt16BE(2);
  const qr = flags >> 15;
  const opcode = (flags >> 11) & 0xf;
  if (qr !== 0 || opcode !== 0) return { error: "not_a_query", id };
  if (packet.readUInt16BE(4) !== 1 || packet.readUInt16BE(6) !== 0 || packet.readUInt16BE(8) !== 0)
    return { error: "not_a_query", id };
  const labels: string[] = [];
  let offset = 12;
  let nameLength = 0;
  for (;;) {
    if (offset >= packet.length) return { error: "malformed", id };
    const length = packet[offset] as number;
    offset += 1;
    if (length === 0) break;
    // 0xC0: a compression pointer; 0x40/0x80: extended label types. None belongs in a question.
    if (length > 63) return { error: "malformed", id };
    if (offset + length > packet.length) return { error: "malformed", id };
    nameLength += length + 1;
    if (nameLength > 255) return { error: "malformed", id };
    labels.push(packet.toString("latin1", offset, offset + length));
    offset += length;
  }
  if (offset + 4 > packet.length) return { error: "malformed", id };
  const type = packet.readUInt16BE(offset);
  const klass = packet.readUInt16BE(offset + 2);
  return {
    id,
    rd: (flags & 0x0100) !== 0,
    name: labels.join(".").toLowerCase(),
    type,
    klass,
    raw: packet.subarray(12, offset + 4),
  };
}

/** Whether a name is one the resolver looks up at all: letters, digits, `-`, `_` and dots. */
export function isLookupName(name: string): boolean {
  return /^[a-z0-9_-]+(\.[a-z0-9_-]+)*$/.test(name) && name.length <= 253;
}

/** Whether the question is an `IN A` or `IN AAAA` one. */
export function isAddressQuestion(question: DnsQuestion): boolean {
  return (
    question.klass === CLASS_IN && (question.type === DNS_TYPE_A || question.type === DNS_TYPE_AAAA)
  );
}

function header(
  id: number,
  rd: boolean,
  rcode: number,
  questions: number,
  answers: number,
): Buffer {
  const out = Buffer.alloc(12);
  out.writeUInt16BE(id, 0);
  // QR 1, opcode 0, AA 0, TC 0, RD as asked, RA 1, rcode.
  out.writeUInt16BE(0x8000 | (rd ? 0x0100 : 0) | 0x0080 | (rcode & 0xf), 2);
  out.writeUInt16BE(questions, 4);
  out.writeUInt16BE(answers, 6);
  return out;
}

/**
 * The answer to a question: `addresses` of the asked family as records (at most MAX_ANSWERS),
 * or no records with `rcode` (a refusal, an unknown name, or no address of that family).
 */
export function buildDnsAnswer(
  question: DnsQuestion,
  rcode: number,
  addresses: readonly string[] = [],
): Buffer {
  const wanted = addresses
    .filter((a) =>
      question.type === DNS_TYPE_A ? isIPv4(a) : question.type === DNS_TYPE_AAAA && isIPv6(a),
    )
    .slice(0, MAX_ANSWERS);
  const records = wanted.map((address) => {
    const data = question.type === DNS_TYPE_A ? ipv4Bytes(address) : ipv6Bytes(address);
    const record = Buffer.alloc(12);
    record.writeUInt16BE(0xc00c, 0); // the name: a pointer to the question's
    record.writeUInt16BE(question.type, 2);
    record.writeUInt16BE(CLASS_IN, 4);
    record.writeUInt32BE(ANSWER_TTL, 6);
    record.writeUInt16BE(data.length, 10);
    return Buffer.concat([record, data]);
  });
  return Buffer.concat([
    header(question.id, question.rd, rcode, 1, records.length),
    question.raw,
    ...records,
  ]);
}

/** A bare error answer to a packet whose question could not be read. */
export function buildDnsError(id: number, rcode: number): Buffer {
  return header(id, false, rcode, 0, 0);
}

function ipv4Bytes(address: string): Buffer {
  return Buffer.from(address.split(".").map(Number));
}

/** The 16 bytes of an IPv6 address (with `::` expanded and a dotted IPv4 tail converted). */
function ipv6Bytes(address: string): Buffer {
  let text = address;
  const dotted = /(\d+\.\d+\.\d+\.\d+)$/.exec(text);
  if (dotted) {
    const [a, b, c, d] = (dotted[1] as string).split(".").map(Number) as [
      number,
      number,
      number,
      number,
    ];
    text = `${text.slice(0, -(dotted[1] as string).length)}${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
  }
  const [head = "", tail] = text.split("::") as [string, string | undefined];
  const headGroups = head ? head.split(":") : [];
  const tailGroups = tail ? tail.split(":") : [];
  const groups =
    tail === undefined
      ? headGroups
      : [
          ...headGroups,
          ...Array<string>(8 - headGroups.length - tailGroups.length).fill("0"),
          ...tailGroups,
        ];
  const out = Buffer.alloc(16);
  groups.forEach((group, i) => out.writeUInt16BE(parseInt(group, 16), i * 2));
  return out;
}
