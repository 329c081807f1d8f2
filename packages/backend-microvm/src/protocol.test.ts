import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { NATIVE_DIR } from "./internal/host.js";
import {
  AgentEgress,
  AgentKill,
  AgentListener,
  decodeExit,
  encodeExec,
  encodeFrame,
  encodeResize,
  encodeSpawn,
  FrameReader,
  FrameType,
  decodeLimits,
  encodeLimits,
  HEADER_BYTES,
  LIMITS_BYTES,
  EXIT_BYTES,
  MAX_EXECS,
  MAX_PAYLOAD,
  MAX_STREAMS,
  NET_OPEN_BYTES,
  NET_OPEN_TRANSPARENT_BYTES,
  NET_WINDOW,
} from "./internal/protocol.js";

/** The `#define`s of the agent's C header, evaluated. */
function headerDefines(): Record<string, number> {
  const text = readFileSync(`${NATIVE_DIR}agent-protocol.h`, "utf8");
  const defines: Record<string, number> = {};
  for (const [, name, value] of text.matchAll(/^#define (AGENT_\w+) (.+)$/gm)) {
    const shifted = /^\(1u << (\d+)\)$/.exec(value!.trim());
    defines[name!] = shifted ? 2 ** Number(shifted[1]) : Number(value);
  }
  return defines;
}

describe("agent protocol", () => {
  it("agrees with the C header on frame layout, types and kill reasons", () => {
    const c = headerDefines();
    expect(c.AGENT_HEADER_BYTES).toBe(HEADER_BYTES);
    expect(c.AGENT_MAX_PAYLOAD).toBe(MAX_PAYLOAD);
    expect(c.AGENT_MAX_EXECS).toBe(MAX_EXECS);
    expect(c.AGENT_LIMITS_BYTES).toBe(LIMITS_BYTES);
    expect(c.AGENT_EXIT_BYTES).toBe(EXIT_BYTES);
    for (const [name, value] of Object.entries(FrameType))
      expect(c[`AGENT_FRAME_${name}`]).toBe(value);
    for (const [name, value] of Object.entries(AgentKill))
      expect(c[`AGENT_KILL_${name}`]).toBe(value);
    for (const [name, value] of Object.entries(AgentEgress))
      expect(c[`AGENT_EGRESS_${name}`]).toBe(value);
    for (const [name, value] of Object.entries(AgentListener))
      expect(c[`AGENT_LISTENER_${name}`]).toBe(value);
    expect(c.AGENT_MAX_STREAMS).toBe(MAX_STREAMS);
    expect(c.AGENT_NET_WINDOW).toBe(NET_WINDOW);
    expect(c.AGENT_NET_OPEN_BYTES).toBe(NET_OPEN_BYTES);
    expect(c.AGENT_NET_OPEN_TRANSPARENT_BYTES).toBe(NET_OPEN_TRANSPARENT_BYTES);
  });

  it("round-trips frames split at any byte", () => {
    const bytes = Buffer.concat([
      encodeFrame(FrameType.STDOUT, 3, Buffer.from("hello")),
      encodeFrame(
        FrameType.EXIT,
        3,
        Buffer.from([7, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 10, 0, 0, 0, 0, 1, 0, 0, 3, 0, 0, 0]),
      ),
    ]);
    const reader = new FrameReader();
    const frames = [...bytes].flatMap((byte) => reader.push(Buffer.from([byte])));
    expect(frames.map((f) => [f.type, f.id])).toEqual([
      [FrameType.STDOUT, 3],
      [FrameType.EXIT, 3],
    ]);
    expect(frames[0]!.payload.toString()).toBe("hello");
    expect(decodeExit(frames[1]!.payload)).toEqual({
      exitCode: 7,
      killReason: 1,
      truncated: false,
      timing: { startUs: 10, runUs: 256, finishUs: 3 },
    });
  });

  it("encodes an exec as the header describes", () => {
    const payload = encodeExec({
      argv: ["sh", "-c"],
      env: { A: "1" },
      cwd: "/",
      timeoutMs: 5,
      maxOutputBytes: 9,
    });
    expect(payload.readUInt32LE(0)).toBe(5);
    expect(payload.readBigUInt64LE(4)).toBe(9n);
    expect(payload.readUInt32LE(12)).toBe(2);
    expect(payload.subarray(16, 22).toString("latin1")).toBe("\x02\x00\x00\x00sh");
  });

  it("encodes a spawn as an exec's command behind a terminal size (0x0: pipes)", () => {
    const command = { argv: ["sh"], env: { A: "1" }, cwd: "/" };
    const onPty = encodeSpawn({ ...command, pty: { cols: 80, rows: 24 } });
    expect([onPty.readUInt32LE(0), onPty.readUInt32LE(4)]).toEqual([80, 24]);
    // After its own head, a spawn carries exactly the bytes an exec carries after its head.
    const exec = encodeExec({ ...command, timeoutMs: 5, maxOutputBytes: 9 });
    expect(onPty.subarray(8)).toEqual(exec.subarray(12));
    const onPipes = encodeSpawn(command);
    expect([onPipes.readUInt32LE(0), onPipes.readUInt32LE(4)]).toEqual([0, 0]);
    expect([...encodeResize(0, 1e6)]).toEqual([1, 0, 0, 0, 0xff, 0xff, 0, 0]);
  });

  it("encodes the shell's limits and network as the header describes, and reads both answers", () => {
    const payload = encodeLimits({
      memoryBytes: 2 ** 33,
      pids: 64,
      diskBytes: 3 * 2 ** 30,
      diskFullBytes: 2 ** 20,
      loopback: true,
      egress: AgentEgress.INTERNET,
    });
    expect(payload.length).toBe(LIMITS_BYTES);
    expect(payload.readBigUInt64LE(0)).toBe(2n ** 33n);
    expect(payload.readUInt32LE(8)).toBe(64);
    expect(payload.readBigUInt64LE(12)).toBe(3n * 2n ** 30n);
    expect(payload.readBigUInt64LE(20)).toBe(2n ** 20n);
    expect(payload.readUInt32LE(28)).toBe(1);
    expect(payload.readUInt32LE(32)).toBe(2);
    const answer = Buffer.alloc(24);
    answer.writeBigUInt64LE(2n ** 32n, 4);
    answer.writeUInt32LE(64, 12);
    answer.writeBigUInt64LE(5n * 2n ** 30n, 16);
    expect(decodeLimits(answer)).toEqual({
      error: 0,
      memoryBytes: 2 ** 32,
      pids: 64,
      filesystemBytes: 5 * 2 ** 30,
    });
    // An agent from before the disk field answers without it.
    expect(decodeLimits(answer.subarray(0, 16)).filesystemBytes).toBe(0);
  });

  it("refuses a frame over the payload limit", () => {
    const header = Buffer.alloc(HEADER_BYTES);
    header.writeUInt32LE(MAX_PAYLOAD + 1, 0);
    expect(() => new FrameReader().push(header)).toThrow();
  });
});
