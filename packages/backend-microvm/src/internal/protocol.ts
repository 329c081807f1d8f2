/**
 * The framed protocol between the host and the guest agent (native/shells-agent.c) over one
 * virtio-serial port. `native/agent-protocol.h` is its C twin; `protocol.test.ts` checks both agree.
 *
 * A frame is an 8-byte header (u32 payload length, u16 type, u16 exec id; little-endian) and its
 * payload. Payload layouts are described in the header file.
 */

/** Bytes of a frame header. */
export const HEADER_BYTES = 8;
/** The largest payload either side sends or accepts. */
export const MAX_PAYLOAD = 1 << 20;
/** Execs one agent runs at once. */
export const MAX_EXECS = 64;

/** Frame types. */
export const FrameType = {
  READY: 1,
  PING: 2,
  EXEC: 3,
  STDIN: 4,
  STDOUT: 5,
  STDERR: 6,
  EXIT: 7,
  KILL: 8,
  LIMITS: 9,
  SPAWN: 10,
  RESIZE: 11,
  SIGNAL: 12,
  FLOW: 13,
  NET_OPEN: 14,
  NET_DATA: 15,
  NET_CREDIT: 16,
  NET_CLOSE: 17,
} as const;
export type FrameType = (typeof FrameType)[keyof typeof FrameType];

/** Why the agent ended an exec (the `kill_reason` of an EXIT frame). */
export const AgentKill = {
  NONE: 0,
  WALL_CLOCK: 1,
  OUTPUT_LIMIT: 2,
  PIDS: 3,
  OOM: 4,
  DISK: 5,
} as const;

/** Which egress listeners the agent opens (the `egress` field of LIMITS). */
export const AgentEgress = {
  /** None: the shell reaches nothing outside the guest. */
  NONE: 0,
  /** 127.0.0.1:3128 only: a `sealed` or `localhost` shell granted service bindings. */
  BINDINGS: 1,
  /**
   * 127.0.0.1:3128, the resolver at 127.0.0.53:53 (TCP and UDP), and every address's ports 80
   * and 443 (all of IPv4 routed to loopback): an `internet` shell.
   */
  INTERNET: 2,
} as const;
export type AgentEgress = (typeof AgentEgress)[keyof typeof AgentEgress];

/** The guest listener a relayed stream came from (the `listener` of NET_OPEN). */
export const AgentListener = {
  PROXY: 0,
  DNS: 1,
  /** 0.0.0.0:80 and 0.0.0.0:443 of an `internet` guest: the client dialled some address's port. */
  TRANSPARENT: 2,
} as const;

/** Relayed streams one agent has open at once. */
export const MAX_STREAMS = 64;
/** Bytes either side may have sent on a stream and not yet had credited. */
export const NET_WINDOW = 1 << 18;
/** Bytes of a NET_OPEN payload. */
export const NET_OPEN_BYTES = 12;
/** Bytes of a NET_OPEN payload that also names the destination (TRANSPARENT). */
export const NET_OPEN_TRANSPARENT_BYTES = 20;

/** A decoded NET_OPEN frame: which listener the guest's client connected to, and from where. */
export interface NetOpen {
  listener: number;
  /** The client's IPv4 address in the guest, dotted. */
  clientAddress: string;
  clientPort: number;
  /** The address the client dialled (TRANSPARENT only), as the guest says: for the host to check. */
  destination?: { address: string; port: number };
}

/** Decodes a NET_OPEN payload; null when malformed. */
export function decodeNetOpen(payload: Buffer): NetOpen | null {
  if (payload.length < NET_OPEN_BYTES) return null;
  const clientPort = payload.readUInt32LE(8);
  if (clientPort > 65535) return null;
  const open: NetOpen = {
    listener: payload.readUInt32LE(0),
    clientAddress: [...payload.subarray(4, 8)].join("."),
    clientPort,
  };
  if (payload.length >= NET_OPEN_TRANSPARENT_BYTES) {
    const port = payload.readUInt32LE(16);
    if (port > 65535) return null;
    open.destination = { address: [...payload.subarray(12, 16)].join("."), port };
  }
  return open;
}

