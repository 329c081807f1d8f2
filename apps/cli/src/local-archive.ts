/**
 * Directories on this machine to and from tar archives, for `shells cp`. Unpacking is the
 * security-relevant half: the archive comes from a sandbox, i.e. from untrusted code, so it must
 * not write anywhere but under the destination. Three rules hold that line:
 * 1. every entry is checked before anything is written (`unsafeTarEntry`: absolute paths, `..`,
 *    links that point out of the archive, devices) and one bad entry refuses the whole archive;
 * 2. nothing is written through a symbolic link: each directory on the way to an entry must be a
 *    real directory (a link planted by an earlier entry, or already on disk, cannot redirect a
 *    later write), and an existing link at an entry's own path is replaced, not followed;
 * 3. hard links are materialised as copies of the archive's earlier entry, never as links to
 *    whatever a path on disk names.
 */
import { readTar, unsafeTarEntry, writeTar, type TarEntry } from "@shells/sandbox";
import {
  lstat,
  mkdir,
  readFile,
  readdir,
  readlink,
  rm,
  symlink,
  writeFile,
} from "node:fs/promises";
import { join, relative, sep } from "node:path";
import { CliError } from "./errors.js";

/** Permission bits kept from an archive: no setuid, setgid or sticky bits from a sandbox. */
const PERMISSION_BITS = 0o777;

/** What {@link packDirectory} left out: sockets, fifos and devices have no place in an archive. */
export interface PackedDirectory {
  archive: Uint8Array;
  entries: number;
  skipped: string[];
}

/** Packs a local directory's contents (not the directory itself) into a tar archive. */
export async function packDirectory(directory: string): Promise<PackedDirectory> {
  const entries: Omit<TarEntry, "mtimeSeconds">[] = [];
  const skipped: string[] = [];
  const walk = async (dir: string): Promise<void> => {
    const names = (await readdir(dir)).sort();
    for (const name of names) {
      const path = join(dir, name);
      const archiveName = relative(directory, path).split(sep).join("/");
      const info = await lstat(path);
      const mode = info.mode & PERMISSION_BITS;
      if (info.isDirectory()) {
        entries.push({ name: archiveName, type: "directory", mode, linkName: "", data: empty });
        await walk(path);
      } else if (info.isFile()) {
        entries.push({
          name: archiveName,
          type: "file",
          mode,
          linkName: "",
          data: await readFile(path),
        });
      } else if (info.isSymbolicLink()) {
        entries.push({
          name: archiveName,
          type: "symlink",
          mode,
          linkName: await readlink(path),
          data: empty,
        });
      } else {
        skipped.push(archiveName);
      }
    }
  };
  await walk(directory);
  return { archive: await writeTar(entries), entries: entries.length, skipped };
}

const empty = new Uint8Array(0);

/**
 * Unpacks an archive from a sandbox under `destination` (created if missing), following the rules
 * above, and answers how many entries it wrote.
 *
 * @throws {CliError} `unsafe_archive` naming the first entry that breaks a rule; for the checks of
 *   rule 1, before anything is written.
 */
export async function unpackArchive(archive: Uint8Array, destination: string): Promise<number> {
  let entries: TarEntry[];
  try {
    entries = await readTar(archive);
  } catch (cause) {
    throw new CliError("unsafe_archive", `the archive does not parse: ${describe(cause)}`);
  }
  for (const entry of entries) {
    const reason = unsafeTarEntry(entry);
    if (reason !== null) {
      throw new CliError("unsafe_archive", `refusing the whole archive: ${reason}`);
    }
  }
  await mkdir(destination, { recursive: true });
  const written = new Map<string, TarEntry>();
  for (const entry of entries) {
    const parts = entry.name.split("/").filter((part) => part !== "" && part !== ".");
    if (parts.length === 0) continue;
    const target = join(destination, ...parts);
    await ensureRealDirectories(destination, parts.slice(0, -1));
    if (entry.type === "directory") {
      const existing = await lstatOrNull(target);
      if (existing?.isSymbolicLink()) await rm(target);
      if (existing === null || existing.isSymbolicLink()) {
        await mkdir(target, { mode: entry.mode & PERMISSION_BITS });
      } else if (!existing.isDirectory()) {
        throw new CliError(
          "unsafe_archive",
          `${entry.name} is a directory in the archive but not on disk`,
        );
      }
      written.set(parts.join("/"), entry);
      continue;
    }
    if (entry.type === "symlink") {
      await rm(target, { force: true });
      await symlink(entry.linkName, target);
    } else {
      // writeFile follows a link at the target; the link goes, the file takes its place.
      await removeIfLink(target);
      const source =
        entry.type === "hardlink"
          ? written.get(
              entry.linkName
                .split("/")
                .filter((p) => p !== "" && p !== ".")
                .join("/"),
            )
          : entry;
      if (source === undefined || source.type !== "file") {
        throw new CliError(
          "unsafe_archive",
          `hard link ${entry.name} names ${entry.linkName}, which is not an earlier file of the archive`,
        );
      }
      await writeFile(target, source.data, { mode: source.mode & PERMISSION_BITS });
    }
    written.set(parts.join("/"), entry);
  }
  return written.size;
}

/** Creates `parts` under `root` one by one, refusing any that exists as anything but a directory. */
async function ensureRealDirectories(root: string, parts: readonly string[]): Promise<void> {
  let path = root;
  for (const part of parts) {
    path = join(path, part);
    const info = await lstatOrNull(path);
    if (info === null) await mkdir(path);
    else if (!info.isDirectory()) {
      throw new CliError(
        "unsafe_archive",
        `refusing to write through ${relative(root, path)}: it is ${info.isSymbolicLink() ? "a symbolic link" : "not a directory"}`,
      );
    }
  }
}

async function removeIfLink(path: string): Promise<void> {
  if ((await lstatOrNull(path))?.isSymbolicLink()) await rm(path);
}

async function lstatOrNull(path: string) {
  try {
    return await lstat(path);
  } catch (error) {
    if ((error as { code?: unknown }).code === "ENOENT") return null;
    throw error;
  }
}

function describe(cause: unknown): string {
  return cause instanceof Error ? cause.message : String(cause);
}
