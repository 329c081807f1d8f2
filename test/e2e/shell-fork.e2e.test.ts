import ShellsClient, { type Shell } from "@l1fe/shells";
import { runCli, type CliIo } from "@shells/cli";
import { Readable } from "node:stream";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startTestServer, type TestServer } from "./harness.js";

/** Runs the CLI in-process against `server`; returns its exit status and output. */
async function cli(server: TestServer, args: string[]) {
  let stdout = "";
  let stderr = "";
  const io: CliIo = {
    stdout: { write: (text: string | Uint8Array) => (stdout += String(text)) },
    stderr: { write: (text: string) => (stderr += text) },
    stdin: Readable.from([]),
    env: { SHELLS_URL: server.url, SHELLS_API_TOKEN: server.token },
    cwd: process.cwd(),
  };
  const exitCode = await runCli(args, io);
  return { exitCode, stdout, stderr };
}

describe("forking a container shell through the API, the SDK and the CLI", () => {
  let server: TestServer;
  let shells: ShellsClient;
  let parent: Shell;

  beforeAll(async () => {
    server = await startTestServer({ backend: "container" });
    shells = new ShellsClient({ baseUrl: server.url, token: server.token });
    parent = await shells.create({ language: "python", network: "localhost", name: "fork-base" });
  }, 300_000);
  afterAll(async () => {
    await server?.close();
  });

  it("makes independent shells from the parent's files at one instant, without its processes", async () => {
    const setup = await shells.exec(parent.id, {
      command: [
        "sh",
        "-c",
        "mkdir -p /workspace/app && echo base > /workspace/app/state.txt && head -c 20000000 /dev/urandom > /workspace/app/blob && sha256sum /workspace/app/blob | cut -d' ' -f1 ; (python3 -m http.server 8000 >/dev/null 2>&1 &); sleep 1",
      ],
    });
    expect(setup.exitCode, setup.stderr).toBe(0);
    const blobHash = setup.stdout.trim();

    const fork = await shells.fork(parent.id, { count: 3 });
    expect(fork.failed).toEqual([]);
    expect(fork.shells).toHaveLength(3);
    expect(fork.state.memory).toBe("not_copied");
    // A running parent on the container backend: copied once into a layer the three share.
    expect(fork.state.filesystem.method).toBe("layered_copy_once");
    expect(fork.state.filesystem.bytesPerShell).toBeGreaterThan(20_000_000);
    expect(fork.state.filesystem.parentFrozenMs).toBeGreaterThan(0);
    expect(fork.message).toMatch(/processes and memory not copied/);

    for (const [i, child] of fork.shells.entries()) {
      expect(child).toMatchObject({ status: "running", language: "python", network: "localhost" });
      const seen = await shells.exec(child.id, {
        command: [
          "sh",
          "-c",
          `cat /workspace/app/state.txt; sha256sum /workspace/app/blob | cut -d' ' -f1; echo child-${i} > /workspace/app/state.txt`,
        ],
      });
      expect(seen.stdout).toBe(`base\n${blobHash}\n`);
      // Files only: the parent's server is not running in the fork.
      const server = await shells.exec(child.id, {
        command: [
          "python3",
          "-c",
          "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/')",
        ],
      });
      expect(server.exitCode).not.toBe(0);
    }
    // Each fork changed its own copy only.
    for (const [i, child] of fork.shells.entries()) {
      const state = await shells.exec(child.id, { command: ["cat", "/workspace/app/state.txt"] });
      expect(state.stdout).toBe(`child-${i}\n`);
    }
    const own = await shells.exec(parent.id, { command: ["cat", "/workspace/app/state.txt"] });
    expect(own.stdout).toBe("base\n");
    // The parent ran on: its server still answers.
    const alive = await shells.exec(parent.id, {
      command: [
        "python3",
        "-c",
        "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/')",
      ],
    });
    expect(alive.exitCode, alive.stderr).toBe(0);

    const created = [];
    for await (const event of shells.activity({ action: "shell.create" }))
      if (event.details["forkOf"] === parent.id) created.push(event.target?.id);
    expect(created.sort()).toEqual(fork.shells.map((s) => s.id).sort());
  }, 180_000);

  it("`shells fork` names the new shells and says how the state was copied", async () => {
    const run = await cli(server, [
      "fork",
      "fork-base",
      "--name",
      "fork-cli-a",
      "--name",
      "fork-cli-b",
    ]);
    expect(run.exitCode, run.stderr).toBe(0);
    expect(run.stdout).toMatch(/fork-cli-a\s+running/);
    expect(run.stdout).toMatch(/fork-cli-b\s+running/);
    expect(run.stdout).toMatch(
      /filesystem: shared layer \(copied once\), .* shared; .*memory not copied/,
    );
    const refused = await cli(server, ["fork", "fork-base", "--count", "2", "--name", "only-one"]);
    expect(refused.exitCode).toBe(2);
  }, 120_000);
});
