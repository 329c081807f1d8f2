import ShellsClient, {
  NotFoundError,
  ValidationError,
  type ExecFrame,
  type Shell,
  type TerminalConnection,
} from "@l1fe/shells";
import { readTar, writeTar } from "@shells/sandbox";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startTestServer, type TestServer } from "./harness.js";

/** Interpreter turns and python runs need real interpreters: only the container backend has them. */
const backend = process.env["SHELLS_TEST_BACKEND"] === "container" ? "container" : "simulator";
const onContainer = backend === "container";
const NEEDS_CONTAINER =
  "needs real python/node (the simulator runs no code): set SHELLS_TEST_BACKEND=container";

let server: TestServer;
let shells: ShellsClient;
let shell: Shell;

beforeAll(async () => {
  server = await startTestServer({ backend });
  shells = new ShellsClient({ baseUrl: server.url, token: server.token });
  shell = await shells.create({ language: onContainer ? "python" : "bash" });
});
afterAll(async () => {
  await server?.close();
});

describe("streamed exec through the SDK", () => {
  it("delivers each output frame as it happens, before the command ends, then the exit frame", async () => {
    const script = Array.from({ length: 10 }, (_, i) => `echo tick-${i}; sleep 0.2`).join("; ");
    const started = Date.now();
    const frames: { frame: ExecFrame; arrivedAt: number }[] = [];
    for await (const frame of shells.execStream(shell.id, { command: ["sh", "-c", script] })) {
      frames.push({ frame, arrivedAt: Date.now() });
    }
    const ended = Date.now();
    const output = frames.flatMap(({ frame, arrivedAt }) =>
      frame.type === "stdout" ? [{ ...frame, arrivedAt }] : [],
    );
    expect(output.length).toBeGreaterThanOrEqual(5);
    expect(output.map((f) => f.data).join("")).toBe(
      Array.from({ length: 10 }, (_, i) => `tick-${i}\n`).join(""),
    );
    // The first frame arrived long before the command ended, and each was stamped when it happened.
    expect(ended - output[0]!.arrivedAt).toBeGreaterThan(1000);
    expect(output[0]!.time).toBeGreaterThanOrEqual(started - 50);
    for (let i = 1; i < output.length; i += 1) {
      expect(output[i]!.time - output[i - 1]!.time).toBeGreaterThanOrEqual(150);
    }
    const last = frames.at(-1)!.frame;
    expect(last).toMatchObject({ type: "exit", result: { exitCode: 0, stdout: "", stderr: "" } });
  });

  it("streams stderr apart from stdout and ends with a non-zero exit code as a result", async () => {
    const frames: ExecFrame[] = [];
    for await (const frame of shells.execStream(shell.id, {
      command: ["sh", "-c", "echo out; echo err >&2; exit 3"],
    })) {
      frames.push(frame);
    }
    const text = (type: "stdout" | "stderr") =>
      frames.flatMap((f) => (f.type === type ? [f.data] : []));
    expect(text("stdout")).toEqual(["out\n"]);
    expect(text("stderr")).toEqual(["err\n"]);
    expect(frames.at(-1)).toMatchObject({ type: "exit", result: { exitCode: 3 } });
  });

  it("fails the first iteration of a stream for an unknown shell with NotFoundError", async () => {
    const stream = shells.execStream("sh-nope", { command: ["true"] });
    await expect(stream.next()).rejects.toBeInstanceOf(NotFoundError);
  });

  it("keeps the buffered exec as it was", async () => {
    const result = await shells.exec(shell.id, { command: ["sh", "-c", "echo hi; exit 2"] });
    expect(result).toMatchObject({ exitCode: 2, stdout: "hi\n" });
  });
});

