// @ts-check
/**
 * One shell's interpreter process. It runs inside the jail the backend builds (an unprivileged uid,
 * private namespaces, no network, a cgroup) and sees only `/workspace`, the shell's own state.
 *
 * The main thread speaks the framed protocol with the backend: one JSON object per line on stdin
 * (requests) and stdout (events). The interpreter (Pyodide or QuickJS) runs in a worker thread so
 * the main thread stays responsive while guest code loops: an `interrupt` request flips a shared
 * flag that Pyodide's eval breaker and QuickJS's interrupt handler both poll, which ends the guest
 * code without losing the interpreter.
 *
 * Guest HTTP (QuickJS's `fetch`, Python's `urllib.request`) is synchronous in the engine thread:
 * it posts the request to the main thread, which writes an `http` event for the backend, and waits
 * on a shared flag until the main thread hands the backend's `http-response` over a message port.
 * The backend carries the request to the shell's egress proxy; the jail itself has no network.
 *
 * Usage: node interpreter-worker.mjs <python|node> <node_modules dir holding pyodide> [snapshot]
 * (`snapshot`: a Pyodide memory snapshot made by make-python-snapshot.mjs to start Python from).
 */
import fs from "node:fs";
import { posix } from "node:path";
import { createInterface } from "node:readline";
import {
  MessageChannel,
  Worker,
  isMainThread,
  parentPort,
  receiveMessageOnPort,
  workerData,
} from "node:worker_threads";
import { fileURLToPath } from "node:url";
import { interruptBuffer } from "./interrupt-buffer.mjs";
import { pythonLoadOptions } from "./python-load.mjs";

/** Throwaway execs a worker runs before it reports ready. */
const WARM_UP_EXECS = 20;

/** Exit code of guest code ended by an interrupt (128 + SIGINT), as a shell reports it. */
const INTERRUPTED = 130;

/**
 * The shell's disk quota over `/workspace`, shared by both threads: [0] the limit in bytes (0: none
 * yet, a pooled worker), [1] the bytes in use as last counted plus what was charged since, [2]
 * writes refused for it (an exec that fails after a refusal reports kill reason `disk`).
 */
const LIMIT = 0;
const USED = 1;
const REFUSED = 2;

/**
 * Bytes `/workspace` holds: the apparent size of every file (a sparse file counts whole, as a
 * write filling its holes would), walked with lstat so links are never followed.
 * @param {string} dir
 * @returns {number}
 */
function workspaceBytes(dir = "/workspace") {
  let bytes = 0;
  for (const name of fs.readdirSync(dir)) {
    const st = fs.lstatSync(posix.join(dir, name));
    if (st.isDirectory()) bytes += workspaceBytes(posix.join(dir, name));
    else if (st.isFile()) bytes += st.size;
  }
  return bytes;
}

/**
 * Accounts a write that grows `/workspace` by `growth` bytes, or refuses it with ENOSPC when the
 * quota has no room: the running count is checked first, and only when it says "full" is the
 * workspace counted again (files the guest deleted meanwhile give their room back), so a write
 * costs a walk only near the limit. Writes under `/tmp` (the jail's tmpfs, charged to the
 * worker's memory cgroup) are not counted.
 * @param {BigInt64Array} disk @param {string} path @param {number} growth
 */
function chargeDisk(disk, path, growth) {
  const limit = Number(Atomics.load(disk, LIMIT));
  if (limit <= 0 || growth <= 0 || !/^\/workspace(\/|$)/.test(path)) return;
  if (Number(Atomics.add(disk, USED, BigInt(growth))) + growth <= limit) return;
  const used = workspaceBytes();
  if (used + growth <= limit) {
    Atomics.store(disk, USED, BigInt(used + growth));
    return;
  }
  Atomics.store(disk, USED, BigInt(used));
  Atomics.add(disk, REFUSED, 1n);
  throw Object.assign(
    new Error(`ENOSPC: No space left on device, write '${path}' (the shell's disk quota is full)`),
    { code: "ENOSPC", usedBytes: used, limitBytes: limit },
  );
}

/** Size of a file now, 0 when it does not exist. @param {string} path */
function sizeOf(path) {
  return fs.statSync(path, { throwIfNoEntry: false })?.size ?? 0;
}

