import type { InterpreterResult, RouteBody } from "@shells/contract";
import { NODE_DRIVER, PYTHON_DRIVER, RUNNER_DIR, TURN_MARK } from "@shells/runner";
import type { SandboxProcess } from "@shells/sandbox";
import { AppError } from "../errors.js";
import { actorOf, type Caller } from "../iam/principal.js";
import type { ActivityService } from "../services/activity-service.js";
import { KeyedMutex } from "./keyed-mutex.js";
import type { ShellService } from "./shell-service.js";

/** Limits of warm interpreters. */
export const INTERPRETER_LIMITS = {
  turnTimeoutMs: 60_000,
  idleMs: 10 * 60 * 1000,
  lifetimeMs: 60 * 60 * 1000,
};

type Language = "python" | "node";
type Answer = Omit<InterpreterResult, "restarted" | "durationMs">;

interface Session {
  process: SandboxProcess;
  pending: Map<number, (answer: Answer) => void>;
  /** Output outside the protocol (the driver's own errors, writes straight to fd 1). */
  stray: { stdout: string; stderr: string };
  ended: boolean;
  exitNote: string;
  idle?: NodeJS.Timeout;
  lifetime?: NodeJS.Timeout;
}

const DRIVER: Record<Language, { file: string; source: string; command: string[] }> = {
  python: {
    file: `${RUNNER_DIR}/driver.py`,
    source: PYTHON_DRIVER,
    command: ["python3", "-u", `${RUNNER_DIR}/driver.py`],
  },
  node: {
    file: `${RUNNER_DIR}/driver.cjs`,
    source: NODE_DRIVER,
    command: ["node", `${RUNNER_DIR}/driver.cjs`],
  },
};

function exitedAnswer(session: Session): Answer {
  return {
    stdout: session.stray.stdout,
    stderr: session.stray.stderr,
    value: null,
    error: {
      name: "InterpreterExited",
      message: `The interpreter ended (${session.exitNote || "it did not start"}); its state is gone and the next turn starts a fresh one.`,
      traceback: session.stray.stderr.slice(-8000),
    },
  };
}

/**
 * Code-interpreter turns: one warm interpreter per shell and language, turns in order, a wall
 * clock per turn, an idle TTL and a maximum lifetime. A crashed or timed-out interpreter is
 * replaced by a fresh one on the next turn, and the turn says so — never a hang.
 */
export class InterpreterService {
  readonly #sessions = new Map<string, Session>();
  readonly #order = new KeyedMutex();
  #nextId = 1;

  constructor(
    private readonly shells: ShellService,
    private readonly activity: ActivityService,
  ) {}

