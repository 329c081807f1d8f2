import { posix } from "node:path";
import { SandboxError, type SandboxFileInfo, type SandboxFiles } from "../backend.js";
import { readTar, writeTar, type TarEntry } from "../tar.js";
import { fromModel, toModel, type SimFs } from "./sim-shell.js";

/** The simulator's file API over its in-memory model of a shell's filesystem. */
export class SimFiles implements SandboxFiles {
  constructor(private readonly fsOf: (shellId: string) => SimFs) {}

  async stat(shellId: string, path: string): Promise<SandboxFileInfo> {
    const fs = this.fsOf(shellId);
    const file = fs.files.get(path);
    if (file)
      return {
        path,
        type: "file",
        sizeBytes: file.size,
        mode: 0o644,
        modifiedAt: new Date(0).toISOString(),
      };
    if (fs.dirs.has(path))
      return {
        path,
        type: "directory",
        sizeBytes: 4096,
        mode: 0o755,
        modifiedAt: new Date(0).toISOString(),
      };
    throw new SandboxError("path_not_found", `${path} does not exist in the shell`, { path });
  }

  async list(shellId: string, path: string): Promise<SandboxFileInfo[]> {
    const dir = await this.stat(shellId, path);
    if (dir.type !== "directory")
      throw new SandboxError("wrong_file_type", `${path} is not a directory`, { path });
    const fs = this.fsOf(shellId);
    const children = [...fs.files.keys(), ...fs.dirs].filter(
      (p) => p !== path && posix.dirname(p) === path,
    );
    return Promise.all([...new Set(children)].sort().map((p) => this.stat(shellId, p)));
  }

  async read(shellId: string, path: string, maxBytes: number): Promise<Uint8Array> {
    const info = await this.stat(shellId, path);
    if (info.type !== "file")
      throw new SandboxError("wrong_file_type", `${path}: Is a directory`, { path });
    const file = this.fsOf(shellId).files.get(path)!;
    const bytes = fromModel(file.content);
    if (bytes.length > maxBytes)
      throw new SandboxError("failed", `${path} is larger than ${maxBytes} bytes`, {
        path,
        limitBytes: maxBytes,
        tooLarge: true,
      });
    return bytes;
  }

  async write(shellId: string, path: string, data: Uint8Array): Promise<SandboxFileInfo> {
    const fs = this.fsOf(shellId);
    if (fs.dirs.has(path))
      throw new SandboxError("wrong_file_type", `${path}: Is a directory`, { path });
    for (let dir = posix.dirname(path); dir !== "/"; dir = posix.dirname(dir)) fs.dirs.add(dir);
    fs.files.set(path, { content: toModel(data), size: data.length });
    return this.stat(shellId, path);
  }

  async remove(shellId: string, path: string, recursive: boolean): Promise<void> {
    const info = await this.stat(shellId, path);
    const fs = this.fsOf(shellId);
    if (info.type === "file") {
      fs.files.delete(path);
      return;
    }
    const inside = [...fs.files.keys(), ...fs.dirs].filter((p) => p.startsWith(`${path}/`));
    if (inside.length > 0 && !recursive)
      throw new SandboxError("wrong_file_type", `${path} is not empty; remove it recursively`, {
        path,
      });
    for (const p of inside) {
      fs.files.delete(p);
      fs.dirs.delete(p);
    }
    fs.dirs.delete(path);
  }

  async exportTar(shellId: string, path: string, maxBytes: number): Promise<Uint8Array> {
    const dir = await this.stat(shellId, path);
    if (dir.type !== "directory")
      throw new SandboxError("wrong_file_type", `${path} is not a directory`, { path });
    const fs = this.fsOf(shellId);
    const entries: Omit<TarEntry, "mtimeSeconds">[] = [];
    for (const d of [...fs.dirs].filter((p) => p.startsWith(`${path}/`)).sort()) {
      entries.push({
        name: posix.relative(path, d),
        type: "directory",
        mode: 0o755,
        linkName: "",
        data: new Uint8Array(0),
      });
    }
    for (const [p, file] of [...fs.files].filter(([p]) => p.startsWith(`${path}/`)).sort()) {
      entries.push({
        name: posix.relative(path, p),
        type: "file",
        mode: 0o644,
        linkName: "",
        data: fromModel(file.content),
      });
    }
    const archive = await writeTar(entries);
    if (archive.length > maxBytes)
      throw new SandboxError("failed", `the archive of ${path} is larger than ${maxBytes} bytes`, {
        path,
        tooLarge: true,
      });
    return archive;
  }

  async importTar(shellId: string, path: string, tar: Uint8Array): Promise<void> {
    const fs = this.fsOf(shellId);
    fs.dirs.add(path);
    for (const entry of await readTar(tar)) {
      const target = posix.join(path, entry.name);
      if (entry.type === "directory") fs.dirs.add(target.replace(/\/$/, ""));
      else if (entry.type === "file") await this.write(shellId, target, entry.data);
    }
  }
}
