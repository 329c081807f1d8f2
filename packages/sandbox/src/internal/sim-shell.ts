import type { KillReason } from "@shells/contract";
import { posix } from "node:path";

/** The simulator's model of a shell's filesystem state: file contents (or sizes) and directories. */
export interface SimFs {
  /** File contents as model strings (one byte per character). */
  files: Map<string, { content: string; size: number }>;
  dirs: Set<string>;
}

/**
 * The model works on bytes: every string inside it holds one byte per character (latin1), so
 * binary stdin and files survive exactly. These convert at its edges.
 */
export function toModel(value: string | Uint8Array): string {
  return typeof value === "string"
    ? Buffer.from(value, "utf8").toString("latin1")
    : Buffer.from(value).toString("latin1");
}

/** The bytes a model string stands for. */
export function fromModel(value: string): Uint8Array {
  return new Uint8Array(Buffer.from(value, "latin1"));
}

/** A model string as UTF-8 text. */
export function textOf(value: string): string {
  return Buffer.from(value, "latin1").toString("utf8");
}

/** Everything one modeled exec sees. */
export interface SimRun {
  argv: string[];
  env: Record<string, string>;
  cwd: string;
  stdin: string;
  fs: SimFs;
  limits: { memoryBytes: number; pids: number; diskBytes: number; diskUsed: () => number };
  /** `performance.now()` value after which the exec is killed with `wall_clock`. */
  deadline: number;
  /** Aborted (with a KillReason) when the sandbox stops or is destroyed. */
  signal: AbortSignal;
  /** Receives each statement's output as the statement ends, so a sequence streams like a real shell. */
  emit?: (stream: "stdout" | "stderr", text: string) => Promise<void>;
}

/** What a modeled exec produced. */
export interface SimOutcome {
  exitCode: number;
  stdout: string;
  stderr: string;
  killReason?: KillReason;
}

/** Thrown inside the model when the modeled kernel would kill the whole exec. */
class Killed extends Error {
  constructor(
    readonly reason: KillReason,
    message?: string,
  ) {
    super(message ?? reason);
  }
}

class Exit extends Error {
  constructor(readonly code: number) {
    super(`exit ${code}`);
  }
}

interface Redirect {
  fd: 1 | 2;
  op: ">" | ">>" | ">&";
  target: string;
}
interface Command {
  argv: string[];
  redirects: Redirect[];
}
interface Statement {
  pipeline: Command[];
  /** How this statement relates to the next: run always, only on success, only on failure. */
  then: ";" | "&&" | "||";
  background: boolean;
}
interface Io {
  stdout: string;
  stderr: string;
  code: number;
}

const FORK_BOMB = /([A-Za-z_]\w*|:)\s*\(\)\s*\{\s*\1\s*\|\s*\1\s*&\s*;?\s*\}/;
const SIGKILL_EXIT = 137;

/** Splits a script into words and operators, expanding `$VAR` outside single quotes. */
function tokenize(script: string, env: Record<string, string>): string[] {
  const tokens: string[] = [];
  let word: string | null = null;
  const push = () => {
    if (word !== null) tokens.push(word);
    word = null;
  };
  const expand = (s: string, i: number): [string, number] => {
    const braced = /^\$\{([A-Za-z_]\w*)\}/.exec(s.slice(i));
    if (braced) return [env[braced[1] ?? ""] ?? "", i + braced[0].length];
    const plain = /^\$([A-Za-z_]\w*|\?)/.exec(s.slice(i));
    if (plain) return [env[plain[1] ?? ""] ?? "", i + plain[0].length];
    return ["$", i + 1];
  };
  let i = 0;
  while (i < script.length) {
    const c = script[i] ?? "";
    const rest = script.slice(i);
    if (c === "'") {
      const end = script.indexOf("'", i + 1);
      const stop = end === -1 ? script.length : end;
      word = (word ?? "") + script.slice(i + 1, stop);
      i = stop + 1;
    } else if (c === '"') {
      word = word ?? "";
      i += 1;
      while (i < script.length && script[i] !== '"') {
        if (script[i] === "\\" && i + 1 < script.length) {
          word += script[i + 1];
          i += 2;
        } else if (script[i] === "$") {
          const [value, next] = expand(script, i);
          word += value;
          i = next;
        } else {
          word += script[i];
          i += 1;
        }
      }
      i += 1;
    } else if (c === "$") {
      const [value, next] = expand(script, i);
      word = (word ?? "") + value;
      i = next;
    } else if (c === "\\" && i + 1 < script.length) {
      word = (word ?? "") + script[i + 1];
      i += 2;
    } else if (/\s/.test(c) && c !== "\n") {
      push();
      i += 1;
    } else {
      const op = ["2>&1", ">&2", "2>>", "2>", ">>", "&&", "||", ">", "|", "&", ";", "\n"].find(
        (o) => rest.startsWith(o),
      );
      if (op) {
        push();
        tokens.push(op === "\n" ? ";" : op);
        i += op.length;
      } else {
        word = (word ?? "") + c;
        i += 1;
      }
    }
  }
  push();
  return tokens;
}

