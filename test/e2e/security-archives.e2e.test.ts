import { writeTar, type TarEntry } from "@shells/sandbox";
import { readFileSync } from "node:fs";
import { monitorEventLoopDelay } from "node:perf_hooks";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startTestServer, type TestServer } from "./harness.js";

/** Where the archive lands is only observable inside a real sandbox; refusals hold on both. */
const backend = process.env["SHELLS_TEST_BACKEND"] === "container" ? "container" : "simulator";
const onContainer = backend === "container";

let server: TestServer;
let shellId = "";
beforeAll(async () => {
  server = await startTestServer({ backend });
  const res = await api("/api/v1/shells", {
    method: "POST",
    body: JSON.stringify({ language: "bash" }),
  });
  shellId = ((await res.json()) as { id: string }).id;
});
afterAll(async () => {
  await server?.close();
});

function api(path: string, init: RequestInit = {}) {
  const headers: Record<string, string> = { authorization: `Bearer ${server.token}` };
  if (typeof init.body === "string") headers["content-type"] = "application/json";
  return fetch(`${server.url}${path}`, {
    ...init,
    headers: { ...headers, ...(init.headers as Record<string, string>) },
  });
}
const q = (path: string) => encodeURIComponent(path);

function upload(path: string, archive: Uint8Array) {
  return api(`/api/v1/shells/${shellId}/files/archive?path=${q(path)}`, {
    method: "PUT",
    headers: { "content-type": "application/x-tar" },
    body: archive,
  });
}

async function sh(script: string): Promise<{ exitCode: number; stdout: string }> {
  const res = await api(`/api/v1/shells/${shellId}/exec`, {
    method: "POST",
    body: JSON.stringify({ command: ["sh", "-c", script] }),
  });
  return (await res.json()) as { exitCode: number; stdout: string };
}

type Entry = Omit<TarEntry, "mtimeSeconds">;
const none = new Uint8Array(0);
const dir = (name: string): Entry => ({
  name,
  type: "directory",
  mode: 0o755,
  linkName: "",
  data: none,
});
const file = (name: string, text: string): Entry => ({
  name,
  type: "file",
  mode: 0o644,
  linkName: "",
  data: new TextEncoder().encode(text),
});
const link = (name: string, target: string, type: "symlink" | "hardlink" = "symlink"): Entry => ({
  name,
  type,
  mode: 0o777,
  linkName: target,
  data: none,
});

/** One raw header block, for what no well-behaved writer produces (pax global headers). */
function rawHeader(name: string, size: number, flag: string, linkName = ""): Uint8Array {
  const block = new Uint8Array(512);
  const put = (offset: number, text: string) => block.set(new TextEncoder().encode(text), offset);
  put(0, name);
  put(100, "0000644\0");
  put(124, `${size.toString(8).padStart(11, "0")}\0`);
  put(156, flag);
  put(157, linkName);
  put(257, "ustar\0");
  put(263, "00");
  block.fill(32, 148, 156);
  let sum = 0;
  for (const b of block) sum += b;
  put(148, `${sum.toString(8).padStart(6, "0")}\0 `);
  return block;
}

function paxRecords(flag: "g" | "x", records: Record<string, string>): Uint8Array {
  let text = "";
  for (const [key, value] of Object.entries(records)) {
    const record = ` ${key}=${value}\n`;
    let length = record.length + 1;
    while (String(length).length + record.length !== length)
      length = String(length).length + record.length;
    text += `${length}${record}`;
  }
  const body = new TextEncoder().encode(text);
  const padded = new Uint8Array(Math.ceil(body.length / 512) * 512);
  padded.set(body);
  return Buffer.concat([rawHeader("pax", body.length, flag), padded]);
}