/** The protocol side: forwards requests to the engine thread and its events to stdout. */
function runMain() {
  const [language, assets, snapshot] = process.argv.slice(2);
  const flag = new Int32Array(new SharedArrayBuffer(4));
  const disk = new BigInt64Array(new SharedArrayBuffer(24));
  const http = new Int32Array(new SharedArrayBuffer(4));
  const { port1: answers, port2: answerPort } = new MessageChannel();
  const engine = new Worker(fileURLToPath(import.meta.url), {
    workerData: { language, assets, snapshot, flag, disk, http, answerPort },
    transferList: [answerPort],
  });
  /** @param {unknown} event */
  const send = (event) => void process.stdout.write(`${JSON.stringify(event)}\n`);
  /**
   * The request the engine runs now: an interrupt names the request it is meant for, so one that
   * arrives late (its request already answered) cannot stop the next request's code.
   * @type {number | null}
   */
  let running = null;
  engine.on("message", (event) => {
    if (event?.type === "done" && event.id === running) running = null;
    send(event);
  });
  engine.on("error", (error) => {
    send({ type: "fatal", message: String(error?.stack ?? error) });
    process.exit(70);
  });
  engine.on("exit", (code) => process.exit(code === 0 ? 0 : 70));
  const lines = createInterface({ input: process.stdin });
  lines.on("line", (line) => {
    if (line.trim() === "") return;
    const request = JSON.parse(line);
    if (request.type === "interrupt") {
      // 2 is SIGINT for Pyodide's interrupt buffer; QuickJS treats any non-zero value as "stop".
      if (request.id === running) {
        Atomics.store(flag, 0, 2);
        // The backend's unwind grace starts now, not while this line waited to be read.
        send({ type: "interrupting", id: request.id });
      }
      return;
    }
    if (request.type === "http-response") {
      // The engine thread waits on `http` for it (see httpCaller).
      answers.postMessage({ id: request.id, answer: request.answer });
      Atomics.store(http, 0, 1);
      Atomics.notify(http, 0);
      return;
    }
    if (request.type === "limits") {
      // Sent before any request that may write: by the backend when a shell claims or starts
      // this worker. The workspace is counted now, restored or grown while no worker ran.
      Atomics.store(disk, USED, BigInt(workspaceBytes()));
      Atomics.store(disk, LIMIT, BigInt(Math.max(0, Math.floor(Number(request.diskBytes) || 0))));
      return;
    }
    if (request.type === "file") {
      // Served here, beside the engine thread, so files answer while guest code runs.
      try {
        send({ type: "file", id: request.id, ok: true, value: fileRequest(request, disk) });
      } catch (error) {
        const failure = fileError(error, request.path);
        send({
          type: "file",
          id: request.id,
          ok: false,
          error: { code: failure.code, message: failure.message, details: failure.details },
        });
      }
      return;
    }
    if (request.type === "exec" || request.type === "turn") {
      running = request.id;
      Atomics.store(flag, 0, 0);
    }
    engine.postMessage(request);
  });
  lines.on("close", () => process.exit(0));
}

/** The guest's filesystem roots; nothing else of the jail is reachable through file requests. */
const FILE_ROOTS = /^\/(workspace|tmp)(\/|$)/;

/** A file request's failure, with the sandbox error code the backend throws. */
class FileError extends Error {
  /** @param {string} code @param {string} message @param {Record<string, unknown>} [details] */
  constructor(code, message, details = {}) {
    super(message);
    this.code = code;
    this.details = details;
  }
}

/**
 * The real location of a guest path, resolved inside the jail: its deepest existing ancestor
 * through `realpath` (so every symlink on the way is followed), the rest appended; the last
 * component is followed too when `follow` is set. The result must lie under `/workspace` or `/tmp`,
 * so a symlink the guest planted can never lead a request elsewhere — and the jail holds nothing
 * of the host besides read-only interpreter files even if it raced one in.
 * @param {string} guestPath @param {boolean} follow
 */
function confine(guestPath, follow) {
  if (typeof guestPath !== "string" || !guestPath.startsWith("/") || guestPath.includes("\0"))
    throw new FileError("path_not_found", `${guestPath} is not an absolute path`, {
      path: guestPath,
    });
  const full = posix.normalize(guestPath).replace(/(.)\/+$/, "$1");
  if (!FILE_ROOTS.test(full))
    throw new FileError(
      "path_not_found",
      `${full} does not exist in the shell (wasm shells hold only /workspace and /tmp)`,
      { path: guestPath },
    );
  const base = follow ? full : posix.dirname(full);
  let existing = base;
  const rest = [];
  for (;;) {
    try {
      existing = fs.realpathSync(existing);
      break;
    } catch {
      // A dangling link would be followed by the write that creates its target: refused.
      if (fs.lstatSync(existing, { throwIfNoEntry: false })?.isSymbolicLink())
        throw new FileError("path_not_found", `${full} leads through a dangling link`, {
          path: guestPath,
        });
      rest.unshift(posix.basename(existing));
      existing = posix.dirname(existing);
    }
  }
  let real = posix.join(existing, ...rest);
  if (!follow && full !== base) real = posix.join(real, posix.basename(full));
  if (!FILE_ROOTS.test(real))
    throw new FileError("path_not_found", `${full} leads outside /workspace and /tmp`, {
      path: guestPath,
    });
  return real;
}

/** @param {string} guestPath @param {import("node:fs").Stats} st */
function infoOf(guestPath, st) {
  return {
    path: guestPath,
    type: st.isFile()
      ? "file"
      : st.isDirectory()
        ? "directory"
        : st.isSymbolicLink()
          ? "symlink"
          : "other",
    sizeBytes: st.isFile() ? st.size : 0,
    mode: st.mode & 0o7777,
    modifiedAt: st.mtime.toISOString(),
  };
}

/** @param {unknown} error @param {string} guestPath */
function fileError(error, guestPath) {
  if (error instanceof FileError) return error;
  const code = /** @type {NodeJS.ErrnoException} */ (error)?.code;
  if (code === "ENOENT")
    return new FileError("path_not_found", `${guestPath} does not exist in the shell`, {
      path: guestPath,
    });
  if (code === "ENOSPC")
    return new FileError("failed", String(/** @type {Error} */ (error).message), {
      path: guestPath,
      noSpace: true,
      usedBytes: /** @type {{ usedBytes?: number }} */ (error).usedBytes,
      limitBytes: /** @type {{ limitBytes?: number }} */ (error).limitBytes,
    });
  if (code === "EISDIR" || code === "ENOTDIR" || code === "ENOTEMPTY")
    return new FileError(
      "wrong_file_type",
      `${guestPath}: ${String(/** @type {Error} */ (error).message)}`,
      {
        path: guestPath,
      },
    );
  return new FileError(
    "failed",
    `file operation on ${guestPath} failed: ${String(/** @type {Error} */ (error)?.message ?? error)}`,
    {
      path: guestPath,
    },
  );
}

/**
 * One file request, carried out by this (jailed, unprivileged) process on its own view of the
 * filesystem. Data travels base64-encoded.
 * @param {{ op: string, path: string, maxBytes?: number, data?: string, mode?: number,
 *   recursive?: boolean, entries?: { name: string, type: string, mode: number, linkName: string,
 *   data: string }[] }} request
 * @param {BigInt64Array} disk
 */