function parse(tokens: string[]): Statement[] {
  const statements: Statement[] = [];
  let pipeline: Command[] = [];
  let command: Command = { argv: [], redirects: [] };
  const endCommand = () => {
    if (command.argv.length > 0) pipeline.push(command);
    command = { argv: [], redirects: [] };
  };
  const endStatement = (then: Statement["then"], background: boolean) => {
    endCommand();
    if (pipeline.length > 0) statements.push({ pipeline, then, background });
    pipeline = [];
  };
  for (let i = 0; i < tokens.length; i += 1) {
    const token = tokens[i] ?? "";
    switch (token) {
      case "|":
        endCommand();
        break;
      case ";":
      case "&&":
      case "||":
        endStatement(token, false);
        break;
      case "&":
        endStatement(";", true);
        break;
      case ">":
      case ">>":
      case "2>":
      case "2>>":
        command.redirects.push({
          fd: token.startsWith("2") ? 2 : 1,
          op: token.endsWith(">>") ? ">>" : ">",
          target: tokens[i + 1] ?? "",
        });
        i += 1;
        break;
      case ">&2":
        command.redirects.push({ fd: 1, op: ">&", target: "2" });
        break;
      case "2>&1":
        command.redirects.push({ fd: 2, op: ">&", target: "1" });
        break;
      default:
        command.argv.push(token);
    }
  }
  endStatement(";", false);
  return statements;
}

function sizeArg(value: string): number {
  const match = /^(\d+)([KMG]?)$/i.exec(value);
  if (!match) return Number.NaN;
  const unit = { "": 1, K: 1024, M: 1024 ** 2, G: 1024 ** 3 }[(match[2] ?? "").toUpperCase()] ?? 1;
  return Number(match[1]) * unit;
}

/** True for `sh -c SCRIPT` (and bash): the model interprets the script statement by statement. */
export function isShellScript(argv: readonly string[]): boolean {
  const [program, flag] = argv;
  return (program === "sh" || program === "bash" || program === "/bin/sh") && flag === "-c";
}

/** Interprets one exec against the model. Never runs anything on the host. */
export async function runScript(run: SimRun): Promise<SimOutcome> {
  const [, , script] = run.argv;
  const isShell = isShellScript(run.argv);
  try {
    if (isShell) {
      if (FORK_BOMB.test(script ?? "")) throw new Killed("pids");
      return await runStatements(parse(tokenize(script ?? "", run.env)), run);
    }
    const io = await runPipeline([{ argv: run.argv, redirects: [] }], run, run.stdin);
    return { exitCode: io.code, stdout: io.stdout, stderr: io.stderr };
  } catch (error) {
    if (error instanceof Killed)
      return { exitCode: SIGKILL_EXIT, stdout: "", stderr: "", killReason: error.reason };
    throw error;
  }
}

async function runStatements(statements: Statement[], run: SimRun): Promise<SimOutcome> {
  let stdout = "";
  let stderr = "";
  let code = 0;
  let skip = false;
  for (const statement of statements) {
    if (!skip) {
      if (statement.background) {
        // A background job outlives the exec in a real shell; the model has no processes to keep.
        code = 0;
      } else {
        try {
          const io = await runPipeline(statement.pipeline, run, run.stdin);
          stdout += io.stdout;
          stderr += io.stderr;
          code = io.code;
          if (io.stdout) await run.emit?.("stdout", io.stdout);
          if (io.stderr) await run.emit?.("stderr", io.stderr);
        } catch (error) {
          if (error instanceof Exit) return { exitCode: error.code, stdout, stderr };
          if (error instanceof Killed && error.reason === "disk") {
            return { exitCode: 1, stdout, stderr: stderr + error.message, killReason: "disk" };
          }
          throw error;
        }
      }
    }
    skip = (statement.then === "&&" && code !== 0) || (statement.then === "||" && code === 0);
  }
  return { exitCode: code, stdout, stderr };
}

