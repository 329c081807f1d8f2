import {
  AGENT_TOOL_ARGUMENTS,
  AgentTool,
  type AgentToolResults,
  type LogEntry,
  type PendingApproval,
  type Shell,
} from "@shells/contract";
import type { Tool, ToolAnnotations } from "@modelcontextprotocol/sdk/types.js";
import { z } from "zod";
import { OUTPUT_LIMIT_CHARS, boundOutput, utf8Bytes } from "./bound-output.js";

/** What each tool answers through the agent gate: the same shape as the REST route it mirrors. */
export type ToolResults = AgentToolResults;

/** A tool's result as a model receives it: a structured value and a short text that says it all. */
export interface RenderedResult {
  structuredContent: Record<string, unknown>;
  text: string;
}

/** One row of the tool table. */
export interface ShellsTool<T extends AgentTool> {
  title: string;
  /** Written for a model: what it does, what it costs, what is destructive, what comes back. */
  description: string;
  annotations: ToolAnnotations;
  /** A sentence per argument, added to the JSON Schema generated from the contract. */
  fields: Partial<Record<keyof z.input<(typeof AGENT_TOOL_ARGUMENTS)[T]>, string>>;
  /** Renders the gate's result, bounded so a huge output cannot flood the model's context. */
  render(result: ToolResults[T]): RenderedResult;
}

/** The tool table. A tool added to the contract's `AgentTool` does not compile until it has a row. */
export type ShellsToolTable = { [T in AgentTool]: ShellsTool<T> };

/** Most log entries a `logs` result shows; the newest are kept. */
const LOG_ENTRIES_LIMIT = 200;
/** Most characters of one log message. */
const LOG_MESSAGE_LIMIT_CHARS = 1000;

const SHELL_FIELD = "The shell's id or name, as returned by shells_create or shells_list.";
const TEMPLATE_FIELD =
  "A template of the org: `name` (its latest version) or `name@version`. Its values are the defaults of every field you leave out (language too); fields it locks may only be narrowed (a looser value answers template_locked naming the field). Its managed files are written into /workspace, and its tool, skill, prompt and MCP descriptions into /workspace/.shells/<kind>s/.";
const BINDINGS_FIELD =
  "Names of the org's service bindings the code may call (any network mode). Each sets $SHELLS_BINDING_<NAME>_URL; requests to it get the binding's secret added on the way out, and the code never sees the secret. Unknown names: binding_not_found.";

/**
 * The tools, in the order `tools/list` presents them. Every one is served by the agent gate
 * (`POST /api/agent/invoke`): the caller needs the `shells.agent.invoke` entitlement and the
 * permission of the operation.
 */
