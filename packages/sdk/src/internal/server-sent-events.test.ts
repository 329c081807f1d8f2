import { describe, expect, it } from "vitest";
import {
  ServerSentEventParser,
  readServerSentEvents,
  type ServerSentEvent,
} from "./server-sent-events.js";

function parseAll(chunks: readonly string[]): ServerSentEvent[] {
  const parser = new ServerSentEventParser();
  const events = chunks.flatMap((chunk) => parser.feed(chunk));
  parser.end();
  return events;
}

function bodyOf(chunks: readonly Uint8Array[]): ReadableStream<Uint8Array> {
  return new ReadableStream({
    start(controller) {
      for (const chunk of chunks) controller.enqueue(chunk);
      controller.close();
    },
  });
}

async function collect(body: ReadableStream<Uint8Array>): Promise<ServerSentEvent[]> {
  const events: ServerSentEvent[] = [];
  for await (const event of readServerSentEvents(body)) events.push(event);
  return events;
}

const stream = [
  ": a comment the server sends to keep the connection open",
  "id: 1",
  "event: stdout",
  'data: {"type":"stdout","data":"a\\n"}',
  "",
  "event: exit",
  "data: first line",
  "data:second line",
  "data",
  "",
  "",
].join("\n");

describe("the server-sent event parser", () => {
  it("reads events with their type, multi-line data and the last id", () => {
    expect(parseAll([stream])).toEqual([
      { event: "stdout", data: '{"type":"stdout","data":"a\\n"}', id: "1" },
      { event: "exit", data: "first line\nsecond line\n", id: "1" },
    ]);
  });

  it("gives the same events however the text is split into chunks", () => {
    const whole = parseAll([stream]);
    for (let cut = 0; cut <= stream.length; cut += 1) {
      expect(parseAll([stream.slice(0, cut), stream.slice(cut)]), `cut at ${cut}`).toEqual(whole);
    }
    expect(parseAll([...stream])).toEqual(whole);
  });

  it("accepts CRLF and lone CR line endings, even a CRLF split across chunks", () => {
    const expected = [{ event: "message", data: "x", id: "7" }];
    expect(parseAll(["id: 7\r\ndata: x\r\n\r\n"])).toEqual(expected);
    expect(parseAll(["id: 7\rdata: x\r\r"])).toEqual(expected);
    expect(parseAll(["id: 7\r", "\ndata: x\r", "\n\r", "\n"])).toEqual(expected);
  });

  it("names an event without an event field `message`, and dispatches nothing without data", () => {
    expect(parseAll(["event: ping\n\ndata: hi\n\n"])).toEqual([
      { event: "message", data: "hi", id: undefined },
    ]);
  });

  it("keeps the last id across events and ignores an id with a NUL byte", () => {
    expect(
      parseAll(["id: 3\ndata: a\n\ndata: b\n\nid: 4\0\ndata: c\n\n"]).map((e) => e.id),
    ).toEqual(["3", "3", "3"]);
  });

  it("discards an event the stream cut off before its blank line", () => {
    expect(parseAll(["data: complete\n\ndata: half"])).toEqual([
      { event: "message", data: "complete", id: undefined },
    ]);
  });

  it("strips a leading byte-order mark once", () => {
    expect(parseAll(["\uFEFFdata: x\n\n"])).toEqual([
      { event: "message", data: "x", id: undefined },
    ]);
  });

  it("decodes UTF-8 split across body chunks", async () => {
    const bytes = new TextEncoder().encode('event: stdout\ndata: "héllo ✓"\n\n');
    const split = bytes.indexOf(0xc3) + 1; // inside the two bytes of é
    const events = await collect(bodyOf([bytes.subarray(0, split), bytes.subarray(split)]));
    expect(events).toEqual([{ event: "stdout", data: '"héllo ✓"', id: undefined }]);
  });

  it("cancels the body when the reader stops early", async () => {
    let cancelled = false;
    const body = new ReadableStream<Uint8Array>({
      pull(controller) {
        controller.enqueue(new TextEncoder().encode("data: tick\n\n"));
      },
      cancel() {
        cancelled = true;
      },
    });
    for await (const event of readServerSentEvents(body)) {
      expect(event.data).toBe("tick");
      break;
    }
    expect(cancelled).toBe(true);
  });
});