/** Encodes a NET_OPEN payload (the agent's side; for tests of the host's relay). */
export function encodeNetOpen(open: NetOpen): Buffer {
  const payload = Buffer.alloc(open.destination ? NET_OPEN_TRANSPARENT_BYTES : NET_OPEN_BYTES);
  const writeAddress = (address: string, at: number) =>
    address.split(".").forEach((part, index) => payload.writeUInt8(Number(part), at + index));
  payload.writeUInt32LE(open.listener, 0);
  writeAddress(open.clientAddress, 4);
  payload.writeUInt32LE(open.clientPort, 8);
  if (open.destination) {
    writeAddress(open.destination.address, 12);
    payload.writeUInt32LE(open.destination.port, 16);
  }
  return payload;
}

/** One decoded frame. */
export interface Frame {
  type: number;
  id: number;
  payload: Buffer;
}

/** Encodes one frame. */
export function encodeFrame(type: FrameType, id: number, payload: Uint8Array = new Uint8Array()) {
  if (payload.length > MAX_PAYLOAD) throw new Error(`frame payload over ${MAX_PAYLOAD} bytes`);
  const header = Buffer.alloc(HEADER_BYTES);
  header.writeUInt32LE(payload.length, 0);
  header.writeUInt16LE(type, 4);
  header.writeUInt16LE(id, 6);
  return Buffer.concat([header, payload]);
}

function str(value: string): Buffer {
  const bytes = Buffer.from(value, "utf8");
  const length = Buffer.alloc(4);
  length.writeUInt32LE(bytes.length, 0);
  return Buffer.concat([length, bytes]);
}

function u32s(...values: number[]): Buffer {
  const bytes = Buffer.alloc(4 * values.length);
  values.forEach((value, index) => bytes.writeUInt32LE(value, 4 * index));
  return bytes;
}

/** What EXEC and SPAWN share after their own head: argc, argv, envc, env, cwd. */
interface CommandPayload {
  argv: string[];
  env: Record<string, string>;
  cwd: string;
}

function encodeCommand(request: CommandPayload): Buffer {
  const env = Object.entries(request.env).map(([key, value]) => `${key}=${value}`);
  return Buffer.concat([
    u32s(request.argv.length),
    ...request.argv.map(str),
    u32s(env.length),
    ...env.map(str),
    str(request.cwd),
  ]);
}

/** The payload of an EXEC frame. */
export function encodeExec(
  request: CommandPayload & { timeoutMs: number; maxOutputBytes: number },
): Buffer {
  const head = Buffer.alloc(12);
  head.writeUInt32LE(Math.min(Math.max(0, Math.ceil(request.timeoutMs)), 0xffffffff), 0);
  head.writeBigUInt64LE(BigInt(Math.max(0, Math.floor(request.maxOutputBytes))), 4);
  return Buffer.concat([head, encodeCommand(request)]);
}

/** A terminal size as the agent takes it (1–65535 each). */
export function terminalSize(value: number): number {
  return Math.min(65535, Math.max(1, Math.floor(Number.isFinite(value) ? value : 1)));
}

/** The payload of a SPAWN frame: a terminal size (none: pipes), then the command. */
export function encodeSpawn(
  request: CommandPayload & { pty?: { cols: number; rows: number } },
): Buffer {
  const { pty } = request;
  return Buffer.concat([
    pty ? u32s(terminalSize(pty.cols), terminalSize(pty.rows)) : u32s(0, 0),
    encodeCommand(request),
  ]);
}

/** The payload of a RESIZE frame. */
export function encodeResize(cols: number, rows: number): Buffer {
  return u32s(terminalSize(cols), terminalSize(rows));
}

/** The payload of a SIGNAL frame (a Linux signal number) or a FLOW frame (1 paused, 0 not). */
export function encodeU32(value: number): Buffer {
  return u32s(value);
}

/** The shell's limits and network, as the guest enforces them. */
export interface GuestLimits {
  memoryBytes: number;
  pids: number;
  /**
   * The size of the shell's disk (bytes): the guest grows its root filesystem to it once the disk
   * shows that size. 0 leaves the disk as it is.
   */
  diskBytes: number;
  /** Free bytes on the root filesystem at or below which a failed exec ends with `disk`. */
  diskFullBytes: number;
  /** Loopback up (`localhost`, or any shell given egress) or down (`sealed`); no other interface. */
  loopback: boolean;
  /** Which egress listeners the agent opens. */
  egress: AgentEgress;
}

