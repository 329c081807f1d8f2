/**
 * A minimal ustar (POSIX tar) reader and writer: enough to build archives of a shell's files and
 * to inspect uploaded archives before anything is unpacked. GNU long names (`L` entries) and pax
 * `path` headers are read, so long paths cannot hide from the checks.
 */

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

const BLOCK = 512;
const decoder = new TextDecoder();
const encoder = new TextEncoder();

function field(block: Uint8Array, offset: number, length: number): string {
  const raw = block.subarray(offset, offset + length);
  const end = raw.indexOf(0);
  return decoder.decode(end === -1 ? raw : raw.subarray(0, end));
}

function octal(block: Uint8Array, offset: number, length: number): number {
  const text = field(block, offset, length).trim();
  return text === "" ? 0 : parseInt(text, 8);
}

function typeOf(flag: string): TarEntry["type"] {
  if (flag === "0" || flag === "\0" || flag === "" || flag === "7") return "file";
  if (flag === "5") return "directory";
  if (flag === "2") return "symlink";
  if (flag === "1") return "hardlink";
  return "other";
}

/** Thrown for an archive that is not well-formed tar. */
export class TarFormatError extends Error {
  override readonly name = "TarFormatError";
}

/** Parses an archive into its entries. */
export function readTar(archive: Uint8Array): TarEntry[] {
  const entries: TarEntry[] = [];
  let offset = 0;
  let longName: string | null = null;
  let paxPath: string | null = null;
  let paxLink: string | null = null;
  while (offset + BLOCK <= archive.length) {
    const header = archive.subarray(offset, offset + BLOCK);
    if (header.every((b) => b === 0)) break;
    const stored = octal(header, 148, 8);
    let sum = 0;
    for (let i = 0; i < BLOCK; i += 1) sum += i >= 148 && i < 156 ? 32 : (header[i] ?? 0);
    if (sum !== stored) throw new TarFormatError(`bad header checksum at byte ${offset}`);
    const size = octal(header, 124, 12);
    // A negative or non-numeric size would stall the walk on the same header forever.
    if (!Number.isSafeInteger(size) || size < 0)
      throw new TarFormatError(`bad entry size at byte ${offset}`);
    const flag = String.fromCharCode(header[156] ?? 0);
    const dataStart = offset + BLOCK;
    if (dataStart + size > archive.length) throw new TarFormatError("archive ends inside an entry");
    const data = archive.subarray(dataStart, dataStart + size);
    offset = dataStart + Math.ceil(size / BLOCK) * BLOCK;
    if (flag === "L") {
      longName = field(data, 0, data.length);
      continue;
    }
    if (flag === "x") {
      // Records are `<length> <key>=<value>\n` where the length covers the whole record, so a
      // value may itself contain newlines: walk by length, as tar does.
      const text = decoder.decode(data);
      let at = 0;
      while (at < text.length) {
        const space = text.indexOf(" ", at);
        const length = Number(text.slice(at, space));
        if (space < 0 || !Number.isSafeInteger(length) || length <= 0)
          throw new TarFormatError("bad pax header");
        const record = text.slice(space + 1, at + length - 1);
        const eq = record.indexOf("=");
        const key = record.slice(0, eq);
        if (key === "path") paxPath = record.slice(eq + 1);
        if (key === "linkpath") paxLink = record.slice(eq + 1);
        at += length;
      }
      continue;
    }
    if (flag === "g") continue;
    // Only POSIX ustar headers carry a name prefix; GNU tar ignores the field otherwise.
    const prefix = field(header, 257, 6) === "ustar" ? field(header, 345, 155) : "";
    const baseName = field(header, 0, 100);
    const name = paxPath ?? longName ?? (prefix ? `${prefix}/${baseName}` : baseName);
    entries.push({
      name: name.replace(/^\.\//, ""),
      type: typeOf(flag),
      mode: octal(header, 100, 8),
      linkName: paxLink ?? field(header, 157, 100),
      data,
      mtimeSeconds: octal(header, 136, 12),
    });
    longName = paxPath = paxLink = null;
  }
  return entries;
}

function writeField(block: Uint8Array, offset: number, length: number, value: string): void {
  const bytes = encoder.encode(value);
  block.set(bytes.subarray(0, length), offset);
}

function writeOctal(block: Uint8Array, offset: number, length: number, value: number): void {
  writeField(block, offset, length, `${value.toString(8).padStart(length - 1, "0")}\0`);
}

/** Builds an archive from entries (names longer than 100 bytes use a GNU long-name entry). */
export function writeTar(entries: readonly Omit<TarEntry, "mtimeSeconds">[]): Uint8Array {
  const blocks: Uint8Array[] = [];
  const header = (name: string, flag: string, size: number, mode: number, linkName: string) => {
    const block = new Uint8Array(BLOCK);
    writeField(block, 0, 100, name);
    writeOctal(block, 100, 8, mode);
    writeOctal(block, 108, 8, 0);
    writeOctal(block, 116, 8, 0);
    writeOctal(block, 124, 12, size);
    writeOctal(block, 136, 12, Math.floor(Date.now() / 1000));
    block.fill(32, 148, 156);
    block[156] = flag.charCodeAt(0);
    writeField(block, 157, 100, linkName);
    writeField(block, 257, 6, "ustar\0");
    writeField(block, 263, 2, "00");
    let sum = 0;
    for (const b of block) sum += b;
    writeField(block, 148, 8, `${sum.toString(8).padStart(6, "0")}\0 `);
    return block;
  };
  const pad = (data: Uint8Array) => {
    const padded = new Uint8Array(Math.ceil(data.length / BLOCK) * BLOCK);
    padded.set(data);
    return padded;
  };
  for (const entry of entries) {
    const flag = { file: "0", directory: "5", symlink: "2", hardlink: "1", other: "0" }[entry.type];
    const name =
      entry.type === "directory" && !entry.name.endsWith("/") ? `${entry.name}/` : entry.name;
    if (encoder.encode(name).length > 100) {
      const longName = encoder.encode(`${name}\0`);
      blocks.push(header("././@LongLink", "L", longName.length, 0, ""), pad(longName));
    }
    const data = entry.type === "file" ? entry.data : new Uint8Array(0);
    blocks.push(header(name, flag, data.length, entry.mode, entry.linkName), pad(data));
  }
  blocks.push(new Uint8Array(BLOCK * 2));
  const out = new Uint8Array(blocks.reduce((n, b) => n + b.length, 0));
  let at = 0;
  for (const b of blocks) {
    out.set(b, at);
    at += b.length;
  }
  return out;
}

/**
 * Why an archive may not be unpacked, or null when it is safe: an absolute path, a `..` segment,
 * a link whose target is absolute or climbs out with `..`, or a device/fifo entry.
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