export const SHELLS_TOOLS: ShellsToolTable = {
  shells_list: {
    title: "List shells",
    description: [
      "List the shells (sandboxes) of your organization — never another org's.",
      "Read-only and fast: one database query, no sandbox is touched, nothing is billed.",
      "Filter by status, language or runtime. Results come in pages of `limit` (default 50, at most 200); when `nextCursor` is not null, call again with it as `cursor` for the next page.",
      "Result: `{ items: Shell[], nextCursor }`; each shell has `id`, `name`, `status` (provisioning | running | paused | stopped | error), `language`, `runtime`, `network`, `region`, `resources`, `expiresAt`.",
    ].join("\n"),
    annotations: { readOnlyHint: true, openWorldHint: false },
    fields: {
      status: "Only shells in this lifecycle state.",
      language: "Only shells of this language preset.",
      runtime: "Only shells of this runtime class.",
      limit: "Page size (default 50).",
      cursor: "The `nextCursor` of the previous page.",
    },
    render: (page) => {
      const lines =
        page.items.length === 0
          ? ["No shells match."]
          : [
              `${page.items.length} shell${page.items.length === 1 ? "" : "s"}:`,
              ...page.items.map((shell) => `- ${describeShell(shell)}`),
            ];
      if (page.nextCursor)
        lines.push(`More shells: call shells_list with cursor "${page.nextCursor}".`);
      return { structuredContent: { ...page }, text: lines.join("\n") };
    },
  },
  shells_create: {
    title: "Create a shell",
    description: [
      "Create a shell: an isolated sandbox to run code in, ready in seconds. Same contract as the console's create dialog.",
      "- language: the preset toolchain (bash, python, node, rust, go).",
      "- runtime: the isolation class — wasm (lightest, cheapest), container (Linux namespaces; the usual choice), microvm (its own kernel: the strongest wall for the least trusted code; slowest to start, costliest). Defaults to container, or the org's isolation floor when that is higher; never weaker than requested.",
      "- network: sealed (no network at all; the default), localhost (loopback only), internet (egress only through the org's egress proxy).",
      "Cost: a running shell is metered per second (wasm < container < microvm) until it is stopped or deleted; set `ttlSeconds` to have it stopped automatically. Not destructive.",
      "Result: the Shell, with `id` to pass as `shell` to shells_exec and shells_action, and `status` (running when ready). A first shell of a language may come back `provisioning` while its image builds (about a minute; `statusReason` shows the step): call shells_list with status provisioning to see when it runs. Clients that send a progressToken get progress notifications and the running shell instead.",
      'A template marked reviewBindings makes a create with bindings answer { status: "pending_approval", approval }: the shell is made only when a human approver grants it; do not retry.',
      "Refusals: below_isolation_floor (the org requires a stronger runtime), runtime_unavailable (this host cannot run the class), name_taken.",
    ].join("\n"),
    annotations: {
      readOnlyHint: false,
      destructiveHint: false,
      idempotentHint: false,
      openWorldHint: false,
    },
    fields: {
      name: "Unique in the project; defaults to the shell's id.",
      template: TEMPLATE_FIELD,
      language:
        "Language preset: the toolchain installed in the shell (required without a template).",
      runtime: "Isolation class: wasm < container < microvm (strongest).",
      network:
        "sealed (default): no network; localhost: loopback only; internet: egress via the org's proxy.",
      region: "Where to place the shell; defaults to the server's region.",
      project: "Project name; defaults to `default`. Usage caps are per project.",
      resources:
        "Limits: cpu (cores), memoryMb, pids, diskMb. Server defaults apply to omitted fields.",
      ttlSeconds: "Stop the shell automatically after this many seconds (ends metering).",
      env: "Environment variables of every exec in the shell. Values are never shown back.",
      secretEnv:
        "Secret environment variables (tokens, passwords): sealed at rest, never returned, redacted from logs, history and streamed output.",
      egress:
        'Network egress: { mode: "deny_all", allow: [] } for none (network sealed), or { mode: "allowlist", allow: [hosts, *.suffixes, CIDRs], deny?: { hosts?, cidrs?, ports? } } for internet through the egress proxy, limited to those and never what deny names (the org policy applies on top). Every egress decision is recorded in the activity history.',
      bindings: BINDINGS_FIELD,
      git: "A git repo whose files the shell starts with: { repo (https URL), ref (branch, tag or commit), subpath?, binding? }. The server clones one commit shallow outside the sandbox and copies its files (no .git) into /workspace; $SHELLS_GIT_COMMIT names the commit. A private repo's token comes from the service binding named in `binding` and never enters the sandbox. Errors: git_ref_not_found, git_repo_unreachable, git_repo_too_large, git_repo_not_allowed, git_path_not_found, git_binding_mismatch.",
    },
    render: (shell) => {
      if (isPendingApproval(shell)) {
        return {
          structuredContent: { ...shell },
          text: `Pending review, not created yet: ${shell.message}\nA listed approver must grant approval ${shell.approval.id}; the shell ${shell.approval.shellId} is made then. Do not retry the call. Tell the user it is waiting.`,
        };
      }
      return {
        structuredContent: { ...shell },
        text: `Shell created: ${describeShell(shell)}.\nPass shell "${shell.id}" to shells_exec and shells_action.`,
      };
    },
  },
  shells_exec: {
    title: "Run a command in a shell",
    description: [
      "Run one command in a running shell and wait for it to finish.",
      '`command` is an argv array, not a command line: use ["sh", "-c", "…"] for pipes, redirects, `&&` or globbing. The working directory defaults to /workspace.',
      "Time: up to `timeoutMs` (default 60000 ms, at most one hour); past it the command is killed with killReason `wall_clock`. Billing is the shell's running time.",
      "Effects stay inside the sandbox: files written persist until wipe_state or delete (reinstall_os keeps only /workspace); it can change or delete anything in the shell, nothing outside it.",
      "Result: `{ exitCode, stdout, stderr, durationMs, killReason?, truncated? }`. A non-zero exitCode is a result, not an error. `killReason` says why the sandbox ended the command (wall_clock, oom, pids, cpu, disk, output_limit). Output longer than 8000 characters per stream is cut in the middle with a marker giving the total size.",
    ].join("\n"),
    annotations: {
      readOnlyHint: false,
      destructiveHint: true,
      idempotentHint: false,
      openWorldHint: false,
    },
    fields: {
      shell: SHELL_FIELD,
      command: 'argv; no shell parsing. Example: ["sh", "-c", "ls -la | head"].',
      env: "Extra environment variables for this command.",
      secretEnv:
        "Secret environment variables for this command: never stored, redacted from logs and history.",
      cwd: "Working directory; defaults to /workspace.",
      stdin: "Text written to the command's standard input.",
      timeoutMs: "Wall-clock limit in milliseconds (default 60000, at most 3600000).",
    },
    render: (result) => {
      const stdout = boundOutput(result.stdout);
      const stderr = boundOutput(result.stderr);
      const cut = stdout !== result.stdout || stderr !== result.stderr;
      const notes = [`exit code ${result.exitCode} after ${Math.round(result.durationMs)} ms`];
      if (result.killReason) notes.push(`killed by the sandbox: ${result.killReason}`);
      if (result.truncated) notes.push("output past the server's limit was dropped");
      const text = [
        `${notes.join("; ")}.`,
        result.stdout === "" ? "stdout: (empty)" : `stdout:\n${stdout}`,
        result.stderr === "" ? "stderr: (empty)" : `stderr:\n${stderr}`,
      ].join("\n");
      return {
        structuredContent: { ...result, stdout, stderr, ...(cut ? { truncated: true } : {}) },
        text,
      };
    },
  },
  shells_action: {
    title: "Run a lifecycle action on a shell",
    description: [
      "Run a lifecycle capability on a shell:",
      "- logs: read-only; the newest `tail` log entries (default 200).",
      "- restart: DESTRUCTIVE to running work. Ends every process; files are kept. Recovers a shell in state error.",
      "- snapshot: saves the filesystem state as restore point `name`. Cheap; do it before anything risky.",
      "- restore: DESTRUCTIVE. Returns the files to restore point `snapshot` (default: the newest); everything written since is lost.",
      "- start: starts a stopped shell.",
      "- reinstall_os: DESTRUCTIVE. A fresh base image under the same shell id; /workspace is kept, everything else is replaced.",
      "- stop: DESTRUCTIVE to running work. Ends every process and the metering; files stay until delete.",
      "- wipe_state: DESTRUCTIVE, irreversible without a snapshot. Destroys all filesystem state, /workspace included; the shell itself stays running and usable.",
      "- pause: holds every process where it is (a dev server keeps its memory); execs answer shell_paused until resume; file reads still work. Not metered as running.",
      "- resume: lets a paused shell's processes run on from where they were.",
      "- delete: DESTRUCTIVE, irreversible. Tears the shell down for good.",
      'The org may gate stop, wipe_state, reinstall_os, delete, restore and restart. Typed confirmation answers the error confirmation_required: call again with `confirm` set to the shell\'s name, only if the user asked for the action. Named approvers answer `{ status: "pending_approval", approval }`: nothing has happened yet, a human approver must grant it; do not retry.',
      "Each capability takes seconds at most. Result: `{ capability, message, shell, snapshot?, logs? }`; delete answers the deleted Shell.",
    ].join("\n"),
    annotations: {
      readOnlyHint: false,
      destructiveHint: true,
      idempotentHint: false,
      openWorldHint: false,
    },
    fields: {
      shell: SHELL_FIELD,
      capability: "What to do; see the tool description for what each one destroys.",
      confirm:
        "Typed confirmation (the shell's name or id) for an action the org gates by confirmation. Send it only when the user asked for the action.",
      name: "snapshot: the restore point's name (default: a timestamp).",
      snapshot: "restore: the restore point to return to (default: the newest).",
      tail: "logs: how many of the newest entries (default 200).",
    },
    render: (result) => {
      if (isPendingApproval(result)) {
        return {
          structuredContent: { ...result },
          text: `Pending approval, not done yet: ${result.message}\nA listed approver must grant approval ${result.approval.id}; do not retry the call. Tell the user it is waiting.`,
        };
      }
      if (!("capability" in result)) {
        return {
          structuredContent: { ...result },
          text: `Shell ${labelOf(result)} is ${result.status}: every per-shell object was reclaimed.`,
        };
      }
      const lines = [
        `${result.capability}: ${result.message}.`,
        `Shell now: ${describeShell(result.shell)}.`,
      ];
      if (result.snapshot)
        lines.push(`Restore point: ${result.snapshot.name} (${result.snapshot.sizeBytes} bytes).`);
      if (!result.logs) return { structuredContent: { ...result }, text: lines.join("\n") };
      const logs = boundLogs(result.logs);
      if (logs.length < result.logs.length)
        lines.push(`The newest ${logs.length} of ${result.logs.length} entries:`);
      lines.push(...logs.map((entry) => `${entry.time} ${entry.kind} ${entry.message}`));
      return { structuredContent: { ...result, logs }, text: lines.join("\n") };
    },
  },
  shells_term: {
    title: "Mint a terminal credential",
    description: [
      "Mint a short-lived, single-use credential that attaches an interactive terminal (a real PTY running a login shell) to a running shell.",
      "Result: `{ id, token, url, expiresAt }`. `url` is a WebSocket (it holds no secret): open it offering the subprotocols `shells.term.v1, shells.token.<token>` (a token in the URL is refused). Binary frames carry terminal bytes both ways; text frames are JSON control messages (resize, signal). The first attach consumes the token and the connection ends when it expires (default 5 minutes) or when the key that minted it is revoked.",
      "Treat the token as a secret: do not log or store it; mint a new one when you need it again.",
    ].join("\n"),
    annotations: {
      readOnlyHint: false,
      destructiveHint: false,
      idempotentHint: false,
      openWorldHint: false,
    },
    fields: { shell: SHELL_FIELD },
    render: (credential) => ({
      structuredContent: { ...credential },
      text: `Terminal credential ${credential.id} minted; attach within its lifetime at the returned url, offering the subprotocols shells.term.v1 and shells.token.<token> (expires ${credential.expiresAt}). The token is shown only here.`,
    }),
  },
  shells_interpreter: {
    title: "Run code in a warm interpreter",
    description: [
      "Run one turn of Python or JavaScript (node) in the shell's warm interpreter. Variables, imports and files persist across turns of the same shell and language.",
      "Time: up to `timeoutMs` per turn (default 60000 ms); a turn past it stops the interpreter, and the next turn starts a fresh one (`restarted: true`, state gone).",
      "Result: `{ stdout, stderr, value, error, restarted, durationMs }`. `value` is the last expression's value (JSON, or its repr); `error` is `{ name, message, traceback }` when the code raised.",
    ].join("\n"),
    annotations: {
      readOnlyHint: false,
      destructiveHint: true,
      idempotentHint: false,
      openWorldHint: false,
    },
    fields: {
      shell: SHELL_FIELD,
      code: "Source of this turn. The last expression's value is returned.",
      language: "python or node; defaults to the shell's language when it is one of them.",
      timeoutMs: "Wall clock of this turn in milliseconds (default 60000).",
    },
    render: (result) => {
      const stdout = boundOutput(result.stdout);
      const stderr = boundOutput(result.stderr);
      const lines = [
        result.error
          ? `Raised ${result.error.name}: ${result.error.message}`
          : `Value: ${JSON.stringify(result.value)}`,
        result.restarted ? "(a fresh interpreter: earlier state is gone)" : "",
        result.stdout ? `stdout:\n${stdout}` : "",
        result.stderr ? `stderr:\n${stderr}` : "",
        result.error?.traceback ? `traceback:\n${boundOutput(result.error.traceback)}` : "",
      ].filter(Boolean);
      return { structuredContent: { ...result, stdout, stderr }, text: lines.join("\n") };
    },
  },
  shells_run: {
    title: "Run code once in a fresh sandbox",
    description: [
      "Run code (or a command) once in a new ephemeral shell that is torn down afterwards, and wait for it.",
      "Inside python and node, user code can call `shells.result(value)` to report a structured JSON result and `shells.artifact(path)` to keep an output file; any language can write JSON to the file named by $SHELLS_RESULT.",
      "Time: up to `timeoutMs` (default 5 minutes); the call answers when the run ends. Billing covers the ephemeral shell's lifetime.",
      "Result: the Run `{ id, status, exitCode, killReason, result, artifacts, output, error }`. `output` is the end of what the code printed: the last 4 KiB of stdout and of stderr (secret values replaced by [redacted]) with each stream's total size — read it when there is no result or the run failed. Artifacts can be downloaded from the REST API.",
    ].join("\n"),
    annotations: {
      readOnlyHint: false,
      destructiveHint: false,
      idempotentHint: false,
      openWorldHint: false,
    },
    fields: {
      code: "Source in `language`; give this, `command` or `git.entrypoint`.",
      command: "argv to run instead of code.",
      template: `${TEMPLATE_FIELD} A template marked review-before-run answers { status: "pending_approval", approval }: the run starts only when a human approver grants it; do not retry.`,
      language: "Language preset of the ephemeral shell (required without a template).",
      runtime: "Isolation class of the ephemeral shell: wasm < container < microvm.",
      network: "sealed (default): no network; localhost: loopback only.",
      env: "Environment variables of the run. Values are never shown back.",
      secretEnv:
        "Secret environment variables of the run: sealed at rest, never returned, redacted from its frames and logs.",
      egress:
        'Network egress of the run: { mode: "deny_all", allow: [] } for none (network sealed), or { mode: "allowlist", allow: [hosts, *.suffixes, CIDRs], deny?: { hosts?, cidrs?, ports? } } for internet through the egress proxy, limited to those and never what deny names (the org policy applies on top). Every egress decision is recorded in the run\'s activity.',
      bindings: BINDINGS_FIELD,
      git: "A git repo to run from: { repo (https URL), ref (branch, tag or commit), subpath?, entrypoint?, binding? }. The server clones one commit shallow outside the sandbox and copies its files (no .git) into /workspace; `entrypoint` (relative to /workspace) is run with `language` instead of `code`/`command`. A private repo's token comes from the service binding named in `binding` and never enters the sandbox. Errors: git_ref_not_found, git_repo_unreachable, git_repo_too_large, git_repo_not_allowed, git_path_not_found, git_binding_mismatch.",
      files: "Files to seed into /workspace before the run.",
      artifacts: "Globs (relative to /workspace) of output files to keep.",
      timeoutMs: "Wall clock of the whole run in milliseconds.",
    },
    render: (run) => {
      if (isPendingApproval(run)) {
        return {
          structuredContent: { ...run },
          text: `Pending review, not started yet: ${run.message}\nA listed approver must grant approval ${run.approval.id}; the run ${run.approval.shellId} starts then. Do not retry the call. Tell the user it is waiting.`,
        };
      }
      // A run answered by a control plane from before output tails has none.
      const output = run.output ?? null;
      const bounded = output && {
        ...output,
        stdout: boundOutput(output.stdout),
        stderr: boundOutput(output.stderr),
      };
      return {
        structuredContent: { ...run, ...(bounded ? { output: bounded } : {}) },
        text: [
          `Run ${run.id} ${run.status}${run.exitCode === null ? "" : ` with exit code ${run.exitCode}`}${run.killReason ? ` (killed by the sandbox: ${run.killReason})` : ""}.`,
          run.result === null
            ? "No structured result was reported."
            : `Result: ${boundOutput(JSON.stringify(run.result))}`,
          run.artifacts.length > 0
            ? `Artifacts: ${run.artifacts.map((a) => `${a.path} (${a.sizeBytes} bytes)`).join(", ")}`
            : "",
          run.error ? `Error: ${run.error}` : "",
          ...(bounded
            ? [
                outputLines("stdout", bounded.stdout, output.stdoutBytes),
                outputLines("stderr", bounded.stderr, output.stderrBytes),
              ]
            : []),
        ]
          .filter(Boolean)
          .join("\n"),
      };
    },
  },
  shells_files: {
    title: "List, read or write files in a shell",
    description: [
      "File access inside a running shell. `op`: list (a directory's entries), read (a file's content; text as utf8, other bytes as base64), write (create or replace a file, creating parent directories — overwrites without asking).",
      "Paths are absolute or relative to /workspace and always resolve inside the shell; `..` is refused.",
    ].join("\n"),
    annotations: {
      readOnlyHint: false,
      destructiveHint: true,
      idempotentHint: true,
      openWorldHint: false,
    },
    fields: {
      shell: SHELL_FIELD,
      op: "list, read or write.",
      path: "Absolute, or relative to /workspace.",
      content: "write: the new content.",
      encoding: "utf8 (default) or base64, for write's content and read's preference.",
    },
    render: (result) => {
      if ("items" in result) {
        return {
          structuredContent: { ...result },
          text:
            result.items.length === 0
              ? "(empty directory)"
              : result.items
                  .map((f) => `${f.type === "directory" ? "d" : "-"} ${f.sizeBytes}\t${f.path}`)
                  .join("\n"),
        };
      }
      if ("content" in result) {
        const content = boundOutput(result.content);
        return {
          structuredContent: { ...result, content },
          text: `${result.path} (${result.sizeBytes} bytes, ${result.encoding}):\n${content}`,
        };
      }
      return {
        structuredContent: { ...result },
        text: `Wrote ${result.path} (${result.sizeBytes} bytes).`,
      };
    },
  },
  shells_fork: {
    title: "Fork a shell",
    description: [
      "Make `count` new shells (1–20), each starting from the shell's files at one instant: try several approaches side by side from the same state.",
      "The shell keeps running (it is frozen for a moment during the capture). Only files are copied: no process or memory state comes along; start servers again in each new shell.",
      "Each new shell is a create of its own: same language, runtime, network, resources and environment as the original; the org's limits apply, and each is metered while it runs until stopped or deleted. Not destructive.",
      "Result: `{ parent, shells: Shell[], failed, state }`; pass each shell's `id` as `shell` to shells_exec. `failed` lists a shell that could not be made (and why); the ones before it were made. `state.filesystem.method` says whether the files are a shared copy-on-write layer (`layered`, `layered_reflink`, `layered_copy_once`), shared by reflink or copied.",
    ].join("\n"),
    annotations: {
      readOnlyHint: false,
      destructiveHint: false,
      idempotentHint: false,
      openWorldHint: false,
    },
    fields: {
      shell: SHELL_FIELD,
      count: "How many shells to make (1–20).",
      names: "Names of the new shells, one per shell in order (default: their ids).",
    },
    render: (result) => {
      const lines = [
        `${result.shells.length} shell${result.shells.length === 1 ? "" : "s"} forked from ${result.parent} (files only; no processes or memory):`,
        ...result.shells.map((shell) => `- ${describeShell(shell)}`),
        ...result.failed.map(
          (failure) => `Not made: shell ${failure.index + 1}: ${failure.code}: ${failure.message}`,
        ),
      ];
      return { structuredContent: { ...result }, text: lines.join("\n") };
    },
  },
};

