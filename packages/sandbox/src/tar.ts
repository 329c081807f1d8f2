/**
 * Tar archives through `tar-stream`: building archives of a shell's files, reading them, and
 * checking uploaded archives before anything is unpacked. An upload is never handed on as sent:
 * {@link sanitizeTar} reads it entry by entry, refuses the first entry that could land outside the
 * destination by any route (absolute paths, `..`, link chains, links through links, hard links to
 * links, devices, fifos), and writes a fresh archive holding exactly the entries it checked. Pax
 * global headers, vendor extensions and anything else the checker did not look at never reach the
 * `tar` that unpacks it, so the two parsers cannot disagree about what an entry means.
 */
import { setImmediate as nextTurn } from "node:timers/promises";
import { extract, pack, type Header } from "tar-stream";

/** One entry of an archive. */
export interface TarEntry {
  /** Path as stored, without a leading `./`. */
  name: string;
  type: "file" | "directory" | "symlink" | "hardlink" | "other";
  mode: number;
  /** Link target for symlinks and hard links. */
  linkName: string;
  data: Uint8Array;
  mtimeSeconds: number;
}

/** Thrown for an archive that is not well-formed tar. */
export class TarFormatError extends Error {
  override readonly name = "TarFormatError";
}

/** Thrown for an archive holding an entry that could land outside its destination. */
export class UnsafeTarError extends Error {
  override readonly name = "UnsafeTarError";
  constructor(
    /** The offending entry's path as stored. */
    readonly entry: string,
    /** Why it is refused. */
    readonly reason: string,
  ) {
    super(reason);
  }
}

/** Bytes handed to the parser at a time; the event loop gets a turn between slices. */
const SLICE_BYTES = 1024 * 1024;
/** Entries checked between turns of the event loop, however small they are. */
const ENTRIES_PER_TURN = 512;
/** Longest path or link target accepted (Linux's PATH_MAX). */
const MAX_PATH_BYTES = 4096;
/** Links followed while resolving one path (Linux's MAXSYMLINKS). */
const MAX_LINK_HOPS = 40;
/** Permission bits kept; file type bits never come from an archive. */
const MODE_BITS = 0o7777;

const TYPES: Partial<Record<Header["type"], TarEntry["type"]>> = {
  file: "file",
  "contiguous-file": "file",
  directory: "directory",
  symlink: "symlink",
  link: "hardlink",
};

/** Feeds `archive` to a parser in slices, yielding to the event loop between them. */
async function* entriesOf(archive: Uint8Array) {
  // v7 headers (no ustar magic) are still tar, as GNU tar reads them; the checksum still holds.
  const parser = extract({ allowUnknownFormat: true } as Parameters<typeof extract>[0]);
  const feeding = (async () => {
    for (let at = 0; at < archive.length && !parser.destroyed; at += SLICE_BYTES) {
      if (!parser.write(archive.subarray(at, at + SLICE_BYTES))) {
        await new Promise<void>((resolve) => {
          const done = () => {
            parser.off("drain", done);
            parser.off("close", done);
            resolve();
          };
          parser.on("drain", done);
          parser.on("close", done);
        });
      }
      await nextTurn(undefined);
    }
    if (!parser.destroyed) parser.end(undefined);
  })();
  try {
    let count = 0;
    for await (const entry of parser) {
      yield entry;
      count += 1;
      if (count % ENTRIES_PER_TURN === 0) await nextTurn(undefined);
    }
  } catch (error) {
    if (error instanceof UnsafeTarError) throw error;
    throw new TarFormatError(error instanceof Error ? error.message : String(error));
  } finally {
    parser.destroy();
    await feeding;
  }
}

async function collect(stream: AsyncIterable<unknown>): Promise<Uint8Array> {
  const chunks: Uint8Array[] = [];
  for await (const chunk of stream) chunks.push(chunk as Uint8Array);
  return chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks);
}

function toEntry(header: Header, data: Uint8Array): TarEntry {
  return {
    name: header.name.replace(/^(\.\/)+/, ""),
    type: TYPES[header.type] ?? "other",
    mode: header.mode & MODE_BITS,
    linkName: header.linkname ?? "",
    data,
    mtimeSeconds: Math.floor(header.mtime.getTime() / 1000),
  };
}

/** Parses an archive into its entries. */
export async function readTar(archive: Uint8Array): Promise<TarEntry[]> {
  const entries: TarEntry[] = [];
  for await (const stream of entriesOf(archive))
    entries.push(toEntry(stream.header, await collect(stream)));
  return entries;
}

const PACK_TYPES: Record<TarEntry["type"], Header["type"]> = {
  file: "file",
  directory: "directory",
  symlink: "symlink",
  hardlink: "link",
  other: "file",
};

