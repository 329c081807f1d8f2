import { readTar, writeTar, type TarEntry } from "@shells/sandbox";
import {
  lstat,
  mkdir,
  mkdtemp,
  readFile,
  readlink,
  rm,
  symlink,
  writeFile,
} from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { packDirectory, unpackArchive } from "./local-archive.js";

let root: string;
beforeEach(async () => {
  root = await mkdtemp(join(tmpdir(), "shells-cli-archive-"));
});
afterEach(async () => {
  await rm(root, { recursive: true, force: true });
});

type Entry = Omit<TarEntry, "mtimeSeconds">;
const file = (name: string, text: string, mode = 0o644): Entry => ({
  name,
  type: "file",
  mode,
  linkName: "",
  data: Buffer.from(text),
});
const link = (name: string, linkName: string, type: "symlink" | "hardlink" = "symlink"): Entry => ({
  name,
  type,
  mode: 0o777,
  linkName,
  data: new Uint8Array(),
});

async function exists(path: string): Promise<boolean> {
  return lstat(path).then(
    () => true,
    () => false,
  );
}

describe("packing a local directory", () => {
  it("packs files, directories and links relative to the directory, binary-safe", async () => {
    const src = join(root, "src");
    await mkdir(join(src, "sub"), { recursive: true });
    await writeFile(join(src, "sub", "blob.bin"), Buffer.from([0, 1, 2, 255]));
    await writeFile(join(src, "run.sh"), "echo hi\n", { mode: 0o755 });
    await symlink("sub/blob.bin", join(src, "alias"));
    const { archive, entries, skipped } = await packDirectory(src);
    expect(entries).toBe(4);
    expect(skipped).toEqual([]);
    const unpacked = await readTar(archive);
    expect(unpacked.map((e) => `${e.type} ${e.name.replace(/\/$/, "")}`).sort()).toEqual([
      "directory sub",
      "file run.sh",
      "file sub/blob.bin",
      "symlink alias",
    ]);
    expect(unpacked.find((e) => e.name === "run.sh")!.mode & 0o777).toBe(0o755);
    expect([...unpacked.find((e) => e.name === "sub/blob.bin")!.data]).toEqual([0, 1, 2, 255]);
  });
});

describe("unpacking an archive from a sandbox", () => {
  it("round-trips what packing produced", async () => {
    const src = join(root, "src");
    await mkdir(join(src, "a", "b"), { recursive: true });
    await writeFile(join(src, "a", "b", "c.txt"), "deep\n");
    await symlink("a/b/c.txt", join(src, "shortcut"));
    const dest = join(root, "dest");
    expect(await unpackArchive((await packDirectory(src)).archive, dest)).toBe(4);
    expect(await readFile(join(dest, "a", "b", "c.txt"), "utf8")).toBe("deep\n");
    expect(await readlink(join(dest, "shortcut"))).toBe("a/b/c.txt");
  });

  it.each([
    ["a .. entry", [file("../escape.txt", "x")]],
    ["an absolute entry", [file("/tmp/evil.txt", "x")]],
    ["an absolute link", [link("passwd", "/etc/passwd")]],
    ["a link out of the archive", [link("sub/up", "../../outside")]],
  ])("refuses %s and writes nothing at all", async (_, evil) => {
    const dest = join(root, "dest");
    const archive = await writeTar([file("first.txt", "written first?"), ...evil]);
    await expect(unpackArchive(archive, dest)).rejects.toMatchObject({ code: "unsafe_archive" });
    expect(await exists(join(dest, "first.txt"))).toBe(false);
    expect(await exists(join(root, "escape.txt"))).toBe(false);
  });

  it("never writes through a link the archive planted, even one the lexical check allows", async () => {
    // `a/l` points at the archive root and `a/l/l2` at its parent: each passes on its own, but
    // together they would lead out of the destination.
    const dest = join(root, "dest");
    const archive = await writeTar([
      link("a/l", ".."),
      link("a/l/l2", ".."),
      file("a/l/l2/escaped.txt", "x"),
    ]);
    await expect(unpackArchive(archive, dest)).rejects.toMatchObject({ code: "unsafe_archive" });
    expect(await exists(join(root, "escaped.txt"))).toBe(false);
  });

  it("never writes through a link already on disk in the destination", async () => {
    const dest = join(root, "dest");
    const outside = join(root, "outside");
    await mkdir(outside);
    await mkdir(dest);
    await symlink(outside, join(dest, "sub"));
    await expect(
      unpackArchive(await writeTar([file("sub/x.txt", "x")]), dest),
    ).rejects.toMatchObject({
      code: "unsafe_archive",
    });
    expect(await exists(join(outside, "x.txt"))).toBe(false);
  });

  it("replaces a link at an entry's own path instead of writing through it", async () => {
    const dest = join(root, "dest");
    const victim = join(root, "victim.txt");
    await writeFile(victim, "untouched\n");
    await mkdir(dest);
    await symlink(victim, join(dest, "target.txt"));
    await unpackArchive(await writeTar([file("target.txt", "new\n")]), dest);
    expect(await readFile(victim, "utf8")).toBe("untouched\n");
    expect(await readFile(join(dest, "target.txt"), "utf8")).toBe("new\n");
    expect((await lstat(join(dest, "target.txt"))).isFile()).toBe(true);
  });

  it("copies a hard link's earlier file, refuses one naming anything else, and drops setuid", async () => {
    const dest = join(root, "dest");
    await unpackArchive(
      await writeTar([file("orig.sh", "echo\n", 0o4755), link("copy.sh", "orig.sh", "hardlink")]),
      dest,
    );
    expect(await readFile(join(dest, "copy.sh"), "utf8")).toBe("echo\n");
    expect((await lstat(join(dest, "orig.sh"))).mode & 0o7777).toBe(0o755);
    await expect(
      unpackArchive(await writeTar([link("h", "elsewhere", "hardlink")]), join(root, "d2")),
    ).rejects.toMatchObject({ code: "unsafe_archive" });
  });

  it("refuses bytes that are not a tar archive", async () => {
    await expect(
      unpackArchive(new Uint8Array(1024).fill(7), join(root, "d")),
    ).rejects.toMatchObject({ code: "unsafe_archive" });
  });
});