  async turn(
    caller: Caller,
    idOrName: string,
    body: RouteBody<"runInterpreter">,
  ): Promise<InterpreterResult> {
    const shell = await this.shells.runningSandbox(caller, idOrName);
    const language =
      body.language ??
      (shell.language === "python" || shell.language === "node" ? shell.language : undefined);
    if (!language) {
      throw new AppError(
        "validation_failed",
        `Shell ${shell.name} is a ${shell.language} shell; say which interpreter: language python or node.`,
      );
    }
    const key = `${shell.shellId}:${language}`;
    return this.#order.run(key, async () => {
      const started = performance.now();
      const timeoutMs = body.timeoutMs ?? INTERPRETER_LIMITS.turnTimeoutMs;
      // Backends whose shells are interpreters run the turn themselves; others host a REPL driver.
      const hosted = await shell.call(async (backend) =>
        backend.interpreterTurn
          ? backend.interpreterTurn(shell.shellId, {
              language,
              code: body.code,
              env: shell.env,
              timeoutMs,
            })
          : null,
      );
      let answer: Answer;
      let restarted: boolean;
      if (hosted) {
        ({ restarted, ...answer } = hosted);
      } else {
        let session = this.#sessions.get(key);
        restarted = !session || session.ended;
        if (!session || session.ended) session = await this.#start(key, shell, language);
        answer = await this.#ask(key, session, body.code, timeoutMs);
        this.#touch(key, session);
      }
      const durationMs = Math.round(performance.now() - started);
      await this.activity.record({
        orgId: caller.orgId,
        actor: actorOf(caller),
        action: "shell.interpreter.turn",
        target: { type: "shell", id: shell.shellId },
        outcome: answer.error ? "failure" : "success",
        details: {
          language,
          codeBytes: Buffer.byteLength(body.code),
          durationMs,
          restarted,
          ...(answer.error ? { error: answer.error.name } : {}),
        },
      });
      return { ...answer, restarted, durationMs };
    });
  }

  /** Ends every interpreter this process holds. */
  close(): void {
    for (const [key, session] of this.#sessions)
      this.#end(key, session, "the server is shutting down");
  }

  async #start(
    key: string,
    shell: Awaited<ReturnType<ShellService["runningSandbox"]>>,
    language: Language,
  ): Promise<Session> {
    const driver = DRIVER[language];
    await shell.call((backend) =>
      backend.files.write(shell.shellId, driver.file, new TextEncoder().encode(driver.source)),
    );
    const session: Session = {
      process: undefined as unknown as SandboxProcess,
      pending: new Map(),
      stray: { stdout: "", stderr: "" },
      ended: false,
      exitNote: "",
    };
    let buffered = "";
    const decoder = { stdout: new TextDecoder(), stderr: new TextDecoder() };
    session.process = await shell.call((backend) =>
      backend.spawn(
        shell.shellId,
        {
          command: driver.command,
          env: { ...shell.env, PYTHONUNBUFFERED: "1" },
          cwd: "/workspace",
        },
        {
          onOutput: (stream, chunk) => {
            const text = decoder[stream].decode(chunk, { stream: true });
            if (stream === "stderr") {
              session.stray.stderr = (session.stray.stderr + text).slice(-64 * 1024);
              return;
            }
            buffered += text;
            let newline: number;
            while ((newline = buffered.indexOf("\n")) >= 0) {
              const line = buffered.slice(0, newline);
              buffered = buffered.slice(newline + 1);
              const at = line.indexOf(TURN_MARK);
              if (at < 0) {
                session.stray.stdout += `${line}\n`;
                continue;
              }
              if (at > 0) session.stray.stdout += line.slice(0, at);
              const answer = JSON.parse(line.slice(at + TURN_MARK.length)) as Answer & {
                id: number;
              };
              const { id, ...rest } = answer;
              session.pending.get(id)?.(rest);
              session.pending.delete(id);
            }
          },
        },
      ),
    );
    void session.process.exit.then((result) => {
      session.ended = true;
      session.exitNote = `exit code ${result.exitCode}${result.killReason ? `, killed: ${result.killReason}` : ""}`;
      for (const resolve of session.pending.values()) resolve(exitedAnswer(session));
      session.pending.clear();
      if (this.#sessions.get(key) === session) this.#sessions.delete(key);
      clearTimeout(session.idle);
      clearTimeout(session.lifetime);
    });
    session.lifetime = setTimeout(
      () => this.#end(key, session, "maximum lifetime reached"),
      INTERPRETER_LIMITS.lifetimeMs,
    );
    session.lifetime.unref();
    this.#sessions.set(key, session);
    return session;
  }

  async #ask(key: string, session: Session, code: string, timeoutMs: number): Promise<Answer> {
    const id = this.#nextId++;
    session.stray = { stdout: "", stderr: "" };
    // An interpreter that ended before this turn was queued answers at once, never by timeout.
    if (session.ended) return exitedAnswer(session);
    const answered = new Promise<Answer>((resolve) => session.pending.set(id, resolve));
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<Answer>((resolve) => {
      timer = setTimeout(() => {
        session.pending.delete(id);
        this.#end(key, session, "turn timed out");
        resolve({
          stdout: session.stray.stdout,
          stderr: session.stray.stderr,
          value: null,
          error: {
            name: "TimeoutError",
            message: `The turn ran past its ${timeoutMs} ms wall clock; the interpreter was stopped and the next turn starts a fresh one.`,
            traceback: "",
          },
        });
      }, timeoutMs);
    });
    await session.process.write(`${JSON.stringify({ id, code })}\n`);
    const answer = await Promise.race([answered, timedOut]);
    clearTimeout(timer);
    return { ...answer, stdout: session.stray.stdout + answer.stdout, stderr: answer.stderr };
  }

  #touch(key: string, session: Session): void {
    clearTimeout(session.idle);
    session.idle = setTimeout(() => this.#end(key, session, "idle"), INTERPRETER_LIMITS.idleMs);
    session.idle.unref();
  }

  #end(key: string, session: Session, why: string): void {
    session.exitNote = why;
    session.ended = true;
    if (this.#sessions.get(key) === session) this.#sessions.delete(key);
    session.process.signal("SIGKILL");
  }
}
