import ShellsClient, { ConflictError, type Shell } from "@l1fe/shells";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startTestServer, type TestServer } from "./harness.js";

/** A server whose only state is a request counter in its memory. */
const COUNTING_SERVER = `
import http.server
hits = 0
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        global hits
        hits += 1
        self.send_response(200)
        self.end_headers()
        self.wfile.write(str(hits).encode())
    def log_message(self, *args):
        pass
http.server.HTTPServer(("127.0.0.1", 8000), Handler).serve_forever()
`;

const ASK =
  "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:8000/').read().decode())";

describe("pausing and resuming a container shell through the SDK", () => {
  let server: TestServer;
  let shells: ShellsClient;
  let shell: Shell;

  beforeAll(async () => {
    server = await startTestServer({ backend: "container" });
    shells = new ShellsClient({ baseUrl: server.url, token: server.token });
    shell = await shells.create({ language: "python", network: "localhost" });
  }, 300_000);
  afterAll(async () => {
    await server?.close();
  });

  const ask = async () => {
    const result = await shells.exec(shell.id, { command: ["python3", "-c", ASK] });
    expect(result.exitCode, result.stderr).toBe(0);
    return Number(result.stdout.trim());
  };

  it("a background server answers after resume with the in-memory state it had before pause", async () => {
    await shells.files.write(shell.id, "/workspace/server.py", COUNTING_SERVER);
    const start = await shells.exec(shell.id, {
      command: ["sh", "-c", "(python3 /workspace/server.py >/dev/null 2>&1 &); sleep 1"],
    });
    expect(start.exitCode).toBe(0);
    expect(await ask()).toBe(1);
    expect(await ask()).toBe(2);

    const paused = await shells.action(shell.id, "pause");
    if (!("capability" in paused)) throw new Error("pause was parked for approval");
    expect(paused.shell.status).toBe("paused");
    expect(paused.pause).toMatchObject({ method: "freeze", memoryReleased: false });
    expect(paused.shell.statusReason).toMatch(/^paused: .*cgroup freezer/);
    expect((await shells.get(shell.id)).status).toBe("paused");

    // Execs are refused with a code of their own; the files stay readable.
    const refused = await shells.exec(shell.id, { command: ["true"] }).catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(ConflictError);
    expect((refused as ConflictError).code).toBe("shell_paused");
    expect(await shells.files.readText(shell.id, "/workspace/server.py")).toBe(COUNTING_SERVER);

    const resumed = await shells.action(shell.id, "resume");
    if (!("capability" in resumed)) throw new Error("resume was parked for approval");
    expect(resumed.shell).toMatchObject({ status: "running", statusReason: null });
    expect(await ask()).toBe(3);

    const events = (await shells.activity({ shell: shell.id }).page()).items.map((e) => e.action);
    expect(events).toContain("shell.action.pause");
    expect(events).toContain("shell.action.resume");
  }, 120_000);
});