/** A stream of a run's output tail, headed by how much of it is shown. */
function outputLines(stream: "stdout" | "stderr", text: string, totalBytes: number): string {
  if (totalBytes === 0) return `${stream}: (empty)`;
  const shown = utf8Bytes(text);
  const head =
    shown < totalBytes ? `${stream} (the last ${shown} of ${totalBytes} bytes):` : `${stream}:`;
  return `${head}\n${text}`;
}

/** One line about a shell: what a model needs to pick it and use it. */
function describeShell(shell: Shell): string {
  const reason = shell.statusReason ? ` (${shell.statusReason})` : "";
  const allow = shell.egress ? ` (egress allowed to ${shell.egress.allow.join(", ")})` : "";
  return `${labelOf(shell)} is ${shell.status}${reason} · ${shell.language} · ${shell.isolation ?? shell.runtime} · network ${shell.network}${allow} · region ${shell.region}`;
}

/** A shell's name, and its id when that differs. */
function labelOf(shell: Shell): string {
  return shell.name === shell.id ? shell.id : `${shell.name} (id ${shell.id})`;
}

/** The newest log entries that fit in the output bound, each message cut to a line's worth. */
function boundLogs(entries: readonly LogEntry[]): LogEntry[] {
  const kept: LogEntry[] = [];
  let chars = 0;
  for (let i = entries.length - 1; i >= 0 && kept.length < LOG_ENTRIES_LIMIT; i--) {
    const entry = entries[i] as LogEntry;
    const message = boundOutput(entry.message, LOG_MESSAGE_LIMIT_CHARS);
    chars += message.length;
    if (chars > OUTPUT_LIMIT_CHARS && kept.length > 0) break;
    kept.push({ ...entry, message });
  }
  return kept.reverse();
}