async function runPipeline(pipeline: Command[], run: SimRun, stdin: string): Promise<Io> {
  const names = pipeline.map((c) => c.argv[0]);
  // A pipe into `tail` from /dev/zero has no newline: tail holds the whole input in memory.
  const zero = pipeline[0]?.argv.join(" ").match(/^head -c (\S+) \/dev\/zero$/);
  if (zero && names[1] === "tail" && sizeArg(zero[1] ?? "") > run.limits.memoryBytes)
    throw new Killed("oom");
  if (names[0] === "yes" && names.length === 1) throw new Killed("output_limit");
  let input = stdin;
  let stderr = "";
  let last: Io = { stdout: "", stderr: "", code: 0 };
  for (const [index, command] of pipeline.entries()) {
    if (command.argv[0] === "yes" && pipeline[index + 1]?.argv[0] === "head") {
      input = "y\n".repeat(Math.ceil(sizeArg(pipeline[index + 1]?.argv[2] ?? "0") / 2) + 1);
      continue;
    }
    last = await runCommand(command, run, input);
    stderr += last.stderr;
    input = last.stdout;
  }
  return { stdout: last.stdout, stderr, code: last.code };
}

async function runCommand(command: Command, run: SimRun, stdin: string): Promise<Io> {
  if (run.signal.aborted) throw new Killed(run.signal.reason as KillReason);
  const io = await builtin(command.argv, run, stdin);
  for (const redirect of command.redirects) {
    const data = redirect.fd === 1 ? io.stdout : io.stderr;
    if (redirect.op === ">&") {
      if (redirect.fd === 1) {
        io.stderr += io.stdout;
        io.stdout = "";
      } else {
        io.stdout += io.stderr;
        io.stderr = "";
      }
      continue;
    }
    if (redirect.target !== "/dev/null") {
      const path = resolve(run, redirect.target);
      const previous = redirect.op === ">>" ? (run.fs.files.get(path)?.content ?? "") : "";
      writeFile(run, path, previous + data);
    }
    if (redirect.fd === 1) io.stdout = "";
    else io.stderr = "";
  }
  return io;
}

function resolve(run: SimRun, path: string): string {
  return posix.resolve(run.cwd, path);
}

function writeFile(run: SimRun, path: string, content: string): void {
  run.fs.files.set(path, { content, size: content.length });
}

function exists(run: SimRun, path: string): boolean {
  return run.fs.files.has(path) || run.fs.dirs.has(path);
}

const ok = (stdout = ""): Io => ({ stdout, stderr: "", code: 0 });
const fail = (stderr: string, code = 1): Io => ({ stdout: "", stderr, code });