function fileRequest(request, disk) {
  const guestPath = request.path;
  switch (request.op) {
    case "stat":
      return infoOf(guestPath, fs.lstatSync(confine(guestPath, false)));
    case "list": {
      const dir = confine(guestPath, true);
      if (!fs.statSync(dir).isDirectory())
        throw new FileError("wrong_file_type", `${guestPath} is not a directory`, {
          path: guestPath,
        });
      const prefix = guestPath.replace(/\/+$/, "");
      return fs
        .readdirSync(dir)
        .sort()
        .map((name) => infoOf(`${prefix}/${name}`, fs.lstatSync(posix.join(dir, name))));
    }
    case "read": {
      const file = confine(guestPath, true);
      const st = fs.statSync(file);
      if (st.isDirectory())
        throw new FileError("wrong_file_type", `${guestPath} is a directory`, { path: guestPath });
      const max = Number(request.maxBytes);
      if (st.size > max)
        throw new FileError("failed", `${guestPath} is larger than ${max} bytes`, {
          path: guestPath,
          limitBytes: max,
          tooLarge: true,
        });
      return fs.readFileSync(file).toString("base64");
    }
    case "write": {
      const file = confine(guestPath, true);
      const data = Buffer.from(request.data ?? "", "base64");
      chargeDisk(disk, file, data.length - sizeOf(file));
      fs.mkdirSync(posix.dirname(file), { recursive: true });
      fs.writeFileSync(file, data);
      if (typeof request.mode === "number") fs.chmodSync(file, request.mode & 0o7777);
      return infoOf(guestPath, fs.lstatSync(file));
    }
    case "remove": {
      const target = confine(guestPath, false);
      if (/^\/(workspace|tmp)$/.test(target))
        throw new FileError("wrong_file_type", `${guestPath} is a root of the shell and stays`, {
          path: guestPath,
        });
      const st = fs.lstatSync(target);
      if (st.isDirectory() && !request.recursive) {
        try {
          fs.rmdirSync(target);
        } catch (error) {
          if (/** @type {NodeJS.ErrnoException} */ (error)?.code === "ENOTEMPTY")
            throw new FileError(
              "wrong_file_type",
              `${guestPath} is not empty; remove it recursively`,
              {
                path: guestPath,
              },
            );
          throw error;
        }
      } else fs.rmSync(target, { recursive: true, force: true });
      return null;
    }
    case "export": {
      // Entries for a tar of the directory, symlinks kept as links (never followed).
      const root = confine(guestPath, true);
      if (!fs.statSync(root).isDirectory())
        throw new FileError("wrong_file_type", `${guestPath} is not a directory`, {
          path: guestPath,
        });
      const max = Number(request.maxBytes);
      let size = 1024;
      /** @type {{ name: string, type: string, mode: number, linkName: string, data: string }[]} */
      const entries = [];
      /** @param {string} dir @param {string} prefix */
      const walk = (dir, prefix) => {
        for (const name of fs.readdirSync(dir).sort()) {
          const host = posix.join(dir, name);
          const st = fs.lstatSync(host);
          const stored = prefix ? `${prefix}/${name}` : name;
          size += 512;
          if (st.isDirectory()) {
            entries.push({
              name: stored,
              type: "directory",
              mode: st.mode & 0o7777,
              linkName: "",
              data: "",
            });
            walk(host, stored);
          } else if (st.isSymbolicLink()) {
            entries.push({
              name: stored,
              type: "symlink",
              mode: 0o777,
              linkName: fs.readlinkSync(host),
              data: "",
            });
          } else if (st.isFile()) {
            size += Math.ceil(st.size / 512) * 512;
            if (size > max) break;
            entries.push({
              name: stored,
              type: "file",
              mode: st.mode & 0o7777,
              linkName: "",
              data: fs.readFileSync(host).toString("base64"),
            });
          }
          if (size > max)
            throw new FileError(
              "failed",
              `the archive of ${guestPath} is larger than ${max} bytes`,
              {
                path: guestPath,
                limitBytes: max,
                tooLarge: true,
              },
            );
        }
      };
      walk(root, "");
      return entries;
    }
    case "import": {
      // Entries already checked by the backend (no absolute names, no `..`, links inside);
      // each one's real parent is confined again, so a link an earlier entry made cannot
      // carry a later one out.
      const prefix = guestPath.replace(/\/+$/, "");
      const root = confine(prefix, true);
      chargeDisk(
        disk,
        root,
        (request.entries ?? []).reduce((sum, entry) => sum + (entry.data.length * 3) / 4, 0),
      );
      fs.mkdirSync(root, { recursive: true });
      for (const entry of request.entries ?? []) {
        const target = confine(`${prefix}/${entry.name}`, entry.type === "directory");
        if (entry.type === "directory") fs.mkdirSync(target, { recursive: true, mode: entry.mode });
        else {
          fs.mkdirSync(posix.dirname(target), { recursive: true });
          fs.rmSync(target, { force: true, recursive: false });
          if (entry.type === "symlink") fs.symlinkSync(entry.linkName, target);
          else
            fs.writeFileSync(target, Buffer.from(entry.data, "base64"), {
              mode: entry.mode & 0o777,
            });
        }
      }
      return null;
    }
    default:
      throw new FileError("failed", `unknown file operation ${request.op}`);
  }
}