/** Builds an archive from entries (long names and link targets go into pax headers). */
export async function writeTar(
  entries: readonly Omit<TarEntry, "mtimeSeconds">[],
): Promise<Uint8Array> {
  const out = pack();
  const written = collect(out);
  const mtime = new Date();
  for (const entry of entries) {
    const data = entry.type === "file" ? entry.data : new Uint8Array(0);
    await new Promise<void>((resolve, reject) => {
      out.entry(
        {
          name: entry.name,
          type: PACK_TYPES[entry.type],
          mode: entry.mode & MODE_BITS,
          linkname: entry.linkName || undefined,
          mtime,
        },
        Buffer.from(data.buffer, data.byteOffset, data.byteLength),
        (error) => (error ? reject(error) : resolve()),
      );
    });
  }
  out.finalize();
  return written;
}

/** Path segments of a stored name or link target, without empty and `.` segments. */
function segments(path: string): string[] {
  return path.split("/").filter((s) => s !== "" && s !== ".");
}

/** Problems any path in an archive may not have, whatever else is in it. */
function badPath(path: string, what: string): string | null {
  if (path.includes("\0")) return `${what} has a NUL byte`;
  if (Buffer.byteLength(path) > MAX_PATH_BYTES)
    return `${what} is longer than ${MAX_PATH_BYTES} bytes`;
  return null;
}

/**
 * Why a single entry may not be unpacked, looked at on its own, or null: an absolute path, a `..`
 * segment, a link whose target is absolute or climbs out with `..`, or a device/fifo entry. This
 * cannot see links that only escape together with other entries; {@link sanitizeTar} can.
 */
export function unsafeTarEntry(entry: TarEntry): string | null {
  const climbs = (path: string) => path.split("/").includes("..");
  if (entry.name.startsWith("/")) return `absolute path ${entry.name}`;
  if (climbs(entry.name)) return `path ${entry.name} climbs out with ..`;
  if (entry.name.includes("\0")) return "a path with a NUL byte";
  if (entry.type === "symlink" || entry.type === "hardlink") {
    if (entry.linkName.startsWith("/"))
      return `link ${entry.name} points to the absolute path ${entry.linkName}`;
    const resolved = [...entry.name.split("/").slice(0, -1), ...entry.linkName.split("/")];
    let depth = 0;
    for (const part of resolved) {
      if (part === "..") depth -= 1;
      else if (part !== "." && part !== "") depth += 1;
      if (depth < 0) return `link ${entry.name} points outside the archive (${entry.linkName})`;
    }
  }
  if (entry.type === "other") return `entry ${entry.name} is a device, fifo or other special file`;
  return null;
}

/** One path the archive has created so far, as the unpacking `tar` will find it on disk. */
interface Node {
  kind: "directory" | "file" | "symlink";
  parent: Node | null;
  depth: number;
  children: Map<string, Node>;
  /** For symlinks: how many `..` lead the target, then the names below that. */
  up: number;
  down: string[];
}

function node(kind: Node["kind"], parent: Node | null): Node {
  return {
    kind,
    parent,
    depth: parent ? parent.depth + 1 : 0,
    children: new Map(),
    up: 0,
    down: [],
  };
}

/**
 * The tree an archive builds, link by link, so each entry's path and link target are resolved
 * the way the kernel will resolve them while `tar` unpacks: through every symlink created so far,
 * with `..` taken physically (from where a link really lives, not from how it was named).
 *
 * A symlink target may only climb (`..`) before it names anything. Its climb then starts from the
 * fixed directory the link lives in and is checked once, when the link is made; what it names
 * below can only descend, through links that were themselves checked. So no later entry can turn
 * an accepted link into one that leaves the destination.
 */
class ArchiveTree {
  readonly #root = node("directory", null);