describe("uploaded archives cannot reach outside their directory", () => {
  // Each of these passes a check that looks at one entry at a time: its path and target stay
  // inside as written, and only escape through the links the archive made before it.
  it.each([
    ["a symlink to a symlink", [dir("d"), link("d/up", ".."), link("esc", "d/up/..")]],
    [
      "a symlink inside a directory that is itself a symlink",
      [link("here", "."), link("here/out", "..")],
    ],
    [
      "a hard link to an earlier symlink",
      [dir("a"), dir("a/b"), link("a/b/l", "../.."), link("l", "a/b/l", "hardlink")],
    ],
    [
      "a symlink written through a deeper link",
      [dir("a"), dir("a/b"), link("a/b/c", "../.."), link("a/b/c/x", "..")],
    ],
  ] as const)("refuses %s with unsafe_archive and writes nothing", async (_what, entries) => {
    const res = await upload("/workspace/up/dest", await writeTar(entries));
    expect(res.status).toBe(400);
    expect(((await res.json()) as { error: { code: string } }).error.code).toBe("unsafe_archive");
    const stat = await api(`/api/v1/shells/${shellId}/files/stat?path=${q("/workspace/up")}`);
    expect(stat.status).toBe(404);
  });

  it("never lets a pax global header rename later entries", async () => {
    // GNU tar applies a global `path` to the entries after it: sent as is, `ok` would land at
    // /workspace/escaped.
    const archive = Buffer.concat([
      paxRecords("g", { path: "../../escaped" }),
      rawHeader("ok", 3, "0"),
      Buffer.concat([Buffer.from("hi\n"), Buffer.alloc(509)]),
      Buffer.alloc(1024),
    ]);
    const res = await upload("/workspace/g/dest", archive);
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ path: "/workspace/g/dest", entries: 1 });
    if (!onContainer) return;
    const seen = await sh("cat /workspace/g/dest/ok; ls -a /workspace /workspace/g");
    expect(seen.stdout).toContain("hi\n");
    expect(seen.stdout).not.toContain("escaped");
  });

  it("still unpacks links that stay inside, and downloads what was unpacked", async () => {
    const archive = await writeTar([
      dir("src"),
      file("src/a.txt", "alpha\n"),
      dir("src/lib"),
      link("src/lib/a", "../a.txt"),
      link("src/latest", "lib"),
      link("copy.txt", "src/a.txt", "hardlink"),
    ]);
    const res = await upload("/workspace/ok", archive);
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ path: "/workspace/ok", entries: 6 });
    const down = await api(`/api/v1/shells/${shellId}/files/archive?path=${q("/workspace/ok")}`);
    expect(down.status).toBe(200);
    expect(Buffer.from(await down.arrayBuffer()).includes(Buffer.from("src/a.txt"))).toBe(true);
    if (!onContainer) return;
    const seen = await sh("cat /workspace/ok/src/latest/a /workspace/ok/copy.txt");
    expect(seen).toMatchObject({ exitCode: 0, stdout: "alpha\nalpha\n" });
  });

  it("keeps the server responsive while it refuses a 160 MB archive whose last entry is bad", async () => {
    // 250,000 empty entries, a 32 MiB file of zeros, then a link to /etc: checked in one
    // synchronous pass, this holds the event loop for seconds.
    const entry = rawHeader("f", 0, "0");
    const count = 250_000;
    const zeros = 32 * 1024 * 1024;
    const archive = Buffer.alloc(512 * count + 512 + zeros + 512 + 1024);
    for (let i = 0; i < count; i += 1) archive.set(entry, i * 512);
    archive.set(rawHeader("zeros", zeros, "0"), 512 * count);
    archive.set(rawHeader("bad", 0, "2", "/etc"), 512 * count + 512 + zeros);

    const delay = monitorEventLoopDelay({ resolution: 10 });
    let health = 0;
    let slowest = 0;
    let refused = false;
    const probe = (async () => {
      while (!refused) {
        const started = performance.now();
        const res = await fetch(`${server.url}/healthz`);
        await res.arrayBuffer();
        slowest = Math.max(slowest, performance.now() - started);
        health += 1;
        await new Promise((r) => setTimeout(r, 20));
      }
    })();
    // The CPU the event loop's thread spent between two turns of the loop: what a synchronous
    // check would spend in one go. Unlike wall-clock delay it does not grow when a loaded machine
    // schedules the process less often, and unlike the process's CPU it leaves out the garbage
    // collector's and the thread pool's threads, which run beside the loop.
    let lastCpu = mainThreadCpuMs();
    let longestTurnCpuMs = 0;
    const ticker = setInterval(() => {
      const now = mainThreadCpuMs();
      longestTurnCpuMs = Math.max(longestTurnCpuMs, now - lastCpu);
      lastCpu = now;
    }, 10);
    delay.enable();
    const res = await upload("/workspace/big", archive);
    refused = true;
    delay.disable();
    clearInterval(ticker);
    await probe;
    console.info(
      `archive check: longest turn ${longestTurnCpuMs.toFixed(0)} ms CPU, loop delay max ${(delay.max / 1e6).toFixed(0)} ms, slowest /healthz ${slowest.toFixed(0)} ms, ${health} health checks`,
    );
    expect(res.status).toBe(400);
    const body = (await res.json()) as { error: { code: string; details?: { entry?: string } } };
    expect(body.error.code).toBe("unsafe_archive");
    expect(body.error.details?.entry).toBe("bad");
    expect(health).toBeGreaterThan(2);
    // A synchronous check of this archive spends seconds of CPU in one turn; a streaming one a
    // slice at a time. (Wall-clock delay is logged, not asserted: load inflates it.)
    expect(longestTurnCpuMs).toBeLessThan(600);
  }, 120_000);
});

/** CPU time of this process's main thread (the event loop's), ms: /proc's utime + stime, in ticks of 10 ms. */
function mainThreadCpuMs(): number {
  const stat = readFileSync(`/proc/self/task/${process.pid}/stat`, "utf8");
  // Fields resume after the command name's last ')': utime and stime are the 12th and 13th there.
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) * 10;
}