/** The engine side: loads the interpreter once, then runs each exec it is sent. */
async function runEngine() {
  const { language, assets, snapshot, flag, disk, http, answerPort } = workerData;
  const port = /** @type {import("node:worker_threads").MessagePort} */ (parentPort);
  const httpCall = httpCaller(port, answerPort, http, flag);
  /** @param {"stdout" | "stderr"} stream @param {Uint8Array} bytes */
  const emit = (stream, bytes) => {
    if (bytes.length > 0)
      port.postMessage({ type: "output", stream, data: Buffer.from(bytes).toString("base64") });
  };
  const started = Date.now();
  let quiet = true;
  /** @type {typeof emit} */
  const output = (stream, bytes) => void (quiet || emit(stream, bytes));
  const engine =
    language === "python"
      ? await loadPython(assets, snapshot, flag, disk, output, httpCall)
      : await loadJs(flag, disk, output, httpCall);
  // A few throwaway execs before `ready` compile the engine's hot paths (wasm tiers up lazily),
  // so a shell's first exec runs as fast as its later ones.
  for (let i = 0; i < WARM_UP_EXECS; i += 1)
    engine.run({
      type: "exec",
      id: 0,
      mode: "code",
      source: language === "python" ? "pass" : "0",
      argv: [],
      env: {},
      cwd: "/workspace",
      stdin: null,
    });
  quiet = false;
  port.postMessage({
    type: "ready",
    loadMs: Date.now() - started,
    fromSnapshot: startedFromSnapshot,
  });
  port.on("message", (request) => {
    if (request.type === "turn") {
      /** @type {TurnAnswer} */
      let answer;
      try {
        answer = engine.turn(request.code, request.env ?? {}, request.fresh === true);
      } catch (error) {
        const text = String(/** @type {Error} */ (error)?.stack ?? error);
        answer = { value: null, error: { name: "InternalError", message: text, traceback: text } };
      }
      port.postMessage({ type: "done", id: request.id, exitCode: 0, answer });
      return;
    }
    if (request.type !== "exec") return;
    const refusedBefore = Atomics.load(disk, REFUSED);
    let exitCode;
    try {
      exitCode = engine.run(request);
    } catch (error) {
      emit("stderr", Buffer.from(`${String(/** @type {Error} */ (error)?.stack ?? error)}\n`));
      exitCode = 1;
    }
    if ("usable" in engine && !engine.usable()) {
      // An interpreter that failed fatally cannot run anything more: this worker ends, and the
      // backend starts a fresh one for the shell's next request.
      emit(
        "stderr",
        Buffer.from("the interpreter failed fatally; the next exec starts a fresh one\n"),
      );
      process.exit(70);
    }
    const diskFull = Atomics.load(disk, REFUSED) !== refusedBefore;
    port.postMessage({ type: "done", id: request.id, exitCode, ...(diskFull ? { diskFull } : {}) });
  });
}

/**
 * @typedef {{ method: string, url: string, headers: Record<string, string>, body: string | null }} HttpRequest
 * @typedef {{ ok: true, status: number, statusText: string, headers: Record<string, string>,
 *   body: string } | { ok: false, error: string }} HttpAnswer
 */

/**
 * The engine thread's synchronous HTTP call: posts the request (bodies in base64) to the main
 * thread and blocks until its answer comes back on `answerPort`, or the guest is interrupted.
 * Answers to requests given up on (interrupted) are skipped by their ids.
 * @param {import("node:worker_threads").MessagePort} port
 * @param {import("node:worker_threads").MessagePort} answerPort
 * @param {Int32Array} signal
 * @param {Int32Array} flag
 * @returns {(request: HttpRequest) => HttpAnswer}
 */
function httpCaller(port, answerPort, signal, flag) {
  let last = 0;
  return (request) => {
    const id = ++last;
    Atomics.store(signal, 0, 0);
    port.postMessage({ type: "http", id, request });
    for (;;) {
      Atomics.wait(signal, 0, 0, 50);
      if (Atomics.load(signal, 0) !== 0) {
        Atomics.store(signal, 0, 0);
        for (let m = receiveMessageOnPort(answerPort); m; m = receiveMessageOnPort(answerPort))
          if (m.message.id === id) return m.message.answer;
      }
      if (Atomics.load(flag, 0) !== 0) return { ok: false, error: "interrupted" };
    }
  };
}

/** Whether this worker's Pyodide started from the backend's memory snapshot (reported at `ready`). */
let startedFromSnapshot = false;

/**
 * The snapshot's bytes, or undefined when it cannot be read.
 * @param {string} file
 */
function readSnapshot(file) {
  try {
    return fs.readFileSync(file);
  } catch {
    return undefined;
  }
}

/**
 * Pyodide with the shell's `/workspace` mounted through NODEFS. Each exec runs in fresh globals
 * (like a new `python3` process), with its argv, env, cwd and stdin.
 * @param {string} assets
 * @param {string | undefined} snapshot
 * @param {Int32Array} flag
 * @param {BigInt64Array} disk
 * @param {(stream: "stdout" | "stderr", bytes: Uint8Array) => void} emit
 * @param {(request: HttpRequest) => HttpAnswer} httpCall
 */
