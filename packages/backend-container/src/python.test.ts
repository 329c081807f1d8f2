import { readFile } from "node:fs/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { ContainerBackend } from "./container-backend.js";
import { findImage } from "./internal/images.js";
import {
  hostReport,
  makeTestBackend,
  request,
  SMALL,
  TEST_IMAGES_DIR,
} from "./internal/test-support.js";

const decoder = new TextDecoder();

// Slow on the first run only: builds the python image (about 20–60 s) into the shared cache.
describe.runIf(hostReport.available)("a python shell", () => {
  let backend: ContainerBackend;
  let cleanup: () => Promise<void>;

  beforeAll(async () => {
    ({ backend, cleanup } = await makeTestBackend());
    await backend.create({
      shellId: "py",
      language: "python",
      runtime: "container",
      network: "localhost",
      resources: { ...SMALL, memoryMb: 256, diskMb: 256 },
      env: {},
    });
  }, 600_000);
  afterAll(() => cleanup());

  it("keeps `python3 -m http.server 8000 &` answering later execs", async () => {
    // As a user types it: no redirection, so the server logs each request long after the exec
    // that started it has ended.
    const started = await backend.exec(
      "py",
      request(["sh", "-c", "python3 -m http.server 8000 & sleep 1; echo started"]),
    );
    expect(started.stdout).toBe("started\n");
    const fetch =
      "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:8000/').status)";
    for (let i = 0; i < 3; i++) {
      const result = await backend.exec("py", request(["python3", "-c", fetch]));
      expect(result).toMatchObject({ exitCode: 0, stdout: "200\n" });
    }
  });

  it("has pip, and lets root write to the system site-packages", async () => {
    const pip = await backend.exec("py", request(["python3", "-m", "pip", "--version"]));
    expect(pip.exitCode).toBe(0);
    const site = await backend.exec(
      "py",
      request([
        "sh",
        "-c",
        "d=$(python3 -c 'import sysconfig; print(sysconfig.get_paths()[\"purelib\"])'); mkdir -p $d && echo 'X = 1' > $d/shellsprobe.py && python3 -c 'import shellsprobe; print(shellsprobe.X)'",
      ]),
    );
    expect(site).toMatchObject({ exitCode: 0, stdout: "1\n" });
  });

  it("keeps an interactive python3 on pipes: state across lines, errors on stderr, EOF ends it", async () => {
    const out = { stdout: "", stderr: "" };
    const proc = await backend.spawn(
      "py",
      { command: ["python3", "-u", "-i", "-q"], env: {}, cwd: "/workspace" },
      { onOutput: (stream, chunk) => void (out[stream] += decoder.decode(chunk)) },
    );
    await proc.write("x = 41\n");
    await proc.write("x + 1\n");
    await expect.poll(() => out.stdout, { timeout: 10_000 }).toBe("42\n");
    await proc.write("1/0\n");
    await expect.poll(() => out.stderr, { timeout: 10_000 }).toMatch(/ZeroDivisionError/);
    await proc.write("print(x * 2)\n");
    await expect.poll(() => out.stdout, { timeout: 10_000 }).toBe("42\n82\n");
    proc.closeStdin();
    expect((await proc.exit).exitCode).toBe(0);
  });

  it("interrupts a busy python REPL on the pty with Ctrl-C, and the REPL lives on", async () => {
    let out = "";
    const proc = await backend.spawn(
      "py",
      { command: ["python3", "-q"], env: {}, cwd: "/workspace", pty: { cols: 80, rows: 24 } },
      { onOutput: (_stream, chunk) => void (out += decoder.decode(chunk)) },
    );
    await expect.poll(() => out, { timeout: 10_000 }).toMatch(/>>> $/);
    await proc.write("while True: pass\r\r");
    await new Promise((resolve) => setTimeout(resolve, 300));
    await proc.write(Uint8Array.of(0x03));
    await expect.poll(() => out, { timeout: 10_000 }).toMatch(/KeyboardInterrupt/);
    await proc.write("print(6 * 7)\r");
    await expect.poll(() => out, { timeout: 10_000 }).toMatch(/^42\r?$/m);
    await proc.write("exit()\r");
    expect((await proc.exit).exitCode).toBe(0);
  });

  it("reads the shell's own /etc/shadow through a /workspace symlink, never the host's", async () => {
    const [info] = await backend.list();
    const image = await findImage(TEST_IMAGES_DIR, info?.imageVersion ?? "");
    if (!image) throw new Error("the python image of the shell is not in the test cache");
    const imageShadow = await readFile(`${image.rootfs}/etc/shadow`);
    const hostShadow = await readFile("/etc/shadow");
    await backend.exec("py", request(["ln", "-sf", "/etc/shadow", "/workspace/shadow"]));
    const read = Buffer.from(await backend.files.read("py", "/workspace/shadow", 1 << 20));
    expect(read.equals(imageShadow)).toBe(true);
    if (!imageShadow.equals(hostShadow)) expect(read.equals(hostShadow)).toBe(false);
    // Changed inside the shell, the link reads the change: it is the shell's file, not a copy.
    await backend.exec(
      "py",
      request(["sh", "-c", "echo 'shells-probe:*:1:0:99999:7:::' >> /etc/shadow"]),
    );
    const changed = decoder.decode(await backend.files.read("py", "/workspace/shadow", 1 << 20));
    expect(changed).toMatch(/^shells-probe:/m);
    expect(hostShadow.toString("utf8")).not.toMatch(/^shells-probe:/m);
  });
});
