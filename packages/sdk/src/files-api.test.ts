import { describe, expect, it } from "vitest";
import { ShellsClient } from "./index.js";

interface Seen {
  method: string;
  path: string;
  query: Record<string, string>;
  contentType: string | null;
  body: Uint8Array;
}

/** A client whose server records each request and answers `answer`. */
function recordingClient(answer: () => Response): { client: ShellsClient; seen: Seen[] } {
  const seen: Seen[] = [];
  const client = new ShellsClient({
    baseUrl: "http://shells.test",
    token: "t",
    fetch: async (input, init) => {
      const request = new Request(input, init);
      const url = new URL(request.url);
      seen.push({
        method: request.method,
        path: url.pathname,
        query: Object.fromEntries(url.searchParams),
        contentType: request.headers.get("content-type"),
        body: new Uint8Array(await request.arrayBuffer()),
      });
      return answer();
    },
  });
  return { client, seen };
}

const info = {
  path: "/workspace/a.sh",
  type: "file",
  sizeBytes: 3,
  mode: 0o755,
  modifiedAt: "2025-01-01T00:00:00.000Z",
};

describe("files", () => {
  it("uploads raw bytes (a string as UTF-8) with the mode as octal", async () => {
    const { client, seen } = recordingClient(() => Response.json(info));
    await client.files.write("sh-1", "a.sh", "é\n", { mode: 0o755 });
    expect(seen[0]).toEqual({
      method: "PUT",
      path: "/api/v1/shells/sh-1/files/content",
      query: { path: "a.sh", mode: "755" },
      contentType: "application/octet-stream",
      body: new TextEncoder().encode("é\n"),
    });
  });

  it("downloads bytes as they are, not as text", async () => {
    const bytes = Uint8Array.from([0, 255, 0xc3, 0x28]);
    const { client } = recordingClient(() => new Response(bytes));
    expect(await client.files.read("sh-1", "/bin/blob")).toEqual(bytes);
  });

  it("sends directories as application/x-tar and asks for recursion only when told", async () => {
    const { client, seen } = recordingClient(() =>
      Response.json({ path: "/workspace/d", removed: true }),
    );
    await client.files.uploadDirectory("sh-1", "d", Uint8Array.from([1, 2]));
    await client.files.remove("sh-1", "d");
    await client.files.remove("sh-1", "d", { recursive: true });
    expect(seen.map((s) => [s.method, s.path, s.contentType, s.query])).toEqual([
      ["PUT", "/api/v1/shells/sh-1/files/archive", "application/x-tar", { path: "d" }],
      ["DELETE", "/api/v1/shells/sh-1/files", null, { path: "d" }],
      ["DELETE", "/api/v1/shells/sh-1/files", null, { path: "d", recursive: "true" }],
    ]);
  });

  it("turns the server's refusals into typed errors", async () => {
    const { client } = recordingClient(() =>
      Response.json(
        { error: { code: "unsafe_archive", message: "absolute path /etc/x", requestId: "r" } },
        { status: 400 },
      ),
    );
    await expect(client.files.uploadDirectory("sh-1", "d", new Uint8Array())).rejects.toMatchObject(
      { name: "ValidationError", code: "unsafe_archive", status: 400 },
    );
  });
});