async function loadPython(assets, snapshot, flag, disk, emit, httpCall) {
  const { loadPyodide } = await import("pyodide");
  const options = pythonLoadOptions(`${assets}/pyodide`);
  // From the memory snapshot when the backend gave one (it was made with these same options);
  // a snapshot that cannot be read or loaded costs only the full start-up.
  let image = snapshot ? readSnapshot(snapshot) : undefined;
  let pyodide;
  if (image)
    try {
      pyodide = await loadPyodide({ ...options, _loadSnapshot: image });
      startedFromSnapshot = true;
      // Pyodide keeps its load options for its life: the image (~30 MB) would stay with them.
      // Dropped, and collected now (the jail starts node with --expose-gc).
      delete pyodide._api.config._loadSnapshot;
      image = undefined;
      globalThis.gc?.();
    } catch {
      pyodide = undefined;
    }
  pyodide ??= await loadPyodide(options);
  // Through a view whose clear cannot overwrite an interrupt stored meanwhile (see interrupt-buffer).
  pyodide.setInterruptBuffer(/** @type {any} */ (interruptBuffer(flag)));
  pyodide.setStdout({ write: (/** @type {Uint8Array} */ b) => (emit("stdout", b), b.length) });
  pyodide.setStderr({ write: (/** @type {Uint8Array} */ b) => (emit("stderr", b), b.length) });
  pyodide.FS.mkdirTree("/workspace");
  pyodide.FS.mount(pyodide.FS.filesystems.NODEFS, { root: "/workspace" }, "/workspace");
  // The jail's private /tmp, the one QuickJS and file requests see too.
  pyodide.FS.mount(pyodide.FS.filesystems.NODEFS, { root: "/tmp" }, "/tmp");
  quotaPython(pyodide, disk);
  // Emscripten's sockets are WebSockets through the `ws` package, which the jail does not hold:
  // its `listen` and `connect` would throw a JavaScript error that fails Pyodide for good. The
  // guest gets the errno a host without a network gives instead.
  const sockets = pyodide._module.SOCKFS.websocket_sock_ops;
  sockets.listen = () => {
    throw new pyodide.FS.ErrnoError(pyodide.ERRNO_CODES.EACCES);
  };
  sockets.connect = () => {
    throw new pyodide.FS.ErrnoError(pyodide.ERRNO_CODES.ENETUNREACH);
  };
  pyodide.registerJsModule("_shells_http", {
    request: (/** @type {string} */ json) => JSON.stringify(httpCall(JSON.parse(json))),
  });
  pyodide.runPython(PYTHON_RUNNER);
  pyodide.runPython(PYTHON_HTTP);
  const runner = pyodide.globals.get("_shells_run");
  const turner = pyodide.globals.get("_shells_turn");
  /** @type {(request: ExecRequest) => number} */
  const run = (request) => {
    let stdin = request.stdin ? Buffer.from(request.stdin, "base64") : null;
    pyodide.setStdin({
      stdin: () => {
        const chunk = stdin;
        stdin = null;
        return chunk ?? null;
      },
      isatty: false,
    });
    const env = pyodide.toPy(request.env);
    const argv = pyodide.toPy(request.argv);
    try {
      return Number(runner(request.mode, request.source, argv, env, request.cwd));
    } finally {
      env.destroy();
      argv.destroy();
      Atomics.store(flag, 0, 0);
    }
  };
  /** @type {(code: string, env: Record<string, string>, fresh: boolean) => TurnAnswer} */
  const turn = (code, _env, fresh) => {
    pyodide.setStdin({ stdin: () => null, isatty: false });
    try {
      return JSON.parse(String(turner(code, fresh)));
    } finally {
      Atomics.store(flag, 0, 0);
    }
  };
  /** False once Pyodide failed fatally: its API then throws on every use. */
  const usable = () => {
    try {
      return typeof pyodide.setStdin === "function";
    } catch {
      return false;
    }
  };
  return { run, turn, usable };
}

/**
 * Puts Pyodide's writes to `/workspace` under the disk quota: NODEFS's `write` and size changes
 * (truncate up) are charged for what they grow a file by, and refused with ENOSPC (Python's
 * `OSError: [Errno 28] No space left on device`) when the quota has no room.
 * @param {any} pyodide @param {BigInt64Array} disk
 */
function quotaPython(pyodide, disk) {
  const { FS } = pyodide;
  const NODEFS = FS.filesystems.NODEFS;
  const ENOSPC = pyodide.ERRNO_CODES.ENOSPC;
  /** @param {() => void} charge */
  const guarded = (charge) => {
    try {
      charge();
    } catch (error) {
      if (/** @type {NodeJS.ErrnoException} */ (error)?.code === "ENOSPC")
        throw new FS.ErrnoError(ENOSPC);
      throw error;
    }
  };
  const write = NODEFS.stream_ops.write;
  NODEFS.stream_ops.write = (
    /** @type {any} */ stream,
    /** @type {Uint8Array} */ buffer,
    /** @type {number} */ offset,
    /** @type {number} */ length,
    /** @type {number} */ position,
  ) => {
    const path = NODEFS.realPath(stream.node);
    guarded(() => chargeDisk(disk, path, position + length - fs.fstatSync(stream.nfd).size));
    return write(stream, buffer, offset, length, position);
  };
  const setattr = NODEFS.node_ops.setattr;
  NODEFS.node_ops.setattr = (/** @type {any} */ node, /** @type {any} */ attr) => {
    if (attr.size != null) {
      const path = NODEFS.realPath(node);
      guarded(() => chargeDisk(disk, path, attr.size - sizeOf(path)));
    }
    return setattr(node, attr);
  };
}

/** Runs one exec in fresh globals and returns its exit code, as `python3` would. */
/**
 * \`urllib.request\` over the HTTP bridge: one handler serves http and https URLs (environment
 * proxies are ignored: the bridge always goes through the shell's egress proxy). Installed once;
 * \`sys.modules\` stays warm across execs, so every exec's \`urlopen\` uses it.
 */
