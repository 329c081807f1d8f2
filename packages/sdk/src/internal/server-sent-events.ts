/**
 * A small parser of `text/event-stream` bodies (the WHATWG "server-sent events" format), so the SDK
 * can read streams over `fetch` in Node and browsers without an `EventSource` (which cannot send an
 * `Authorization` header or a POST body).
 */

/** One dispatched event. */
export interface ServerSentEvent {
  /** The `event:` field; `message` when the event named none. */
  event: string;
  /** The `data:` lines joined with `\n`. */
  data: string;
  /** The last `id:` seen on the stream so far (ids persist across events), if any. */
  id: string | undefined;
}

/**
 * Incremental parser: feed it decoded text in chunks of any size and it returns the events each
 * chunk completes. Lines may end in LF, CRLF or CR, even when a CRLF is split across chunks.
 */
export class ServerSentEventParser {
  #buffer = "";
  /** The previous chunk ended in CR: a leading LF in the next one belongs to it. */
  #afterCarriageReturn = false;
  #started = false;
  #event = "";
  #data: string[] = [];
  #lastId: string | undefined;

  /** Parses a chunk of text; returns the events it completed, in order. */
  feed(text: string): ServerSentEvent[] {
    let chunk = text;
    if (!this.#started && chunk.length > 0) {
      this.#started = true;
      if (chunk.startsWith("\uFEFF")) chunk = chunk.slice(1);
    }
    if (this.#afterCarriageReturn && chunk.startsWith("\n")) chunk = chunk.slice(1);
    this.#afterCarriageReturn = false;
    this.#buffer += chunk;

    const events: ServerSentEvent[] = [];
    let start = 0;
    for (let i = 0; i < this.#buffer.length; i += 1) {
      const char = this.#buffer[i];
      if (char !== "\n" && char !== "\r") continue;
      const line = this.#buffer.slice(start, i);
      if (char === "\r") {
        if (i + 1 === this.#buffer.length) this.#afterCarriageReturn = true;
        else if (this.#buffer[i + 1] === "\n") i += 1;
      }
      start = i + 1;
      const event = this.#line(line);
      if (event) events.push(event);
    }
    this.#buffer = this.#buffer.slice(start);
    return events;
  }

  /**
   * Ends the stream. An event not terminated by a blank line is discarded, as the format requires:
   * a connection cut mid-event must not deliver half of it.
   */
  end(): void {
    this.#buffer = "";
    this.#data = [];
    this.#event = "";
  }

  #line(line: string): ServerSentEvent | undefined {
    if (line === "") return this.#dispatch();
    if (line.startsWith(":")) return undefined;
    const colon = line.indexOf(":");
    const field = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "data") this.#data.push(value);
    else if (field === "event") this.#event = value;
    else if (field === "id" && !value.includes("\0")) this.#lastId = value;
    // `retry` and unknown fields are ignored: the SDK reconnects on its own schedule.
    return undefined;
  }

  #dispatch(): ServerSentEvent | undefined {
    const data = this.#data;
    const event = this.#event;
    this.#data = [];
    this.#event = "";
    if (data.length === 0) return undefined;
    return { event: event === "" ? "message" : event, data: data.join("\n"), id: this.#lastId };
  }
}

/**
 * Reads the events of a `text/event-stream` body as they arrive. Breaking out of the loop cancels
 * the body. Read errors (a dropped connection) are thrown as they come from the stream.
 */
export async function* readServerSentEvents(
  body: ReadableStream<Uint8Array>,
): AsyncGenerator<ServerSentEvent, void, undefined> {
  const parser = new ServerSentEventParser();
  const decoder = new TextDecoder();
  // A reader rather than `for await` over the stream: Safari's ReadableStream is not async iterable.
  const reader = body.getReader();
  let finished = false;
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) {
        yield* parser.feed(decoder.decode());
        parser.end();
        finished = true;
        return;
      }
      yield* parser.feed(decoder.decode(value, { stream: true }));
    }
  } finally {
    if (!finished) await reader.cancel().catch(() => undefined);
    reader.releaseLock();
  }
}