function isPendingApproval(value: unknown): value is PendingApproval {
  return (
    typeof value === "object" &&
    value !== null &&
    (value as { status?: unknown }).status === "pending_approval"
  );
}

/**
 * The tool definitions `tools/list` answers: name, title, description, annotations and the input
 * JSON Schema (draft 2020-12, the default dialect of MCP) generated from the contract's zod schema
 * — the same schema the gate validates arguments with — with the table's per-field sentences.
 */
export function toolDefinitions(): Tool[] {
  return AgentTool.options.map((name) => {
    const spec = SHELLS_TOOLS[name];
    return {
      name,
      title: spec.title,
      description: spec.description,
      inputSchema: inputSchemaOf(name, spec.fields),
      annotations: { title: spec.title, ...spec.annotations },
    };
  });
}

function inputSchemaOf(
  name: AgentTool,
  fields: Record<string, string | undefined>,
): Tool["inputSchema"] {
  const schema = z.toJSONSchema(AGENT_TOOL_ARGUMENTS[name], { io: "input" }) as Tool["inputSchema"];
  const properties = (schema.properties ?? {}) as Record<string, Record<string, unknown>>;
  for (const [field, description] of Object.entries(fields)) {
    const property = properties[field];
    // A renamed contract field must not leave a stale sentence behind.
    if (!property) throw new Error(`${name}: no argument "${field}" to describe`);
    property["description"] = description;
  }
  return schema;
}

/**
 * Renders a tool's result for a model. A result of a shape this table does not know (a newer
 * control plane behind the stdio server) is passed on as JSON, bounded, rather than failing a call
 * that succeeded.
 */
export function renderToolResult(tool: AgentTool, result: unknown): RenderedResult {
  try {
    return (SHELLS_TOOLS[tool].render as (value: unknown) => RenderedResult)(result);
  } catch {
    const json = JSON.stringify(result, null, 2) ?? "null";
    const text = boundOutput(json);
    const isRecord = typeof result === "object" && result !== null && !Array.isArray(result);
    return {
      structuredContent:
        isRecord && text === json ? (result as Record<string, unknown>) : { result: text },
      text,
    };
  }
}