/** What the guest applied: memory capped below what its kernel needs, the root filesystem's size. */
export interface AppliedLimits {
  memoryBytes: number;
  pids: number;
  /** The root filesystem's size once grown (0 from an agent that does not grow it). */
  filesystemBytes: number;
}

/** Bytes of a LIMITS payload (host to guest). */
export const LIMITS_BYTES = 36;

/** The payload of a LIMITS frame (host to guest). */
export function encodeLimits(limits: GuestLimits): Buffer {
  const payload = Buffer.alloc(LIMITS_BYTES);
  const u64 = (value: number) => BigInt(Math.max(0, Math.floor(value)));
  payload.writeBigUInt64LE(u64(limits.memoryBytes), 0);
  payload.writeUInt32LE(Math.min(Math.max(1, Math.floor(limits.pids)), 0xffffffff), 8);
  payload.writeBigUInt64LE(u64(limits.diskBytes), 12);
  payload.writeBigUInt64LE(u64(limits.diskFullBytes), 20);
  payload.writeUInt32LE(limits.loopback ? 1 : 0, 28);
  payload.writeUInt32LE(limits.egress, 32);
  return payload;
}

/**
 * Decodes the guest's answer to LIMITS: an errno (0 when applied) and what it applied. An agent
 * older than the disk field answers 16 bytes.
 */
export function decodeLimits(payload: Buffer): AppliedLimits & { error: number } {
  return {
    error: payload.readUInt32LE(0),
    memoryBytes: Number(payload.readBigUInt64LE(4)),
    pids: payload.readUInt32LE(12),
    filesystemBytes: payload.length >= 24 ? Number(payload.readBigUInt64LE(16)) : 0,
  };
}

/** Bytes of an EXIT frame's payload. */
export const EXIT_BYTES = 24;

/** Where an exec's time went inside the guest, by the agent's clock (microseconds). */
export interface AgentExecTiming {
  /** EXEC taken to the process started (its cgroup joined, `execve` reached or under way). */
  startUs: number;
  /** Process started to the agent reaping it. */
  runUs: number;
  /** Reaped to the EXIT sent (the exec's last output read, its cgroup checked). */
  finishUs: number;
}

/** A decoded EXIT frame. */
export interface ExitPayload {
  exitCode: number;
  killReason: number;
  truncated: boolean;
  timing: AgentExecTiming;
}

/** Decodes an EXIT frame's payload (an older agent's 12 bytes read with no timing: zeros). */
export function decodeExit(payload: Buffer): ExitPayload {
  const timed = payload.length >= EXIT_BYTES;
  return {
    exitCode: payload.readInt32LE(0),
    killReason: payload.readUInt32LE(4),
    truncated: payload.readUInt32LE(8) === 1,
    timing: {
      startUs: timed ? payload.readUInt32LE(12) : 0,
      runUs: timed ? payload.readUInt32LE(16) : 0,
      finishUs: timed ? payload.readUInt32LE(20) : 0,
    },
  };
}

/** Splits a byte stream into frames; throws when the stream is out of step (a payload too big). */
export class FrameReader {
  #pending: Buffer = Buffer.alloc(0);

  /** Adds bytes and returns every frame they complete. */
  push(chunk: Buffer): Frame[] {
    this.#pending = this.#pending.length ? Buffer.concat([this.#pending, chunk]) : chunk;
    const frames: Frame[] = [];
    while (this.#pending.length >= HEADER_BYTES) {
      const length = this.#pending.readUInt32LE(0);
      if (length > MAX_PAYLOAD) throw new Error(`agent frame of ${length} bytes`);
      if (this.#pending.length < HEADER_BYTES + length) break;
      frames.push({
        type: this.#pending.readUInt16LE(4),
        id: this.#pending.readUInt16LE(6),
        payload: this.#pending.subarray(HEADER_BYTES, HEADER_BYTES + length),
      });
      this.#pending = this.#pending.subarray(HEADER_BYTES + length);
    }
    return frames;
  }
}
