import { execFileSync } from "node:child_process";
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { monitorEventLoopDelay } from "node:perf_hooks";
import { afterAll, describe, expect, it } from "vitest";
import {
  TarFormatError,
  UnsafeTarError,
  readTar,
  sanitizeTar,
  unsafeTarEntry,
  writeTar,
  type TarEntry,
} from "./tar.js";

const encoder = new TextEncoder();

/** One raw 512-byte header, for archives no well-behaved writer would produce. */
function header(
  name: string,
  sizeField: string,
  options: { magic?: string; flag?: string; linkName?: string } = {},
): Uint8Array {
  const block = new Uint8Array(512);
  const put = (offset: number, text: string) => block.set(encoder.encode(text), offset);
  put(0, name);
  put(100, "0000644\0");
  put(124, sizeField);
  put(156, options.flag ?? "0");
  if (options.linkName) put(157, options.linkName);
  put(257, options.magic ?? "ustar\0");
  if (!options.magic) put(263, "00");
  block.fill(32, 148, 156);
  let sum = 0;
  for (const b of block) sum += b;
  put(148, `${sum.toString(8).padStart(6, "0")}\0 `);
  return block;
}

/** A pax record set (`x` per entry, `g` global) as header + padded body. */
function paxHeader(flag: "x" | "g", records: Record<string, string>): Uint8Array {
  let text = "";
  for (const [key, value] of Object.entries(records)) {
    const record = ` ${key}=${value}\n`;
    let length = record.length + 1;
    while (String(length).length + record.length !== length)
      length = String(length).length + record.length;
    text += `${length}${record}`;
  }
  const body = encoder.encode(text);
  const padded = new Uint8Array(Math.ceil(body.length / 512) * 512);
  padded.set(body);
  return concat([
    header("pax", `${body.length.toString(8).padStart(11, "0")}\0`, { flag }),
    padded,
  ]);
}

function concat(parts: Uint8Array[]): Uint8Array {
  return new Uint8Array(Buffer.concat(parts));
}

const EMPTY = "00000000000\0";
const end = new Uint8Array(1024);

type Entry = Omit<TarEntry, "mtimeSeconds">;
const dir = (name: string): Entry => ({
  name,
  type: "directory",
  mode: 0o755,
  linkName: "",
  data: new Uint8Array(0),
});
const file = (name: string, text = "x"): Entry => ({
  name,
  type: "file",
  mode: 0o644,
  linkName: "",
  data: encoder.encode(text),
});
const link = (name: string, target: string, type: "symlink" | "hardlink" = "symlink"): Entry => ({
  name,
  type,
  mode: 0o777,
  linkName: target,
  data: new Uint8Array(0),
});