async function builtin(argv: string[], run: SimRun, stdin: string): Promise<Io> {
  const [name = "", ...args] = argv;
  switch (name) {
    case "true":
    case ":":
      return ok();
    case "false":
      return fail("");
    case "exit":
      throw new Exit(Number(args[0] ?? 0));
    case "echo": {
      const newline = args[0] !== "-n";
      return ok(`${(newline ? args : args.slice(1)).join(" ")}${newline ? "\n" : ""}`);
    }
    case "printf":
      return ok((args[0] ?? "").replace(/%s/g, () => args[1] ?? "").replace(/\\n/g, "\n"));
    case "pwd":
      return ok(`${run.cwd}\n`);
    case "cd":
      return ok();
    case "id":
      return ok("uid=0(root) gid=0(root) groups=0(root)\n");
    case "printenv": {
      if (args.length === 0)
        return ok(
          Object.entries(run.env)
            .map(([k, v]) => `${k}=${v}\n`)
            .join(""),
        );
      // Like coreutils: print each variable that is set; exit 1 when any is not.
      const values = args.map((name) => run.env[name]);
      const out = values
        .filter((v) => v !== undefined)
        .map((v) => `${v}\n`)
        .join("");
      return { stdout: out, stderr: "", code: values.includes(undefined) ? 1 : 0 };
    }
    case "cat": {
      if (args.length === 0) return ok(stdin);
      let out = "";
      for (const arg of args) {
        const file = run.fs.files.get(resolve(run, arg));
        if (!file)
          return { stdout: out, stderr: `cat: ${arg}: No such file or directory\n`, code: 1 };
        out += file.content;
      }
      return ok(out);
    }
    case "head": {
      if (args[0] === "-c") return ok(stdin.slice(0, sizeArg(args[1] ?? "0")));
      return ok(stdin.split("\n").slice(0, 10).join("\n"));
    }
    case "tail":
      return ok(stdin.split("\n").slice(-10).join("\n"));
    case "wc":
      return ok(`${args[0] === "-c" ? stdin.length : stdin.split("\n").length - 1}\n`);
    case "mkdir":
      for (const arg of args.filter((a) => !a.startsWith("-"))) {
        let dir = resolve(run, arg);
        while (dir !== "/") {
          run.fs.dirs.add(dir);
          dir = posix.dirname(dir);
        }
      }
      return ok();
    case "touch":
      for (const arg of args)
        if (!exists(run, resolve(run, arg))) writeFile(run, resolve(run, arg), "");
      return ok();
    case "rm":
      for (const arg of args.filter((a) => !a.startsWith("-"))) {
        const path = resolve(run, arg);
        run.fs.files.delete(path);
        for (const key of run.fs.files.keys())
          if (key.startsWith(`${path}/`)) run.fs.files.delete(key);
        if (args.some((a) => a.includes("r"))) run.fs.dirs.delete(path);
      }
      return ok();
    case "ls": {
      const dir = resolve(run, args.find((a) => !a.startsWith("-")) ?? ".");
      const children = new Set<string>();
      for (const path of [...run.fs.files.keys(), ...run.fs.dirs]) {
        if (posix.dirname(path) === dir && path !== dir) children.add(posix.basename(path));
      }
      if (!exists(run, dir))
        return fail(`ls: cannot access '${dir}': No such file or directory\n`, 2);
      return ok(
        [...children]
          .sort()
          .map((c) => `${c}\n`)
          .join(""),
      );
    }
    case "test":
    case "[": {
      const [op, arg] = args;
      const path = resolve(run, arg ?? "");
      const result =
        op === "-e"
          ? exists(run, path)
          : op === "-f"
            ? run.fs.files.has(path)
            : op === "-d"
              ? run.fs.dirs.has(path)
              : false;
      return result ? ok() : fail("");
    }
    case "sleep":
      return sleep(Number(args[0] ?? 0) * 1000, run);
    case "dd":
      return dd(args, run);
    default:
      return fail(`simulator: \`${name}\` is not modeled (the simulator runs no code)\n`, 127);
  }
}

async function sleep(ms: number, run: SimRun): Promise<Io> {
  const remaining = run.deadline - performance.now();
  const wait = Math.max(0, Math.min(ms, remaining));
  await new Promise<void>((resolveWait) => {
    const timer = setTimeout(done, wait);
    function done() {
      clearTimeout(timer);
      run.signal.removeEventListener("abort", done);
      resolveWait();
    }
    run.signal.addEventListener("abort", done, { once: true });
  });
  if (run.signal.aborted) throw new Killed(run.signal.reason as KillReason);
  if (ms > remaining) throw new Killed("wall_clock");
  return ok();
}

function dd(args: string[], run: SimRun): Io {
  const opts = Object.fromEntries(args.map((a) => a.split("=") as [string, string]));
  const bytes = sizeArg(opts.bs ?? "512") * Number(opts.count ?? 0);
  const target = opts.of;
  if (!target || opts.if !== "/dev/zero" || !Number.isFinite(bytes)) {
    return fail("simulator: only `dd if=/dev/zero of=PATH bs=N count=N` is modeled\n", 127);
  }
  const path = resolve(run, target);
  const free = run.limits.diskBytes - run.limits.diskUsed() + (run.fs.files.get(path)?.size ?? 0);
  if (bytes > free) {
    run.fs.files.set(path, { content: "", size: Math.max(0, free) });
    throw new Killed("disk", `dd: error writing '${target}': No space left on device\n`);
  }
  run.fs.files.set(path, { content: "", size: bytes });
  return {
    stdout: "",
    stderr: `${Number(opts.count)}+0 records in\n${Number(opts.count)}+0 records out\n`,
    code: 0,
  };
}