const PYTHON_HTTP = `
import base64 as _b64, email.message as _em, io as _io, json as _json
import urllib.error as _ue, urllib.request as _ur, urllib.response as _uresp
import _shells_http

class _ShellsHTTPHandler(_ur.BaseHandler):
    handler_order = 100

    def _open(self, req):
        data = req.data
        if isinstance(data, str):
            data = data.encode()
        elif data is not None and not isinstance(data, (bytes, bytearray)):
            data = b"".join(data)
        answer = _json.loads(_shells_http.request(_json.dumps({
            "method": req.get_method(),
            "url": req.full_url,
            "headers": dict(req.header_items()),
            "body": None if data is None else _b64.b64encode(bytes(data)).decode(),
        })))
        if not answer["ok"]:
            raise _ue.URLError(answer["error"])
        headers = _em.Message()
        for name, value in answer["headers"].items():
            headers[name] = value
        body = _io.BytesIO(_b64.b64decode(answer["body"]))
        response = _uresp.addinfourl(body, headers, req.full_url, answer["status"])
        response.msg = answer["statusText"]
        return response

    http_open = _open
    https_open = _open

_ur.install_opener(_ur.build_opener(_ur.ProxyHandler({}), _ShellsHTTPHandler()))
del _ShellsHTTPHandler
`;

const PYTHON_RUNNER = `
import os, sys, traceback

def _shells_run(mode, source, argv, env, cwd):
    os.environ.clear()
    os.environ.update(env)
    sys.argv = list(argv)
    scope = {"__name__": "__main__", "__builtins__": __builtins__}
    status = 0
    try:
        os.chdir(cwd)
        if mode == "file":
            scope["__file__"] = source
            sys.path[0:1] = [os.path.dirname(os.path.abspath(source))]
            with open(source) as f:
                code = compile(f.read(), source, "exec")
        else:
            sys.path[0:1] = [""]
            code = compile(source, "<string>", "exec")
        exec(code, scope)
    except SystemExit as e:
        if e.code is None:
            status = 0
        elif isinstance(e.code, int):
            status = e.code
        else:
            print(e.code, file=sys.stderr)
            status = 1
    except KeyboardInterrupt:
        traceback.print_exc()
        status = ${INTERRUPTED}
    except BaseException:
        traceback.print_exc()
        status = 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
    return status

# Interpreter turns share one namespace for the worker's life, apart from the execs' fresh ones.
_shells_turn_scope = None

def _shells_turn(code, renew=False):
    import ast, json
    global _shells_turn_scope
    if renew:
        _shells_turn_scope = None
    fresh = _shells_turn_scope is None
    if fresh:
        _shells_turn_scope = {"__name__": "__main__", "__builtins__": __builtins__}
    scope = _shells_turn_scope
    value, error = None, None
    try:
        tree = ast.parse(code, "<turn>", "exec")
        last = None
        if tree.body and isinstance(tree.body[-1], ast.Expr):
            last = ast.Expression(tree.body.pop().value)
        exec(compile(tree, "<turn>", "exec"), scope)
        if last is not None:
            result = eval(compile(last, "<turn>", "eval"), scope)
            if result is not None:
                try:
                    json.dumps(result)
                    value = result
                except Exception:
                    value = repr(result)
    except BaseException as e:
        error = {"name": type(e).__name__, "message": str(e), "traceback": traceback.format_exc()}
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
    return json.dumps({"value": value, "error": error, "fresh": fresh})
`;

/**
 * QuickJS. One runtime stays warm for the worker's execs and each exec gets a fresh context in it,
 * so one exec's globals never leak into the next; the runtime is replaced after an exec that was
 * interrupted or left jobs pending, so nothing of it can run later. Interpreter turns use their own
 * runtime and one context kept for the worker's life. The guest sees `console`, a small `process`
 * (argv, env, cwd, exit, stdout/stderr.write) and `require("fs")` with a few synchronous calls on
 * files under `/workspace` and `/tmp`; stdin reads as `require("fs").readFileSync(0)`. Nothing
 * else of Node is there: no sockets, no processes, no modules. A \`fetch\` global carries HTTP
 * requests over the host's bridge (see httpCaller).
 * @param {Int32Array} flag
 * @param {BigInt64Array} disk
 * @param {(stream: "stdout" | "stderr", bytes: Uint8Array) => void} emit
 * @param {(request: HttpRequest) => HttpAnswer} httpCall
 */