describe("files through the SDK", () => {
  it("round-trips binary bytes, text and a mode, then lists, stats and removes them", async () => {
    const bytes = Uint8Array.from({ length: 4096 }, (_, i) => (i * 7) % 256);
    const written = await shells.files.write(shell.id, "sdk/blob.bin", bytes);
    expect(written).toMatchObject({
      path: "/workspace/sdk/blob.bin",
      type: "file",
      sizeBytes: 4096,
    });
    expect(await shells.files.read(shell.id, "/workspace/sdk/blob.bin")).toEqual(bytes);

    const script = await shells.files.write(shell.id, "sdk/run.sh", "echo héllo\n", {
      mode: 0o755,
    });
    // The simulator keeps every file at 0644; real sandboxes apply the mode.
    if (onContainer) expect(script.mode & 0o777).toBe(0o755);
    expect(await shells.files.readText(shell.id, "sdk/run.sh")).toBe("echo héllo\n");

    const listed = await shells.files.list(shell.id, "sdk");
    expect(listed.map((f) => f.path).sort()).toEqual([
      "/workspace/sdk/blob.bin",
      "/workspace/sdk/run.sh",
    ]);
    expect(await shells.files.stat(shell.id, "sdk")).toMatchObject({ type: "directory" });

    await expect(shells.files.remove(shell.id, "sdk")).rejects.toMatchObject({
      name: expect.stringMatching(/Error$/),
    });
    expect(await shells.files.remove(shell.id, "sdk", { recursive: true })).toEqual({
      path: "/workspace/sdk",
      removed: true,
    });
    await expect(shells.files.stat(shell.id, "sdk")).rejects.toMatchObject({
      code: "file_not_found",
    });
  });

  it("refuses paths that climb out with .. and archives with unsafe entries", async () => {
    for (const path of ["../etc/passwd", "/workspace/../../etc/shadow"]) {
      const error = await shells.files.read(shell.id, path).catch((e: unknown) => e);
      expect(error, path).toBeInstanceOf(ValidationError);
    }
    const evil = await writeTar([
      { name: "../escape.txt", type: "file", mode: 0o644, linkName: "", data: Buffer.from("x") },
    ]);
    await expect(shells.files.uploadDirectory(shell.id, "evil", evil)).rejects.toMatchObject({
      code: "unsafe_archive",
    });
  });

  it("uploads a directory as tar and downloads it back", async () => {
    const archive = await writeTar([
      { name: "pkg", type: "directory", mode: 0o755, linkName: "", data: new Uint8Array() },
      {
        name: "pkg/readme.txt",
        type: "file",
        mode: 0o644,
        linkName: "",
        data: Buffer.from("hi\n"),
      },
    ]);
    expect(await shells.files.uploadDirectory(shell.id, "tree", archive)).toMatchObject({
      path: "/workspace/tree",
    });
    const back = await readTar(await shells.files.downloadDirectory(shell.id, "tree"));
    const readme = back.find((entry) => entry.name.replace(/^\.\//, "") === "pkg/readme.txt");
    expect(Buffer.from(readme!.data).toString()).toBe("hi\n");
  });
});

/**
 * Collects a terminal's output as text while the test drives it, once the shell has prompted: the
 * server starts reading input only once the PTY runs, and the prompt is the sign that it does.
 */
async function record(term: TerminalConnection): Promise<() => string> {
  let output = "";
  const decoder = new TextDecoder();
  void (async () => {
    for await (const bytes of term) output += decoder.decode(bytes, { stream: true });
  })();
  await expect.poll(() => output, { timeout: 5000 }).toMatch(/[$#] $/);
  await new Promise((resolve) => setTimeout(resolve, 50));
  return () => output;
}

describe("the terminal through the SDK", () => {
  it("attaches with the seed's `shells.term(id)`: tty, resize and stty size, Ctrl-C, exit code", async () => {
    const credential = await shells.term(shell.id);
    expect(credential.token).toMatch(/^sht_/);
    const term = await credential.attach({ cols: 100, rows: 30 });
    const output = await record(term);

    term.write("stty size\r");
    await expect.poll(output, { timeout: 5000 }).toMatch(/30 100/);
    term.write("tty\r");
    await expect.poll(output, { timeout: 5000 }).toMatch(/\/dev\/pts\/\d+/);
    term.resize(132, 43);
    term.write("stty size\r");
    await expect.poll(output, { timeout: 5000 }).toMatch(/43 132/);
    term.write("\u0003");
    await expect.poll(output, { timeout: 5000 }).toMatch(/\^C/);
    term.write("exit 0\r");
    expect(await term.closed).toMatchObject({ code: 1000, exitCode: 0, error: null });
  });

  it("reports the remote shell's exit code when a signal ends it", async () => {
    const term = await (await shells.term(shell.id)).attach();
    await record(term);
    term.signal("SIGHUP");
    expect(await term.closed).toMatchObject({ code: 1000, exitCode: 129 });
  });

  it("refuses a second attach with the same credential (4401)", async () => {
    const credential = await shells.term(shell.id);
    const first = await credential.attach();
    first.close();
    await first.closed;
    const second = await credential.attach();
    expect(await second.closed).toMatchObject({
      code: 4401,
      exitCode: null,
      error: { code: "unauthenticated" },
    });
  });
});

describe("one-shot runs through the SDK", () => {
  it("runs a command, streams its frames, returns its $SHELLS_RESULT and artifact, tears down", async () => {
    const run = await shells.run({
      language: "bash",
      command: [
        "sh",
        "-c",
        `echo hi; sleep 0.2; echo report > out.txt; echo '{"ok":true}' > "$SHELLS_RESULT"`,
      ],
      artifacts: ["out.txt"],
    });
    const frames = [];
    for await (const frame of run.stream()) frames.push(frame);
    expect(frames.map((f) => f.seq)).toEqual(frames.map((_, i) => i + 1));
    expect(frames.filter((f) => f.type === "stdout").map((f) => f.data)).toEqual(["hi\n"]);
    expect(frames.at(-1)?.type).toBe("exit");

    const outcome = await run.result();
    expect(outcome).toMatchObject({
      id: run.id,
      status: "succeeded",
      exitCode: 0,
      result: { ok: true },
      artifacts: [{ path: "out.txt" }],
    });
    expect(new TextDecoder().decode(await run.artifact("out.txt"))).toBe("report\n");
    expect((await run.audit()).map((e) => e.action)).toContain("run.finish");
    expect((await shells.runs.list()).map((r) => r.id)).toContain(run.id);
    expect(await shells.runs.get(run.id)).toMatchObject({ status: "succeeded" });
    expect(await run.teardown()).toMatchObject({ id: run.id, status: "succeeded" });
  });

  it("waits for the outcome with result() alone, without reading the stream", async () => {
    const run = await shells.run({
      language: "bash",
      command: ["sh", "-c", "sleep 0.3; exit 4"],
    });
    expect(await run.result()).toMatchObject({ status: "failed", exitCode: 4, result: null });
  });

  it.skipIf(!onContainer)(
    `python: shells.result() comes back as the structured result (${NEEDS_CONTAINER})`,
    async () => {
      const run = await shells.run({
        language: "python",
        code: 'print("hi")\nopen("out.txt", "w").write("x")\nshells.result({"ok": True})',
        artifacts: ["out.txt"],
      });
      const frames = [];
      for await (const frame of run.stream()) frames.push(frame);
      expect(frames.some((f) => f.type === "stdout" && f.data === "hi\n")).toBe(true);
      expect(await run.result()).toMatchObject({
        status: "succeeded",
        result: { ok: true },
        artifacts: [{ path: "out.txt" }],
      });
      await run.teardown();
    },
  );
});

describe.skipIf(!onContainer)(`the code interpreter through the SDK (${NEEDS_CONTAINER})`, () => {
  it("keeps a variable across turns and reports a traceback as a structured error", async () => {
    const first = await shells.interpreter(shell.id, { code: "x = 41", language: "python" });
    expect(first.error).toBeNull();
    const second = await shells.interpreter(shell.id, { code: "x + 1", language: "python" });
    expect(second).toMatchObject({ value: 42, error: null, restarted: false });
    const failed = await shells.interpreter(shell.id, { code: "1 / 0", language: "python" });
    expect(failed.error).toMatchObject({ name: "ZeroDivisionError" });
    expect(failed.error?.traceback).toMatch(/Traceback/);
  });
});