  /** Walks `names` from `from`, following symlinks; creates missing directories when asked. */
  #walk(from: Node, names: readonly string[], create: boolean, hops: { left: number }): Node {
    let at = from;
    for (const name of names) {
      let child = at.children.get(name);
      if (!child) {
        if (!create) throw new Error(`${name} was not created by the archive`);
        child = node("directory", at);
        at.children.set(name, child);
      }
      if (child.kind === "symlink") {
        hops.left -= 1;
        if (hops.left < 0) throw new Error("it passes through too many links");
        at = this.#climb(child.parent!, child.up);
        at = this.#walk(at, child.down, create, hops);
      } else if (child.kind === "file") {
        throw new Error(`it passes through the file ${name}`);
      } else {
        at = child;
      }
    }
    return at;
  }

  #climb(from: Node, up: number): Node {
    let at = from;
    for (let i = 0; i < up; i += 1) {
      if (!at.parent) throw new Error("it leads outside the destination");
      at = at.parent;
    }
    return at;
  }

  /** Records one entry, or says why it may not be unpacked. */
  add(entry: Header): string | null {
    const type = TYPES[entry.type];
    const stored = entry.name;
    if (!type) return `entry ${stored} is a device, fifo or other special file`;
    const pathProblem = badPath(stored, `path ${stored}`);
    if (pathProblem) return pathProblem;
    if (stored.startsWith("/")) return `absolute path ${stored}`;
    if (stored.split("/").includes("..")) return `path ${stored} climbs out with ..`;
    const names = segments(stored);
    const base = names.pop();
    if (base === undefined) return type === "directory" ? null : `entry ${stored} has no name`;

    let parent: Node;
    try {
      parent = this.#walk(this.#root, names, true, { left: MAX_LINK_HOPS });
    } catch (error) {
      return `path ${stored} cannot be unpacked safely: ${(error as Error).message}`;
    }
    const existing = parent.children.get(base);
    if (existing?.kind === "symlink") return `entry ${stored} replaces a link made earlier`;

    if (type === "symlink" || type === "hardlink") {
      const target = entry.linkname ?? "";
      const targetProblem = badPath(target, `link ${stored}'s target`);
      if (targetProblem) return targetProblem;
      if (target === "") return `link ${stored} has no target`;
      if (target.startsWith("/")) return `link ${stored} points to the absolute path ${target}`;
      if (type === "symlink") return this.#symlink(parent, base, stored, target, existing);
      return this.#hardlink(parent, base, stored, target, existing);
    }
    if (type === "directory") {
      if (existing && existing.kind !== "directory")
        return `directory ${stored} replaces a file made earlier`;
      if (!existing) parent.children.set(base, node("directory", parent));
      return null;
    }
    return this.#file(parent, base, stored, existing);
  }

  #file(parent: Node, base: string, stored: string, existing: Node | undefined): string | null {
    if (existing?.kind === "directory" && existing.children.size > 0)
      return `file ${stored} replaces a directory made earlier`;
    parent.children.set(base, node("file", parent));
    return null;
  }

  #symlink(
    parent: Node,
    base: string,
    stored: string,
    target: string,
    existing: Node | undefined,
  ): string | null {
    if (existing) return `link ${stored} replaces an entry made earlier`;
    const names = segments(target);
    let up = 0;
    while (names[up] === "..") up += 1;
    const down = names.slice(up);
    if (down.includes(".."))
      return `link ${stored} climbs with .. after naming a directory (${target})`;
    if (up > parent.depth)
      return `link ${stored} points outside the destination (${target}, from where the link lives)`;
    const link = node("symlink", parent);
    link.up = up;
    link.down = down;
    parent.children.set(base, link);
    return null;
  }

  /** A hard link's target is a path from the destination, and must be a file this archive made. */
  #hardlink(
    parent: Node,
    base: string,
    stored: string,
    target: string,
    existing: Node | undefined,
  ): string | null {
    if (target.split("/").includes("..")) return `hard link ${stored} climbs out with ..`;
    const names = segments(target);
    const last = names.pop();
    if (last === undefined) return `hard link ${stored} has no target`;
    let dir: Node;
    try {
      dir = this.#walk(this.#root, names, false, { left: MAX_LINK_HOPS });
    } catch (error) {
      return `hard link ${stored} to ${target} cannot be made safely: ${(error as Error).message}`;
    }
    const linked = dir.children.get(last);
    if (linked?.kind === "symlink") return `hard link ${stored} points to the link ${target}`;
    if (linked?.kind !== "file")
      return `hard link ${stored} points to ${target}, which is not a file in the archive`;
    return this.#file(parent, base, stored, existing);
  }
}

/** An uploaded archive that passed every check, rewritten to hold only what was checked. */
export interface SanitizedTar {
  archive: Uint8Array;
  entries: number;
}

/**
 * Checks an uploaded archive entry by entry while reading it, stopping at the first entry that
 * could land outside the destination (throws {@link UnsafeTarError}) or at malformed tar (throws
 * {@link TarFormatError}), and returns the archive rewritten from the checked entries alone: names
 * normalised, permission bits only, no pax or GNU extension records. Reading yields to the event
 * loop between slices of the input and between runs of entries, so a large archive never holds it.
 */
export async function sanitizeTar(archive: Uint8Array): Promise<SanitizedTar> {
  const tree = new ArchiveTree();
  const out = pack();
  const written = collect(out);
  let entries = 0;
  try {
    for await (const stream of entriesOf(archive)) {
      const header = stream.header;
      const problem = tree.add(header);
      if (problem) throw new UnsafeTarError(header.name, problem);
      entries += 1;
      const type = TYPES[header.type]!;
      const name = segments(header.name).join("/");
      if (name === "") {
        stream.resume();
        continue;
      }
      const outHeader: Header = {
        name,
        type: PACK_TYPES[type],
        mode: header.mode & MODE_BITS,
        mtime: header.mtime,
        size: type === "file" ? header.size : 0,
        uid: 0,
        gid: 0,
        linkname:
          type === "symlink"
            ? segments(header.linkname).join("/") || "."
            : type === "hardlink"
              ? segments(header.linkname).join("/")
              : "",
        uname: "",
        gname: "",
        devmajor: 0,
        devminor: 0,
      };
      const done = new Promise<void>((resolve, reject) => {
        const sink = out.entry(outHeader, (error) => (error ? reject(error) : resolve()));
        if (type !== "file") return;
        stream.on("data", (chunk) => sink.write(chunk));
        stream.on("end", () => sink.end(undefined));
        stream.on("error", reject);
      });
      if (type !== "file") stream.resume();
      await done;
    }
  } catch (error) {
    out.destroy();
    await written.catch(() => undefined);
    throw error;
  }
  out.finalize();
  return { archive: await written, entries };
}