async function loadJs(flag, disk, emit, httpCall) {
  const { newQuickJSWASMModuleFromVariant } = await import("quickjs-emscripten-core");
  const variant = (await import("@jitl/quickjs-wasmfile-release-sync")).default;
  const QuickJS = await newQuickJSWASMModuleFromVariant(variant);
  const fs = await import("node:fs");
  const path = await import("node:path");
  const EXIT = "\u0000shells-exit";
  const interrupted = () => Atomics.load(flag, 0) !== 0;
  const newRuntime = () => {
    const runtime = QuickJS.newRuntime();
    runtime.setInterruptHandler(interrupted);
    return runtime;
  };

  /**
   * Gives a context its guest globals over host functions that read and write `state` (the
   * program's cwd, stdin and exit code).
   * @param {import("quickjs-emscripten-core").QuickJSContext} ctx
   * @param {{ cwd: string, stdin: Buffer, exitCode: number | null }} state
   * @param {{ argv: string[], env: Record<string, string> }} init
   */
  const install = (ctx, state, init) => {
    const resolve = (/** @type {string} */ p) => resolveGuestPath(state.cwd, p);
    const host = ctx.newObject();
    /** Binds a host function: guest values in, a JSON-able value out, errors as guest errors. */
    const bind = (/** @type {string} */ name, /** @type {(...args: any[]) => unknown} */ fn) => {
      const handle = ctx.newFunction(name, (/** @type {any[]} */ ...handles) => {
        const args = handles.map((h) => ctx.dump(h));
        try {
          const value = fn(...args);
          if (value === undefined) return ctx.undefined;
          return ctx.unwrapResult(ctx.evalCode(`(${JSON.stringify(value)})`));
        } catch (error) {
          return { error: ctx.newError(String(/** @type {Error} */ (error)?.message ?? error)) };
        }
      });
      ctx.setProp(host, name, handle);
      handle.dispose();
    };
    bind("write", (stream, text) =>
      emit(stream === 2 ? "stderr" : "stdout", Buffer.from(String(text))),
    );
    bind("exit", (code) => {
      state.exitCode = Number(code ?? 0) | 0;
      throw new Error(EXIT);
    });
    bind("http", (method, url, headers, body) => {
      const answer = httpCall({
        method: String(method ?? "GET"),
        url: String(url),
        headers: headers && typeof headers === "object" ? headers : {},
        body: body == null ? null : Buffer.from(String(body)).toString("base64"),
      });
      if (!answer.ok) throw new Error(answer.error);
      return { ...answer, body: Buffer.from(answer.body, "base64").toString("utf8") };
    });
    bind("cwd", () => state.cwd);
    bind("chdir", (p) => void (state.cwd = resolve(p)));
    bind("readFile", (p) =>
      p === 0 ? state.stdin.toString("utf8") : fs.readFileSync(resolve(p), "utf8"),
    );
    bind("writeFile", (p, data) => {
      const file = resolve(p);
      const bytes = Buffer.from(String(data));
      chargeDisk(disk, file, bytes.length - sizeOf(file));
      fs.writeFileSync(file, bytes);
    });
    bind("appendFile", (p, data) => {
      const file = resolve(p);
      const bytes = Buffer.from(String(data));
      chargeDisk(disk, file, bytes.length);
      fs.appendFileSync(file, bytes);
    });
    bind("exists", (p) => {
      try {
        return fs.existsSync(resolve(p));
      } catch {
        return false;
      }
    });
    bind("readdir", (p) => fs.readdirSync(resolve(p)));
    bind(
      "mkdir",
      (p, recursive) => void fs.mkdirSync(resolve(p), { recursive: Boolean(recursive) }),
    );
    bind("unlink", (p) => fs.unlinkSync(resolve(p)));
    bind("rm", (p, recursive) =>
      fs.rmSync(resolve(p), { recursive: Boolean(recursive), force: false }),
    );
    ctx.setProp(ctx.global, "__host", host);
    host.dispose();
    ctx
      .unwrapResult(
        ctx.evalCode(`${JS_PRELUDE}\n;__prelude(${JSON.stringify(init)});`, "prelude.js"),
      )
      .dispose();
  };

  /** Resolves a guest path against its cwd; only `/workspace` and `/tmp` are reachable. */
  const resolveGuestPath = (/** @type {string} */ cwd, /** @type {string} */ p) => {
    const full = path.resolve(cwd, p);
    if (!/^\/(workspace|tmp)(\/|$)/.test(full))
      throw new Error(
        `EACCES: permission denied, '${full}' (wasm shells see only /workspace and /tmp)`,
      );
    return full;
  };

  let runtime = newRuntime();
  /** @type {(request: ExecRequest) => number} */
  const run = (request) => {
    const ctx = runtime.newContext();
    const state = {
      cwd: request.cwd,
      stdin: request.stdin ? Buffer.from(request.stdin, "base64") : Buffer.alloc(0),
      /** @type {number | null} */ exitCode: null,
    };
    /** @type {number} */
    let status = 0;
    let abandoned = false;
    try {
      install(ctx, state, { argv: request.argv, env: request.env });
      const filename =
        request.mode === "file" ? resolveGuestPath(state.cwd, request.source) : "[eval]";
      const source = request.mode === "file" ? fs.readFileSync(filename, "utf8") : request.source;
      // Preloaded scripts run first, each in its own function scope as Node's modules do.
      for (const preload of request.preload ?? []) {
        const file = resolveGuestPath(state.cwd, preload);
        ctx
          .unwrapResult(
            ctx.evalCode(`(function () {\n${fs.readFileSync(file, "utf8")}\n})();`, file),
          )
          .dispose();
      }
      const result = ctx.evalCode(source, filename);
      if (result.error) {
        const error = ctx.dump(result.error);
        result.error.dispose();
        if (state.exitCode !== null) status = state.exitCode;
        else if (interrupted()) {
          emit("stderr", Buffer.from("Interrupted\n"));
          status = INTERRUPTED;
          abandoned = true;
        } else {
          const text =
            error && typeof error === "object"
              ? `${error.name ?? "Error"}: ${error.message ?? ""}\n${error.stack ?? ""}`
              : `Uncaught ${String(error)}`;
          emit("stderr", Buffer.from(`${text.trimEnd()}\n`));
          status = 1;
        }
      } else {
        result.value.dispose();
        // Pending jobs (resolved promises) run to completion, as Node drains its microtasks.
        const jobs = runtime.executePendingJobs();
        if (jobs.error) {
          const error = ctx.dump(jobs.error);
          jobs.error.dispose();
          if (state.exitCode !== null) status = state.exitCode;
          else {
            emit("stderr", Buffer.from(`Uncaught ${JSON.stringify(error)}\n`));
            status = 1;
          }
        }
      }
    } catch (error) {
      emit("stderr", Buffer.from(`${String(/** @type {Error} */ (error)?.message ?? error)}\n`));
      status = 1;
    } finally {
      ctx.dispose();
      if (abandoned || interrupted() || runtime.hasPendingJob()) {
        runtime.dispose();
        runtime = newRuntime();
      }
      Atomics.store(flag, 0, 0);
    }
    return status;
  };

  /** @type {{ runtime: import("quickjs-emscripten-core").QuickJSRuntime, ctx: import("quickjs-emscripten-core").QuickJSContext, format: import("quickjs-emscripten-core").QuickJSHandle } | null} */
  let turns = null;
  /** @type {(code: string, env: Record<string, string>, renew: boolean) => TurnAnswer} */
  const turn = (code, env, renew) => {
    if (renew && turns) {
      turns.format.dispose();
      turns.ctx.dispose();
      turns.runtime.dispose();
      turns = null;
    }
    const fresh = turns === null;
    if (!turns) {
      const turnRuntime = newRuntime();
      const ctx = turnRuntime.newContext();
      install(
        ctx,
        { cwd: "/workspace", stdin: Buffer.alloc(0), exitCode: null },
        { argv: ["node"], env },
      );
      // JSON when the value serialises, otherwise its String() form, as the container driver does.
      const format = ctx.unwrapResult(
        ctx.evalCode(
          "(v) => { try { const s = JSON.stringify(v); if (s !== undefined) return s; } catch {} return JSON.stringify(String(v)); }",
          "format.js",
        ),
      );
      turns = { runtime: turnRuntime, ctx, format };
    }
    const { ctx, runtime: turnRuntime, format } = turns;
    /** @param {import("quickjs-emscripten-core").QuickJSHandle} handle */
    const failure = (handle) => {
      const error = ctx.dump(handle);
      handle.dispose();
      if (error && typeof error === "object")
        return {
          name: String(error.name ?? "Error"),
          message: String(error.message ?? ""),
          traceback:
            `${error.name ?? "Error"}: ${error.message ?? ""}\n${error.stack ?? ""}`.trimEnd(),
        };
      return { name: "Error", message: String(error), traceback: `Uncaught ${String(error)}` };
    };
    try {
      const result = ctx.evalCode(code, "turn.js");
      if (result.error) return { value: null, error: failure(result.error), fresh };
      let handle = result.value;
      const jobs = turnRuntime.executePendingJobs();
      if (jobs.error) {
        handle.dispose();
        return { value: null, error: failure(jobs.error), fresh };
      }
      const settled = ctx.getPromiseState(handle);
      if (settled.type === "rejected") {
        handle.dispose();
        return { value: null, error: failure(settled.error), fresh };
      }
      if (settled.type === "fulfilled" && !settled.notAPromise) {
        handle.dispose();
        handle = settled.value;
      }
      const shown = ctx.callFunction(format, ctx.undefined, handle);
      handle.dispose();
      if (shown.error) return { value: null, error: failure(shown.error), fresh };
      const text = ctx.dump(shown.value);
      shown.value.dispose();
      return { value: typeof text === "string" ? JSON.parse(text) : null, error: null, fresh };
    } finally {
      Atomics.store(flag, 0, 0);
    }
  };

  return { run, turn };
}

