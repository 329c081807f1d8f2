import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { chown, mkdir, readdir, readFile, rename, rm, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { promisify } from "node:util";
import type { Snapshot } from "@shells/contract";
import { SandboxError } from "@shells/sandbox";

const run = promisify(execFile);

/** Names a snapshot may have (the container and microvm backends accept the same). */
export const SNAPSHOT_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/;

/** A snapshot as kept on disk: `snapshots/<name>.json` naming its archive `<name>.<seq>.tar`. */
export interface SnapshotMeta extends Snapshot {
  seq: number;
  archive: string;
}

/**
 * A shell's persisted state under `shells/<id>/`: `workspace/` (the guest's `/workspace`, the only
 * state a wasm shell keeps) and `snapshots/`. A restore builds `workspace.restore/` beside it and
 * swaps it in with two renames (`workspace` → `workspace.old`, `workspace.restore` → `workspace`);
 * `settleWorkspace` finishes or undoes a swap a crash cut, so the shell holds the old state or the
 * new one, never a mixture. A reinstall onto a pooled worker carries the content the other way
 * (`carry`: into the pooled worker's directory, renamed to `workspace.carry/` first), which
 * `settle` finishes in the same way.
 */
export class ShellState {
  constructor(private readonly shellDir: string) {}

  get workspace(): string {
    return join(this.shellDir, "workspace");
  }

  private get snapshotsDir(): string {
    return join(this.shellDir, "snapshots");
  }

  /** Snapshots, newest first. */
  async snapshots(): Promise<SnapshotMeta[]> {
    let entries: string[];
    try {
      entries = await readdir(this.snapshotsDir);
    } catch {
      return [];
    }
    const metas: SnapshotMeta[] = [];
    for (const entry of entries) {
      if (!entry.endsWith(".json")) continue;
      try {
        metas.push(
          JSON.parse(await readFile(join(this.snapshotsDir, entry), "utf8")) as SnapshotMeta,
        );
      } catch {
        // a metadata file cut by a crash names nothing: its archive is swept as unnamed
      }
    }
    return metas.sort((a, b) => b.seq - a.seq);
  }

  /**
   * Archives `/workspace` as snapshot `name` with the system tar (links stay links, numeric owners,
   * sparse files kept sparse, nothing followed off the filesystem). `still` holds the shell's
   * worker still around the archiving, so the archive is one instant's state. The archive gets a
   * name of its own and the metadata naming it is written last, as the commit: a crash before it
   * leaves the previous snapshot of that name whole, and an unnamed archive `sweep` removes.
   */
  async take(
    name: string,
    seqFloor: number,
    still: <T>(body: () => Promise<T>) => Promise<T>,
  ): Promise<SnapshotMeta> {
    if (!SNAPSHOT_NAME.test(name))
      throw new SandboxError("unsupported", `snapshot name ${JSON.stringify(name)} is not allowed`);
    await mkdir(this.snapshotsDir, { recursive: true, mode: 0o700 });
    const existing = await this.snapshots();
    const seq = Math.max(seqFloor, ...existing.map((s) => s.seq)) + 1;
    const archive = `${name}.${seq}.tar`;
    const temporary = join(this.snapshotsDir, `${archive}.tmp`);
    await still(() =>
      tar([
        "--create",
        `--file=${temporary}`,
        "--numeric-owner",
        "--sparse",
        "--one-file-system",
        "-C",
        this.workspace,
        ".",
      ]),
    );
    await rename(temporary, join(this.snapshotsDir, archive));
    const meta: SnapshotMeta = {
      name,
      sizeBytes: (await stat(join(this.snapshotsDir, archive))).size,
      createdAt: new Date().toISOString(),
      seq,
      archive,
    };
    await writeAtomically(join(this.snapshotsDir, `${name}.json`), JSON.stringify(meta));
    const replaced = existing.find((s) => s.name === name);
    if (replaced && replaced.archive !== archive)
      await rm(join(this.snapshotsDir, replaced.archive), { force: true });
    return meta;
  }

  /**
   * Replaces `/workspace` with a snapshot's content, unpacked into `into` (an empty directory the
   * guest's uid owns: a pooled worker's, whose bind follows it) or a new directory, then swapped in.
   * The caller has stopped the shell's worker (its bind holds the old directory).
   */
  async restore(
    meta: SnapshotMeta,
    owner: { uid: number; gid: number },
    into?: string,
  ): Promise<void> {
    await this.replace(owner, into, async (dir) => {
      // The archive was made by `take` from a real directory tree, so it holds no `..` and no
      // member under a link; GNU tar refuses both anyway and sets links aside until the rest is out.
      await tar([
        "--extract",
        `--file=${join(this.snapshotsDir, meta.archive)}`,
        "--numeric-owner",
        "--same-owner",
        "--same-permissions",
        "-C",
        dir,
      ]);
      // tar gives `.` the archived directory's owner and mode; set the owner explicitly all the same.
      await chown(dir, owner.uid, owner.gid);
    });
  }

  /**
   * Moves the workspace's content into `into` (a pooled worker's empty directory, whose bind
   * follows it), hands every file to `owner` and makes `into` the workspace. `into` is first
   * renamed to `workspace.carry`, so each file is at all times in `workspace` or `workspace.carry`,
   * and `settle` finishes a carry a crash cut. Renames within one filesystem: no data is copied.
   * The caller has stopped the shell's worker; the pooled one runs no guest code yet.
   */
  async carry(owner: { uid: number; gid: number }, into: string): Promise<void> {
    const carry = `${this.workspace}.carry`;
    await rm(carry, { recursive: true, force: true });
    await rename(into, carry);
    await this.finishCarry();
    // Links are handed over themselves, never followed (chown -R without -L does not follow).
    await run("chown", ["-R", "--no-dereference", `${owner.uid}:${owner.gid}`, this.workspace]);
  }

  /** Moves what is left in the workspace into `workspace.carry` and puts that in its place. */
  private async finishCarry(): Promise<void> {
    const carry = `${this.workspace}.carry`;
    for (const entry of await readdir(this.workspace).catch(() => [] as string[]))
      await rename(join(this.workspace, entry), join(carry, entry));
    await rm(this.workspace, { recursive: true, force: true });
    await rename(carry, this.workspace);
  }

  /** Replaces `/workspace` with an empty directory (`into`, or a new one), swapped in whole. */
  async empty(owner: { uid: number; gid: number }, into?: string): Promise<void> {
    await this.replace(owner, into, async () => undefined);
  }

  /**
   * Fills `into` (or a new directory the guest's uid owns), moves it to `workspace.restore` and
   * swaps it in as `/workspace` (see the class comment).
   */
  private async replace(
    owner: { uid: number; gid: number },
    into: string | undefined,
    fill: (dir: string) => Promise<void>,
  ): Promise<void> {
    const fresh = `${this.workspace}.restore`;
    await rm(fresh, { recursive: true, force: true });
    if (into === undefined) {
      await mkdir(fresh, { mode: 0o700 });
      await chown(fresh, owner.uid, owner.gid);
      await fill(fresh);
    } else {
      await fill(into);
      await rename(into, fresh);
    }
    const old = `${this.workspace}.old`;
    await rm(old, { recursive: true, force: true });
    await rename(this.workspace, old);
    await rename(fresh, this.workspace);
    await rm(old, { recursive: true, force: true });
  }

  /**
   * Settles what a crash left between two states: a restore cut after its first rename is
   * finished (`workspace.restore` is complete once it is renamed); one cut before it is dropped;
   * leftovers of a finished swap, archives no snapshot names and temporaries are removed.
   */
  async settle(): Promise<void> {
    const fresh = `${this.workspace}.restore`;
    const exists = (path: string) =>
      stat(path).then(
        () => true,
        () => false,
      );
    if (await exists(`${this.workspace}.carry`)) await this.finishCarry();
    if (!(await exists(this.workspace)) && (await exists(fresh)))
      await rename(fresh, this.workspace);
    await rm(fresh, { recursive: true, force: true });
    await rm(`${this.workspace}.old`, { recursive: true, force: true });
    const named = new Set((await this.snapshots()).map((s) => s.archive));
    for (const entry of await readdir(this.snapshotsDir).catch(() => [] as string[]))
      if ((!entry.endsWith(".json") && !named.has(entry)) || entry.endsWith(".tmp"))
        await rm(join(this.snapshotsDir, entry), { force: true });
  }
}

async function writeAtomically(file: string, text: string): Promise<void> {
  const temporary = `${file}.${randomBytes(4).toString("hex")}.tmp`;
  await writeFile(temporary, text, { mode: 0o600 });
  await rename(temporary, file);
}

async function tar(args: string[]): Promise<void> {
  try {
    await run("tar", args, { maxBuffer: 1024 * 1024 });
  } catch (error) {
    const { stderr } = error as { stderr?: string | Buffer };
    const said = stderr === undefined ? "" : stderr.toString().trim();
    throw new SandboxError(
      "failed",
      `tar ${args[0]} failed: ${said || (error as Error).message}`,
      {},
      { cause: error },
    );
  }
}