async function refusal(archive: Uint8Array): Promise<UnsafeTarError> {
  const error: unknown = await sanitizeTar(archive).then(
    () => null,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(UnsafeTarError);
  return error as UnsafeTarError;
}

const scratch = mkdtempSync(join(tmpdir(), "tar-test-"));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

/** Unpacks with the system's GNU tar into `<box>/dest` and lists what appeared in `<box>`. */
function unpackWithGnuTar(archive: Uint8Array, box: string): string[] {
  const dest = join(scratch, box, "dest");
  execFileSync("mkdir", ["-p", dest]);
  const path = join(scratch, `${box}.tar`);
  writeFileSync(path, archive);
  execFileSync("tar", ["-C", dest, "-xf", path, "--no-same-owner"]);
  return readdirSync(join(scratch, box));
}

describe("readTar and writeTar", () => {
  it("round-trip entries, long names and link targets included", async () => {
    const long = `${"d/".repeat(60)}file.txt`;
    const entries = await readTar(
      await writeTar([file(long, "x"), link("l", `${"t/".repeat(80)}x`), dir("sub")]),
    );
    expect(entries.map((e) => [e.name, e.type, new TextDecoder().decode(e.data)])).toEqual([
      [long, "file", "x"],
      ["l", "symlink", ""],
      ["sub", "directory", ""],
    ]);
    expect(entries[1]?.linkName).toBe(`${"t/".repeat(80)}x`);
  });

  it("refuses a negative entry size instead of looping on the same header forever", async () => {
    const archive = concat([header("a", "-000001000\0"), new Uint8Array(1536)]);
    await expect(readTar(archive)).rejects.toBeInstanceOf(TarFormatError);
  });

  it("refuses a corrupt header as malformed tar", async () => {
    const block = header("a", EMPTY);
    block[0] = "b".charCodeAt(0);
    await expect(sanitizeTar(concat([block, end]))).rejects.toBeInstanceOf(TarFormatError);
  });

  it("reads a pax path whose value holds a newline whole, so the check sees what tar sees", async () => {
    const value = "ok\n/../../etc/evil";
    const archive = concat([paxHeader("x", { path: value }), header("plain", EMPTY), end]);
    const [entry] = await readTar(archive);
    expect(entry?.name).toBe(value);
    expect(unsafeTarEntry(entry!)).toMatch(/climbs out/);
    expect((await refusal(archive)).reason).toMatch(/climbs out/);
  });

  it("ignores the ustar prefix field in old GNU headers, as GNU tar does", async () => {
    const block = header("a", EMPTY, { magic: "ustar  \0" });
    block.set(encoder.encode("/etc"), 345);
    block.fill(32, 148, 156);
    let sum = 0;
    for (const b of block) sum += b;
    block.set(encoder.encode(`${sum.toString(8).padStart(6, "0")}\0 `), 148);
    const [entry] = await readTar(concat([block, end]));
    expect(entry?.name).toBe("a");
  });
});

describe("sanitizeTar", () => {
  it("accepts an ordinary tree with links inside it, and GNU tar unpacks the rewrite as sent", async () => {
    const archive = await writeTar([
      dir("./"),
      dir("src"),
      file("src/a.txt", "alpha"),
      dir("src/lib"),
      link("src/lib/up", ".."),
      link("src/lib/a", "../a.txt"),
      link("src/latest", "lib"),
      file("src/latest/b.txt", "beta"),
      link("copy.txt", "src/a.txt", "hardlink"),
    ]);
    const clean = await sanitizeTar(archive);
    expect(clean.entries).toBe(9);
    const names = (await readTar(clean.archive)).map((e) => `${e.type} ${e.name} ${e.linkName}`);
    expect(names).toEqual([
      "directory src ",
      "file src/a.txt ",
      "directory src/lib ",
      "symlink src/lib/up ..",
      "symlink src/lib/a ../a.txt",
      "symlink src/latest lib",
      "file src/latest/b.txt ",
      "hardlink copy.txt src/a.txt",
    ]);
    expect(unpackWithGnuTar(clean.archive, "ordinary")).toEqual(["dest"]);
  });

  it.each([
    ["an absolute path", [file("/etc/passwd")], /absolute path/],
    ["a .. segment", [file("a/../../x")], /climbs out with \.\./],
    ["a link to an absolute path", [link("l", "/etc")], /absolute path/],
    ["a link climbing out", [dir("a"), link("a/l", "../..")], /outside the destination/],
    ["a hard link climbing out", [link("h", "../x", "hardlink")], /climbs out/],
    [
      "a link to a link that climbs out (chain)",
      [dir("d"), link("d/up", ".."), link("esc", "d/up/..")],
      /climbs with \.\. after naming/,
    ],
    [
      "a link inside a directory that is itself a link",
      [link("here", "."), link("here/l", "..")],
      /outside the destination/,
    ],
    [
      "a link inside a linked directory two levels down",
      [dir("a"), dir("a/b"), link("a/b/c", "../.."), link("a/b/c/x", "../y")],
      /outside the destination/,
    ],
    [
      "a hard link to an earlier symlink (the copy would resolve from elsewhere)",
      [dir("sub"), link("sub/l", "../x"), link("h", "sub/l", "hardlink")],
      /points to the link/,
    ],
    [
      "a hard link to a path the archive never made",
      [link("h", "elsewhere", "hardlink")],
      /not a file in the archive/,
    ],
    [
      "a later entry replacing a link",
      [dir("d"), link("d/l", "."), file("d/l")],
      /replaces a link/,
    ],
    [
      "a link replacing a directory others were written into",
      [dir("d"), file("d/f"), link("d", ".")],
      /replaces an entry/,
    ],
  ] as const)("refuses %s", async (_what, entries, reason) => {
    const error = await refusal(await writeTar(entries));
    expect(error.reason).toMatch(reason);
  });

  it("refuses device nodes and fifos", async () => {
    for (const flag of ["3", "4", "6"]) {
      const error = await refusal(concat([header("dev", EMPTY, { flag }), end]));
      expect(error.reason).toMatch(/device, fifo/);
    }
  });

  it("stops at the first bad entry", async () => {
    const error = await refusal(
      await writeTar([file("ok"), link("bad", "/etc"), link("worse", "/root")]),
    );
    expect(error.entry).toBe("bad");
  });

  it("never passes a pax global header on: a global path cannot rename later entries", async () => {
    const archive = concat([
      paxHeader("g", { path: "../../../tmp/escaped", linkpath: "/etc" }),
      header("ok", EMPTY),
      end,
    ]);
    // GNU tar itself would apply the global path to the next entry.
    const clean = await sanitizeTar(archive);
    const flags = [];
    for (let at = 0; at + 512 <= clean.archive.length; at += 512)
      flags.push(String.fromCharCode(clean.archive[at + 156] ?? 0));
    expect(flags).not.toContain("g");
    expect((await readTar(clean.archive)).map((e) => e.name)).toEqual(["ok"]);
    expect(unpackWithGnuTar(clean.archive, "global")).toEqual(["dest"]);
  });

  it("sees a global linkpath where a later entry's own pax header takes it in", async () => {
    const archive = concat([
      paxHeader("g", { linkpath: "/etc" }),
      paxHeader("x", { mtime: "1" }),
      header("l", EMPTY, { flag: "2", linkName: "fine" }),
      end,
    ]);
    expect((await refusal(archive)).reason).toMatch(/absolute path \/etc/);
  });

  it("checks a large archive without holding the event loop", async () => {
    // 200,000 empty entries then a bad one: a synchronous check runs for seconds in one go.
    const one = header("f", EMPTY);
    const many = new Uint8Array(512 * 200_000);
    for (let i = 0; i < 200_000; i += 1) many.set(one, i * 512);
    const archive = concat([many, header("bad", EMPTY, { flag: "2", linkName: "/etc" }), end]);
    const delay = monitorEventLoopDelay({ resolution: 10 });
    delay.enable();
    const error = await refusal(archive);
    delay.disable();
    expect(error.entry).toBe("bad");
    expect(delay.max / 1e6).toBeLessThan(500);
  }, 120_000);
});