/** Guest-side globals built over the `__host` functions. */
const JS_PRELUDE = `
function __prelude(init) {
  const host = globalThis.__host;
  delete globalThis.__host;
  const show = (v) => typeof v === "string" ? v : (() => { try { return JSON.stringify(v); } catch { return String(v); } })();
  const line = (args) => args.map(show).join(" ") + "\\n";
  globalThis.console = {
    log: (...a) => host.write(1, line(a)), info: (...a) => host.write(1, line(a)),
    error: (...a) => host.write(2, line(a)), warn: (...a) => host.write(2, line(a)),
  };
  const fs = {
    readFileSync: (p) => host.readFile(p), writeFileSync: (p, d) => host.writeFile(p, d),
    appendFileSync: (p, d) => host.appendFile(p, d), existsSync: (p) => host.exists(p),
    readdirSync: (p) => host.readdir(p), mkdirSync: (p, o) => host.mkdir(p, !!(o && o.recursive)),
    unlinkSync: (p) => host.unlink(p), rmSync: (p, o) => host.rm(p, !!(o && o.recursive)),
  };
  globalThis.process = {
    argv: init.argv, env: init.env, platform: "wasm",
    cwd: () => host.cwd(), chdir: (p) => host.chdir(p), exit: (c) => host.exit(c),
    stdout: { write: (s) => (host.write(1, String(s)), true) },
    stderr: { write: (s) => (host.write(2, String(s)), true) },
  };
  // fetch over the host's HTTP bridge (to the shell's egress proxy): the answer is read whole.
  globalThis.fetch = (input, init) => new Promise((resolve, reject) => {
    const o = init || {};
    const url = String(input);
    let r;
    try {
      r = host.http(o.method || "GET", url, o.headers || {}, o.body == null ? null : String(o.body));
    } catch (e) {
      reject(new TypeError("fetch failed: " + e.message));
      return;
    }
    const h = r.headers;
    const headers = {
      get: (n) => { const v = h[String(n).toLowerCase()]; return v === undefined ? null : v; },
      has: (n) => String(n).toLowerCase() in h,
      entries: () => Object.entries(h)[Symbol.iterator](),
      forEach: (f) => Object.entries(h).forEach(([k, v]) => f(v, k)),
    };
    resolve({
      ok: r.status >= 200 && r.status < 300, status: r.status, statusText: r.statusText, url, headers,
      text: () => Promise.resolve(r.body), json: () => Promise.resolve().then(() => JSON.parse(r.body)),
    });
  });
  globalThis.require = (name) => {
    if (name === "fs" || name === "node:fs") return fs;
    throw new Error("Cannot find module '" + name + "' (wasm shells offer only fs)");
  };
}
`;

/**
 * @typedef {{ value: unknown, error: { name: string, message: string, traceback: string } | null,
 *   fresh?: boolean }} TurnAnswer
 */

/**
 * @typedef {{ type: "exec", id: number, mode: "code" | "file", source: string, argv: string[],
 *   env: Record<string, string>, cwd: string, stdin: string | null, preload?: string[] }} ExecRequest
 */

// Last, so every constant above is initialised before either side starts.
if (isMainThread) runMain();
else await runEngine();
