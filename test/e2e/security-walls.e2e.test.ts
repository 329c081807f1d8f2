/**
 * The sandbox walls as an attacker meets them: a real server process, started the way a careless
 * supervisor starts it (with descriptors of the host left open and not close-on-exec), real
 * container shells, and every door of the API tried in turn.
 *
 * - No door (exec, terminal, interpreter, run, file operations) reaches the host through a
 *   descriptor the control plane inherited: the host's root and a marker directory never show up,
 *   and nothing is written on the host.
 * - Nothing readable inside a shell names the host's layout (data dir, image cache, checkout).
 * - A process-count kill ends the exec that filled the limit, not an innocent one beside it, and a
 *   detached fork bomb does not leave the shell unusable.
 */
import { TERM_PROTOCOL, TERM_TOKEN_PROTOCOL_PREFIX } from "@shells/contract";
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import {
  chmodSync,
  closeSync,
  existsSync,
  mkdtempSync,
  openSync,
  readdirSync,
  readlinkSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import WebSocket from "ws";
import { hostReport } from "../../packages/backend-container/src/internal/test-support.js";

const IMAGES = process.env.SHELLS_TEST_IMAGE_CACHE ?? "/var/cache/shells-test/images";
const SERVER_ENTRY = "apps/server/dist/server.js";
const REPO_ROOT = resolve(fileURLToPath(new URL("../..", import.meta.url)));

/** Why this file does not run here, or null when it does. */
const skipReason =
  process.env["SHELLS_TEST_BACKEND"] !== "container"
    ? "needs real container shells: set SHELLS_TEST_BACKEND=container (as root)"
    : !hostReport.available
      ? `container backend unavailable: ${hostReport.reason}`
      : null;
if (skipReason) console.warn(`security-walls e2e skipped: ${skipReason}`);

/**
 * The descriptor numbers the server's parent leaves open: the host's `/`, a directory, a file. Node
 * itself marks descriptors 0-15 (and any unbroken run above them) close-on-exec at start-up, so a
 * stray there would prove nothing; a supervisor's descriptor above a gap is what reaches children.
 */
const STRAY = { root: 100, dir: 101, file: 102 } as const;

/**
 * Tries every descriptor 3..255 that is open as a way out: list it, read the host's files through
 * it, climb out of it, create a file through it, append to it. Ends with a line the test waits for.
 */
const FD_ATTACK = [
  "ls -la /proc/self/fd",
  "for n in $(seq 3 255); do",
  "  [ -e /proc/self/fd/$n ] || continue",
  "  ls -a /proc/self/fd/$n/ 2>/dev/null && echo LISTED-$n",
  "  ls -a /proc/self/fd/$n/.. 2>/dev/null",
  "  cat /proc/self/fd/$n/* 2>/dev/null",
  "  touch /proc/self/fd/$n/pwned-$n 2>/dev/null && echo WROTE-$n",
  "  [ -e /proc/self/fd/$n ] && { echo pwned-$n >> /proc/self/fd/$n; } 2>/dev/null",
  "done",
  "echo attack-over",
].join("\n");

/** The same attack from Python: each descriptor listed, climbed out of, written through. */
const PY_FD_ATTACK = `
import os, json
found = {"fds": sorted(os.listdir('/proc/self/fd')), "listed": {}, "targets": {}}
for n in range(3, 1024):
    p = f'/proc/self/fd/{n}'
    try:
        found["targets"][n] = os.readlink(p)
    except OSError:
        continue
    for sub in (p, p + '/..'):
        try:
            found["listed"][sub] = os.listdir(sub)
        except OSError:
            pass
    try:
        open(p + f'/pwned-{n}', 'w').close()
        found["listed"][p + '/pwned'] = 'WROTE'
    except OSError:
        pass
json.dumps(found)
`;

interface Api {
  url: string;
  token: string;
}

async function call<T = Record<string, unknown>>(
  api: Api,
  method: string,
  path: string,
  body?: unknown,
): Promise<{ status: number; body: T; text: string }> {
  const res = await fetch(`${api.url}${path}`, {
    method,
    headers: {
      authorization: `Bearer ${api.token}`,
      ...(body === undefined ? {} : { "content-type": "application/json" }),
    },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  const text = await res.text();
  let parsed: unknown = text;
  try {
    parsed = JSON.parse(text);
  } catch {
    // a raw body (file content)
  }
  return { status: res.status, body: parsed as T, text };
}

interface ExecResult {
  exitCode: number;
  stdout: string;
  stderr: string;
  killReason?: string;
}

const exec = (api: Api, shellId: string, command: string[], timeoutMs = 60_000) =>
  call<ExecResult>(api, "POST", `/api/v1/shells/${shellId}/exec`, { command, timeoutMs });

async function freePort(): Promise<number> {
  return new Promise((done) => {
    const probe = createServer();
    probe.listen(0, "127.0.0.1", () => {
      const address = probe.address();
      probe.close(() => done(typeof address === "object" && address ? address.port : 0));
    });
  });
}

/** Child stdio that puts `strays` on descriptors STRAY.root, .dir and .file, nothing else open. */
function strayStdio(strays: { root: number; dir: number; file: number }) {
  const stdio: ("ignore" | "pipe" | number)[] = ["ignore", "pipe", "pipe"];
  while (stdio.length < STRAY.root) stdio.push("ignore");
  stdio[STRAY.root] = strays.root;
  stdio[STRAY.dir] = strays.dir;
  stdio[STRAY.file] = strays.file;
  return stdio;
}

/**
 * Starts the built server as its own process with `strays` open on the STRAY descriptors. Node
 * opens files close-on-exec, but descriptors handed over in `stdio` are duplicated into the child
 * without that flag: exactly what a supervisor that forgets its descriptors does.
 */
function startServerWithStrays(
  dataDir: string,
  port: number,
  strays: { root: number; dir: number; file: number },
): ChildProcess {
  return spawn(
    process.execPath,
    [
      SERVER_ENTRY,
      "--backend",
      "container",
      "--host",
      "127.0.0.1",
      "--data-dir",
      dataDir,
      "--port",
      String(port),
      "--log-level",
      "warn",
    ],
    {
      cwd: REPO_ROOT,
      env: { ...process.env, SHELLS_IMAGES_DIR: IMAGES },
      stdio: strayStdio(strays),
    },
  );
}

async function waitReady(url: string, child: ChildProcess, log: () => string): Promise<void> {
  for (let i = 0; i < 300; i += 1) {
    if (child.exitCode !== null) throw new Error(`server exited: ${log()}`);
    try {
      if ((await fetch(`${url}/readyz`)).ok) return;
    } catch {
      // not listening yet
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`server did not become ready: ${log()}`);
}

/** A terminal attached over the PTY WebSocket, its output so far, and its end. */
function attachTerminal(
  url: string,
  token: string,
): Promise<{ socket: WebSocket; output: () => string; closed: Promise<number> }> {
  return new Promise((done, fail) => {
    const socket = new WebSocket(url, [TERM_PROTOCOL, `${TERM_TOKEN_PROTOCOL_PREFIX}${token}`]);
    let output = "";
    const closed = new Promise<number>((ended) => socket.on("close", (code) => ended(code)));
    socket.on("message", (data) => {
      output += Buffer.from(data as Buffer).toString("utf8");
    });
    socket.on("open", () => done({ socket, output: () => output, closed }));
    socket.on("error", fail);
  });
}

describe.skipIf(skipReason !== null)("the sandbox walls, attacked through the real API", () => {
  let child: ChildProcess;
  let serverLog = "";
  let api: Api;
  let dataDir: string;
  let markerDir: string;
  let markerName: string;
  let markerContent: string;
  let probeFile: string;
  /** Names in the host's `/` that the shell's root does not have: seeing one means the host leaked. */
  let hostOnlyRootNames: string[] = [];
  let shellId: string;
  const shellIds: string[] = [];

  /** Fails when `output` shows anything of the host a stray descriptor could have revealed. */
  const expectNoHost = (door: string, output: string) => {
    expect(output, `${door}: the marker directory's listing`).not.toContain(markerName);
    expect(output, `${door}: the marker file's content`).not.toContain(markerContent);
    for (const name of hostOnlyRootNames)
      expect(output, `${door}: the host's root (${name})`).not.toContain(name);
  };

  beforeAll(async () => {
    expect(existsSync(join(REPO_ROOT, SERVER_ENTRY)), "build first: npx tsc -b").toBe(true);
    dataDir = mkdtempSync(join(tmpdir(), "shells-walls-data-"));
    markerDir = mkdtempSync(join(tmpdir(), "shells-walls-host-"));
    markerName = `host-marker-${process.pid}-${Date.now()}`;
    markerContent = `host secret ${Math.random().toString(36).slice(2)}`;
    writeFileSync(join(markerDir, markerName), markerContent);
    probeFile = join(markerDir, "probe");
    writeFileSync(probeFile, "");
    // Bait anyone may write: a leaked descriptor would let the shell's unprivileged uid create files.
    chmodSync(markerDir, 0o777);
    chmodSync(probeFile, 0o666);

    const strays = {
      root: openSync("/", "r"),
      dir: openSync(markerDir, "r"),
      file: openSync(probeFile, "r+"),
    };
    // The technique must really leave the descriptors open in a child, or the test proves nothing.
    const witness = spawnSync("sh", ["-c", `ls /proc/self/fd/${STRAY.dir}/`], {
      stdio: strayStdio(strays),
      encoding: "utf8",
    });
    expect(witness.stdout, "a child started this way holds the marker directory").toContain(
      markerName,
    );

    const port = await freePort();
    child = startServerWithStrays(dataDir, port, strays);
    for (const fd of Object.values(strays)) closeSync(fd);
    child.stdout?.on("data", (d: Buffer) => (serverLog += d.toString()));
    child.stderr?.on("data", (d: Buffer) => (serverLog += d.toString()));
    const url = `http://127.0.0.1:${port}`;
    await waitReady(url, child, () => serverLog);
    api = { url, token: readFileSync(join(dataDir, "admin-token"), "utf8").trim() };

    const created = await call<{ id: string; status: string; backend: string }>(
      api,
      "POST",
      "/api/v1/shells",
      { language: "python" },
    );
    expect(created.body, created.text).toMatchObject({ status: "running", backend: "container" });
    shellId = created.body.id;
    shellIds.push(shellId);

    const shellRoot = await exec(api, shellId, ["ls", "-A", "/"]);
    expect(shellRoot.body.exitCode).toBe(0);
    const inShell = new Set(shellRoot.body.stdout.split("\n"));
    hostOnlyRootNames = readdirSync("/").filter((n) => n.length >= 6 && !inShell.has(n));
    expect(hostOnlyRootNames.length, "the host's root has names the shell's lacks").toBeGreaterThan(
      0,
    );
  }, 300_000);

  afterAll(async () => {
    if (api) for (const id of shellIds) await call(api, "DELETE", `/api/v1/shells/${id}`);
    if (child && child.exitCode === null) {
      const exited = new Promise((r) => child.once("exit", r));
      child.kill("SIGTERM");
      await Promise.race([exited, new Promise((r) => setTimeout(r, 10_000))]);
      if (child.exitCode === null) child.kill("SIGKILL");
    }
    if (dataDir) rmSync(dataDir, { recursive: true, force: true });
    if (markerDir) rmSync(markerDir, { recursive: true, force: true });
  }, 120_000);

  /** Nothing was created on the host and the stray file was not written through. */
  const expectHostUntouched = () => {
    expect(readdirSync("/").filter((n) => n.startsWith("pwned-"))).toEqual([]);
    expect(readdirSync(markerDir).sort()).toEqual([markerName, "probe"].sort());
    expect(readFileSync(probeFile, "utf8")).toBe("");
    expect(readFileSync(join(markerDir, markerName), "utf8")).toBe(markerContent);
  };

  it("the server keeps none of the descriptors it inherited", () => {
    const held = readdirSync(`/proc/${child.pid}/fd`).map((fd) => {
      try {
        return readlinkSync(`/proc/${child.pid}/fd/${fd}`);
      } catch {
        return "";
      }
    });
    expect(held).not.toContain("/");
    expect(held.filter((target) => target.startsWith(markerDir))).toEqual([]);
  });

  it("exec: no inherited descriptor lists, reads or writes the host", async () => {
    const res = await exec(api, shellId, ["sh", "-c", FD_ATTACK]);
    expect(res.status).toBe(200);
    const output = res.body.stdout + res.body.stderr;
    expect(res.body.stdout).toContain("attack-over");
    expect(output).not.toMatch(/LISTED-|WROTE-/);
    expectNoHost("exec", output);
    expectHostUntouched();
  }, 60_000);

  it("streamed exec: the same attack, answered as server-sent events", async () => {
    const res = await fetch(`${api.url}/api/v1/shells/${shellId}/exec`, {
      method: "POST",
      headers: {
        authorization: `Bearer ${api.token}`,
        "content-type": "application/json",
        accept: "text/event-stream",
      },
      body: JSON.stringify({ command: ["sh", "-c", FD_ATTACK] }),
    });
    const output = await res.text();
    expect(output).toContain("attack-over");
    expect(output).not.toMatch(/LISTED-|WROTE-/);
    expectNoHost("streamed exec", output);
    expectHostUntouched();
  }, 60_000);

  it("terminal: the same attack typed into a PTY", async () => {
    const credential = await call<{ url: string; token: string }>(
      api,
      "POST",
      `/api/v1/shells/${shellId}/term`,
    );
    expect(credential.status, credential.text).toBe(201);
    const term = await attachTerminal(credential.body.url, credential.body.token);
    // Typed as one line so the echo of the input never contains the end marker unbroken.
    const line = `${FD_ATTACK.replace("echo attack-over", "echo attack-$((40+2))-over")
      .split("\n")
      .map((l) => l.trim())
      .join("; ")
      .replace("do;", "do")}\r`;
    term.socket.send(Buffer.from(line), { binary: true });
    await expect.poll(() => term.output(), { timeout: 30_000 }).toContain("attack-42-over");
    term.socket.send(Buffer.from("exit\r"), { binary: true });
    term.socket.close();
    await term.closed;
    expect(term.output()).not.toMatch(/LISTED-\d|WROTE-\d/);
    expectNoHost("terminal", term.output());
    expectHostUntouched();
  }, 60_000);

  it("interpreter: Python sees only its own descriptors and lists nothing of the host", async () => {
    const res = await call<{ value: unknown; error: unknown }>(
      api,
      "POST",
      `/api/v1/shells/${shellId}/interpreter`,
      { code: PY_FD_ATTACK, language: "python" },
    );
    expect(res.status, res.text).toBe(200);
    expect(res.body.error, res.text).toBeNull();
    const found = JSON.parse(String(res.body.value)) as {
      fds: string[];
      listed: Record<string, unknown>;
      targets: Record<string, string>;
    };
    expect(found.fds, "the listing ran").toContain("0");
    expect(found.listed, JSON.stringify(found.targets)).toEqual({});
    expectNoHost("interpreter", res.text);
    expectHostUntouched();
  }, 60_000);

  it("run: a one-shot run tries the same and reports what it reached", async () => {
    const code = [
      "import subprocess",
      PY_FD_ATTACK.trim().replace(/\njson\.dumps\(found\)$/, ""),
      `found["sh"] = subprocess.run(["sh", "-c", ${JSON.stringify(FD_ATTACK)}], capture_output=True, text=True).stdout`,
      "shells.result(found)",
    ].join("\n");
    const run = await call<{ id: string }>(api, "POST", "/api/v1/runs", {
      language: "python",
      code,
    });
    expect(run.status, run.text).toBe(201);
    let final: { status: string; result: unknown } | undefined;
    for (let i = 0; i < 300 && (!final || final.status === "running"); i += 1) {
      await new Promise((r) => setTimeout(r, 200));
      final = (
        await call<{ status: string; result: unknown }>(
          api,
          "GET",
          `/api/v1/runs/${run.body.id}/result`,
        )
      ).body;
    }
    expect(final?.status, JSON.stringify(final)).toBe("succeeded");
    const result = final?.result as { listed: Record<string, unknown>; sh: string };
    expect(result.sh).toContain("attack-over");
    expect(result.sh).not.toMatch(/LISTED-|WROTE-/);
    expect(result.listed).toEqual({});
    expectNoHost("run", JSON.stringify(final));
    expectHostUntouched();
  }, 90_000);

  it("files: paths through /proc/self/fd are refused or stay inside the shell", async () => {
    const q = encodeURIComponent;
    const attempts: string[] = [];
    for (const n of [STRAY.root, STRAY.dir, STRAY.file, 3, 4, 5, 6]) {
      const base = `/proc/self/fd/${n}`;
      const put = await fetch(
        `${api.url}/api/v1/shells/${shellId}/files/content?path=${q(`${base}/pwned-files-${n}`)}`,
        {
          method: "PUT",
          headers: {
            authorization: `Bearer ${api.token}`,
            "content-type": "application/octet-stream",
          },
          body: Buffer.from("pwned"),
        },
      );
      attempts.push(`PUT ${base}/pwned: ${put.status} ${await put.text()}`);
      expect(put.status, `PUT through ${base}`).toBeLessThan(500);
      for (const path of [base, `${base}/${markerName}`, `${base}/etc/hostname`]) {
        const listed = await call(api, "GET", `/api/v1/shells/${shellId}/files?path=${q(path)}`);
        const read = await call(
          api,
          "GET",
          `/api/v1/shells/${shellId}/files/content?path=${q(path)}`,
        );
        const stat = await call(api, "GET", `/api/v1/shells/${shellId}/files/stat?path=${q(path)}`);
        for (const [what, res] of [
          ["list", listed],
          ["read", read],
          ["stat", stat],
        ] as const) {
          expect(res.status, `${what} ${path}`).toBeLessThan(500);
          attempts.push(`${what} ${path}: ${res.status} ${res.text}`);
        }
      }
      const archive = await call(
        api,
        "GET",
        `/api/v1/shells/${shellId}/files/archive?path=${q(base)}`,
      );
      expect(archive.status, `archive ${base}`).toBeLessThan(500);
      attempts.push(`archive ${base}: ${archive.status} ${archive.text}`);
    }
    // Error answers repeat the requested path (which names the marker); the path is not a leak.
    expectNoHost("files", attempts.join("\n").replaceAll(`/${markerName}`, "/<marker>"));
    expectHostUntouched();
  }, 120_000);

  it("nothing readable inside a shell names the host's data dir, image cache or checkout", async () => {
    const res = await exec(api, shellId, [
      "sh",
      "-c",
      [
        "for f in /proc/[0-9]*/cmdline /proc/[0-9]*/environ; do echo \"== $f\"; tr '\\0' ' ' < $f; echo; done",
        "echo '== mountinfo'; cat /proc/self/mountinfo",
        "echo '== mounts'; cat /proc/mounts",
        "echo '== pid 1'; tr '\\0' ' ' < /proc/1/cmdline; echo",
      ].join("\n"),
    ]);
    expect(res.body.exitCode, res.body.stderr).toBe(0);
    const seen = res.body.stdout + res.body.stderr;
    expect(seen, "pid 1's command line was read").toMatch(/== pid 1\n\S+/);
    expect(seen, "mountinfo was read").toMatch(/== mountinfo\n\d+ \d+ /);
    for (const hostPath of [dataDir, IMAGES, REPO_ROOT, markerDir])
      expect(seen, `the shell shows ${hostPath}`).not.toContain(hostPath);
  }, 60_000);

  describe("the process-count limit", () => {
    let bombShell: string;
    beforeAll(async () => {
      const created = await call<{ id: string; resources: { pids: number } }>(
        api,
        "POST",
        "/api/v1/shells",
        { language: "bash", resources: { pids: 64 } },
      );
      expect(created.status, created.text).toBe(201);
      expect(created.body.resources.pids).toBe(64);
      bombShell = created.body.id;
      shellIds.push(bombShell);
    }, 120_000);

    it("kills the exec that filled it and not an innocent exec running beside it", async () => {
      const innocent = exec(api, bombShell, ["sh", "-c", "sleep 4; echo alive"]);
      await new Promise((r) => setTimeout(r, 500)); // the innocent exec has forked its sleep
      const bomb = await exec(api, bombShell, ["sh", "-c", "f(){ f|f& }; f; sleep 5"]);
      expect(bomb.status).toBe(200);
      expect(bomb.body.killReason, bomb.text.slice(0, 300)).toBe("pids");
      const survivor = await innocent;
      expect(survivor.body).toMatchObject({ exitCode: 0, stdout: "alive\n" });
      expect(survivor.body.killReason).toBeUndefined();
    }, 90_000);

    it("ends a detached fork bomb: the shell takes execs again within seconds", async () => {
      const bomb = await exec(api, bombShell, ["sh", "-c", "(f(){ f|f& }; f) >/dev/null 2>&1 &"]);
      expect(bomb.status).toBe(200);
      const deadline = Date.now() + 10_000;
      let echo = await exec(api, bombShell, ["echo", "ok"], 5_000);
      while (echo.body.exitCode !== 0 && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 250));
        echo = await exec(api, bombShell, ["echo", "ok"], 5_000);
      }
      expect(echo.body, echo.text.slice(0, 300)).toMatchObject({ exitCode: 0, stdout: "ok\n" });
    }, 60_000);
  });
});
