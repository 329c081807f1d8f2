import type {
  AgentToolResults as ContractAgentToolResults,
  AGENT_TOOL_ARGUMENTS,
  ActionRequest,
  ActivityEvent,
  AgentTool,
  Capability,
  ChainVerification,
  ExecFrame,
  ExecRequest,
  ExecResult,
  InterpreterRequest as InterpreterRequestSchema,
  InterpreterResult,
  Language,
  Page,
  PendingApproval,
  Principal,
  RunCreate,
  RuntimeAvailability,
  RuntimeClass,
  Shell,
  ShellCreate,
  ShellForkResult,
  PortUrl,
  ExposedPort,
  RouteResponse,
  ShellEgressChange,
  ShellStatus,
  Snapshot,
  TermCredential,
} from "@shells/contract";
import {
  ConfigurationError,
  ConnectionError,
  ApprovalNotGrantedError,
  ProvisioningError,
  ServerError,
  errorFromStreamEvent,
} from "./errors.js";
import { BindingsApi } from "./bindings-api.js";
import { TemplatesApi } from "./templates-api.js";
import { AuditApi } from "./audit-api.js";
import { FilesApi } from "./files-api.js";
import {
  AgentsApi,
  ApprovalsApi,
  EntitlementsApi,
  KeysApi,
  MembersApi,
  PolicyApi,
  ProjectsApi,
} from "./iam-resources.js";
import { idempotencyKeyOf, segment, type ApiCall } from "./internal/api-call.js";
import type { SchemaInput } from "./internal/schema-types.js";
import { Transport } from "./internal/transport.js";
import { PaginatedList } from "./paginated-list.js";
import { isPendingApproval, type ActionOutcome } from "./pending-approval.js";
import { RunsApi, type RunHandle } from "./runs-api.js";
import { WebhooksApi } from "./webhooks-api.js";
import { CapsApi, UsageApi } from "./usage-api.js";
import {
  attachTerminal,
  type TerminalAttachOptions,
  type TerminalCredential,
} from "./terminal-connection.js";

/** Options of {@link ShellsClient}. */
export interface ShellsClientOptions {
  /** Base URL of the control plane, e.g. `http://127.0.0.1:8080`. Default: env `SHELLS_URL`. */
  baseUrl?: string | undefined;
  /** API key sent as `Authorization: Bearer …`. Default: env `SHELLS_API_TOKEN`. */
  token?: string | undefined;
  /** The `fetch` to use (a proxy-aware one, a test double). Default: the global `fetch`. */
  fetch?: typeof globalThis.fetch | undefined;
  /**
   * Milliseconds to wait for a response before failing with a {@link ConnectionError} (`timeout`).
   * Default 600 000 (creating a shell may build a base image on first use). An exec waits at least
   * its own `timeoutMs` plus a margin.
   */
  timeoutMs?: number | undefined;
  /**
   * How often a request is tried again when that is safe: a GET, PUT or DELETE, or a request with
   * an idempotency key, after a 429 or 503 (waiting what `Retry-After` asks) or a reset
   * connection. Backoff doubles from half a second, with jitter. Default 2; 0 turns retries off.
   */
  maxRetries?: number | undefined;
}

/** Per-call options every method accepts. */
export interface RequestOptions {
  /** Aborts the request; the method then fails with a {@link ConnectionError} (`aborted`). */
  signal?: AbortSignal | undefined;
}

/** Options of mutating calls the server deduplicates. */
export interface IdempotentRequestOptions extends RequestOptions {
  /**
   * Sent as `Idempotency-Key`: a retry with the same key returns the first response instead of
   * acting twice (a second shell, a second snapshot).
   */
  idempotencyKey?: string | undefined;
}

/** Options of {@link ShellsClient.create}. */
export interface CreateOptions extends IdempotentRequestOptions {
  /**
   * Called once when the create waits for an approver (a template marked `reviewBindings`
   * granting bindings): the pending approval to show or hand to an approver.
   */
  onPendingApproval?: (pending: PendingApproval) => void;
  /** How long to wait for the approver, ms (default 1800000). */
  approvalTimeoutMs?: number;
  /** How often to look at the approval, ms (default 1000). */
  approvalIntervalMs?: number;
}

/** Options of {@link ShellsClient.waitUntilRunning}. */
export interface WaitUntilRunningOptions extends RequestOptions {
  /** Called with each new status reason while the shell provisions (its image build's steps). */
  onProgress?: (statusReason: string, shell: Shell) => void;
  /** How long to wait in all, ms (default 600000). */
  timeoutMs?: number;
  /** How often to look, ms (default 500). */
  intervalMs?: number;
}

/** Options of {@link ShellsClient.delete}. */
export interface DeleteOptions extends IdempotentRequestOptions {
  /**
   * Typed confirmation (the shell's name or id) when the org gates deletion by `confirm`; without
   * it, or with the wrong one, the call fails with a `ConfirmationRequiredError`.
   */
  confirm?: string | undefined;
}

/** Options of {@link ShellsClient.action}: the action's body plus per-call options. */
export type ActionOptions = ActionRequest & IdempotentRequestOptions;

/** Options of {@link ShellsClient.fork}: how many shells, their names, and per-call options. */
export interface ForkOptions extends IdempotentRequestOptions {
  /** How many shells to make (1–20). */
  count: number;
  /** Their names, one per shell in order (default: each shell's id). */
  names?: string[] | undefined;
}

/** Filters of {@link ShellsClient.list}. */
export interface ListShellsQuery {
  /** Only shells in this state. Deleted shells are listed only when asked for. */
  status?: ShellStatus | undefined;
  language?: Language | undefined;
  runtime?: RuntimeClass | undefined;
  /** Page size, 1–200 (default 50). Iteration still walks every page. */
  limit?: number | undefined;
  /** Start at this cursor instead of the first page. */
  cursor?: string | undefined;
}

/** Filters of {@link ShellsClient.activity}. */
export interface ActivityListQuery {
  /** Only events about this shell (id). */
  shell?: string | undefined;
  /** Only events by this actor (id). */
  actor?: string | undefined;
  /** Exact action (`shell.create`), or a prefix ending in `.` (`shell.action.`). */
  action?: string | undefined;
  /** `desc` (default) is newest first; `asc` walks the chain from its start. */
  order?: "asc" | "desc" | undefined;
  /** Page size, 1–500 (default 50). Iteration still walks every page. */
  limit?: number | undefined;
  /** Start at this cursor instead of the first page. */
  cursor?: string | undefined;
}

/** Body of {@link ShellsClient.interpreter}: the code, and `python` or `node`. */
export type InterpreterRequest = SchemaInput<typeof InterpreterRequestSchema>;

/** The `arguments` of one agent-gate tool: the same contract as the REST body it mirrors. */
export type AgentToolArguments<T extends AgentTool> = SchemaInput<(typeof AGENT_TOOL_ARGUMENTS)[T]>;

/** What each agent-gate tool answers: the same shape as the REST route it mirrors. */
export type AgentToolResults = ContractAgentToolResults;

/** The answer of {@link ShellsClient.invoke}: which tool ran and its result. */
export interface AgentInvokeResult<T extends AgentTool> {
  tool: T;
  result: AgentToolResults[T];
}

const DEFAULT_TIMEOUT_MS = 600_000;
const DEFAULT_MAX_RETRIES = 2;
/** The server's default exec wall-clock limit (ExecRequest.timeoutMs). */
const DEFAULT_EXEC_TIMEOUT_MS = 60_000;
/** How much longer than an exec's own limit the client waits for its result. */
const EXEC_RESPONSE_MARGIN_MS = 30_000;
/** The largest page the activity route serves; `verifyActivity` walks the chain with it. */
const MAX_ACTIVITY_PAGE = 500;
/** The server's default wall clock of one interpreter turn (InterpreterRequest.timeoutMs). */
const DEFAULT_INTERPRETER_TIMEOUT_MS = 60_000;

/**
 * A typed client of the Shells control plane. Every method mirrors one REST route; every failure is
 * a {@link ShellsError} subclass with a stable `code`.
 *
 * ```ts
 * const shells = new ShellsClient({ baseUrl: "http://127.0.0.1:8080", token });
 * const shell = await shells.create({ language: "python" });
 * const { exitCode, stdout } = await shells.exec(shell.id, { command: ["python3", "-c", "print(1)"] });
 * ```
 */
export class ShellsClient {
  /** The control plane's base URL, without a trailing slash. */
  readonly baseUrl: string;
  /** The org's members and their roles. */
  readonly members: MembersApi;
  /** Agents: non-human principals. */
  readonly agents: AgentsApi;
  /** API keys: issue (the secret is shown once), list, revoke. */
  readonly keys: KeysApi;
  /** Entitlement grants (`shells.agent.invoke`). */
  readonly entitlements: EntitlementsApi;
  /** The org's projects. */
  readonly projects: ProjectsApi;
  /** The org's policy: isolation floor, regions, credential TTL, default network, approval gates. */
  readonly policy: PolicyApi;
  /** Approvals of gated destructive actions: list, get, grant, deny. */
  readonly approvals: ApprovalsApi;
  /** Service bindings: credentials a shell uses without seeing them (create, rotate, delete). */
  readonly bindings: BindingsApi;
  /** Templates: versioned sandbox definitions (create, add a version, list, read, diff). */
  readonly templates: TemplatesApi;
  /** Files inside a running shell: read, write, list, stat, remove, directories as tar. */
  readonly files: FilesApi;
  /** One-shot runs: get, list, and handles on existing runs. Start one with {@link run}. */
  readonly runs: RunsApi;
  /** Webhook endpoints (admins): create (secret shown once), rotate, delivery logs, redeliver, test. */
  readonly webhooks: WebhooksApi;
  /** Metered usage and its cost (JSON or CSV), and the org's rates. */
  readonly usage: UsageApi;
  /** Per-project caps: concurrent shells, running seconds and cost per day or month. */
  readonly caps: CapsApi;
  /** Signed checkpoints of the activity history, and proofs against them. */
  readonly audit: AuditApi;
  readonly #transport: Transport;
  readonly #call: ApiCall;
  readonly #timeoutMs: number;

  /** @throws {ConfigurationError} when no base URL or token is given or found in the environment. */
  constructor(options: ShellsClientOptions = {}) {
    const env = typeof process === "undefined" ? {} : process.env;
    const baseUrl = options.baseUrl ?? env["SHELLS_URL"];
    if (!baseUrl) {
      throw new ConfigurationError({
        code: "invalid_configuration",
        status: 0,
        message: "no base URL: pass `baseUrl` (e.g. http://127.0.0.1:8080) or set SHELLS_URL",
      });
    }
    try {
      new URL(baseUrl);
    } catch (cause) {
      throw new ConfigurationError(
        {
          code: "invalid_configuration",
          status: 0,
          message: `baseUrl is not a valid URL: ${JSON.stringify(baseUrl)}`,
        },
        { cause },
      );
    }
    const token = options.token ?? env["SHELLS_API_TOKEN"];
    if (!token) {
      throw new ConfigurationError({
        code: "invalid_configuration",
        status: 0,
        message: "no API token: pass `token` or set SHELLS_API_TOKEN",
      });
    }
    this.baseUrl = baseUrl.replace(/\/+$/, "");
    this.#timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    this.#transport = new Transport({
      baseUrl: this.baseUrl,
      token,
      fetch: options.fetch ?? globalThis.fetch.bind(globalThis),
      timeoutMs: this.#timeoutMs,
      maxRetries: options.maxRetries ?? DEFAULT_MAX_RETRIES,
    });
    const call = this.#transport.call;
    this.#call = call;
    this.members = new MembersApi(call);
    this.agents = new AgentsApi(call);
    this.keys = new KeysApi(call);
    this.entitlements = new EntitlementsApi(call);
    this.projects = new ProjectsApi(call);
    this.policy = new PolicyApi(call);
    this.approvals = new ApprovalsApi(call);
    this.bindings = new BindingsApi(call);
    this.templates = new TemplatesApi(call);
    this.files = new FilesApi(call);
    this.runs = new RunsApi(call, this.#transport.events);
    this.webhooks = new WebhooksApi(call);
    this.usage = new UsageApi(call);
    this.caps = new CapsApi(call);
    this.audit = new AuditApi(call);
  }

  /**
   * Creates a shell. It answers `running` (or `error`) at once, except for a first shell of a
   * language whose image the server has not built yet: that one answers `provisioning`, its
   * `statusReason` following the build; {@link waitUntilRunning} waits for it. Sent with an
   * idempotency key (a fresh one unless given), so a retry never makes a second shell.
   */
  async create(body: ShellCreate, options: CreateOptions = {}): Promise<Shell> {
    const { onPendingApproval, approvalTimeoutMs, approvalIntervalMs, ...request } = options;
    const answer = await this.createOrPark(body, request);
    if (!isPendingApproval(answer)) return answer;
    onPendingApproval?.(answer);
    await this.#awaitGrant(answer, {
      timeoutMs: approvalTimeoutMs ?? 30 * 60_000,
      intervalMs: approvalIntervalMs ?? 1000,
      ...(request.signal ? { signal: request.signal } : {}),
    });
    return this.get(answer.approval.shellId, request.signal ? { signal: request.signal } : {});
  }

  /**
   * Like {@link create}, but a create that waits for an approver (a template marked
   * `reviewBindings` granting bindings) answers its {@link PendingApproval} (HTTP 202) at once
   * instead of waiting: `approval.shellId` is the id the shell will have once granted.
   */
  createOrPark(
    body: ShellCreate,
    options: IdempotentRequestOptions = {},
  ): Promise<Shell | PendingApproval> {
    return this.#call<Shell | PendingApproval>("POST", "/api/v1/shells", {
      ...options,
      body,
      idempotencyKey: idempotencyKeyOf(options.idempotencyKey),
    });
  }

  /** Waits until a pending approval is decided; throws unless it was granted and its step ran. */
  async #awaitGrant(
    pending: PendingApproval,
    wait: { timeoutMs: number; intervalMs: number; signal?: AbortSignal },
  ): Promise<void> {
    const deadline = Date.now() + wait.timeoutMs;
    let approval = pending.approval;
    // A grant is recorded before its step runs: the outcome follows once the step is done.
    const undecided = () =>
      approval.state === "pending" || (approval.state === "granted" && approval.outcome === null);
    while (undecided() && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, wait.intervalMs));
      wait.signal?.throwIfAborted();
      approval = await this.approvals.get(approval.id, wait.signal ? { signal: wait.signal } : {});
    }
    if (approval.state === "granted" && approval.outcome === "success") return;
    const why = undecided()
      ? `not settled within ${wait.timeoutMs} ms`
      : approval.state === "granted"
        ? `granted, but the step failed: ${approval.outcome ?? "no outcome yet"}`
        : `${approval.state}${approval.reason ? `: ${approval.reason}` : ""}`;
    throw new ApprovalNotGrantedError(
      {
        code: undecided() ? "timeout" : "approval_not_granted",
        message: `approval ${approval.id} (${approval.action}) was ${why}`,
        status: 0,
      },
      approval,
    );
  }

  /**
   * Waits while the shell is `provisioning` (a first create of a language builds its image, about
   * a minute), calling `onProgress` with each new status reason (`building the python image:
   * downloading packages (20%)`). Answers the shell once it is past provisioning; throws
   * {@link ProvisioningError} when it ended in `error` (`provisioning_failed`, the reason says
   * what to do) or `timeoutMs` passed first (`timeout`).
   *
   * @example
   * let shell = await shells.create({ language: "python" });
   * shell = await shells.waitUntilRunning(shell.id, { onProgress: (line) => console.log(line) });
   */
  async waitUntilRunning(idOrName: string, options: WaitUntilRunningOptions = {}): Promise<Shell> {
    const { onProgress, timeoutMs = 10 * 60_000, intervalMs = 500, ...request } = options;
    const deadline = Date.now() + timeoutMs;
    let said: string | null = null;
    for (;;) {
      const shell = await this.get(idOrName, request);
      if (shell.status === "provisioning" && shell.statusReason && shell.statusReason !== said) {
        said = shell.statusReason;
        onProgress?.(said, shell);
      }
      if (shell.status === "error")
        throw new ProvisioningError(
          {
            code: "provisioning_failed",
            message: shell.statusReason ?? `shell ${shell.name} failed to start`,
            status: 0,
          },
          shell,
        );
      if (shell.status !== "provisioning") return shell;
      if (Date.now() >= deadline)
        throw new ProvisioningError(
          {
            code: "timeout",
            message: `shell ${shell.name} was still provisioning after ${timeoutMs} ms${said ? `: ${said}` : ""}`,
            status: 0,
          },
          shell,
        );
      await new Promise((resolve) =>
        setTimeout(resolve, Math.min(intervalMs, deadline - Date.now())),
      );
    }
  }

  /**
   * The org's shells, newest first. `for await (const shell of shells.list())` walks every page;
   * `await shells.list().page()` is the first page only.
   */
  list(query: ListShellsQuery = {}, options: RequestOptions = {}): PaginatedList<Shell> {
    const { cursor, ...filters } = query;
    return new PaginatedList<Shell>(
      (pageCursor) =>
        this.#call<Page<Shell>>("GET", "/api/v1/shells", {
          ...options,
          query: { ...filters, cursor: pageCursor },
        }),
      cursor,
    );
  }

  /** One shell by id or name. */
  get(idOrName: string, options: RequestOptions = {}): Promise<Shell> {
    return this.#call<Shell>("GET", `/api/v1/shells/${segment(idOrName)}`, options);
  }

  /**
   * Deletes a shell: its processes end and every per-shell object is reclaimed. The record stays,
   * with status `deleted`, and is returned.
   *
   * Deletion passes the org's approval gate: under `confirm`, pass `confirm` (the shell's name or
   * id); under `approvers`, nothing is deleted yet and the answer is a {@link PendingApproval}
   * (check with `isPendingApproval`).
   */
  delete(idOrName: string, options: DeleteOptions = {}): Promise<Shell | PendingApproval> {
    const { confirm, ...rest } = options;
    return this.#call<Shell | PendingApproval>("DELETE", `/api/v1/shells/${segment(idOrName)}`, {
      ...rest,
      query: { confirm },
    });
  }

  /**
   * Runs a lifecycle capability (`logs`, `restart`, `snapshot`, `restore`, `reinstall_os`, `stop`,
   * `start`, `wipe_state`, `pause`, `resume`). A capability that is not legal in the shell's state
   * fails with a `ConflictError` (`invalid_state`). `pause` holds every process where it is (the
   * result's `pause` says how); a paused shell's execs fail with a `ConflictError`
   * (`shell_paused`) until `resume`.
   *
   * `stop`, `wipe_state` and `reinstall_os` pass the org's approval gate: under `confirm`, pass
   * `confirm` (the shell's name or id) or the call fails with a `ConfirmationRequiredError`; under
   * `approvers`, the action does not run yet and the answer is a {@link PendingApproval} (check with
   * `isPendingApproval`). The return type says which capabilities can answer that way.
   */
  action<C extends Capability>(
    idOrName: string,
    capability: C,
    options: ActionOptions = {},
  ): Promise<ActionOutcome<C>> {
    const { idempotencyKey, signal, ...body } = options;
    return this.#call<ActionOutcome<C>>(
      "POST",
      `/api/v1/shells/${segment(idOrName)}/actions/${segment(capability)}`,
      { body, idempotencyKey: idempotencyKeyOf(idempotencyKey), signal },
    );
  }

  /**
   * Makes `count` new shells, each starting from this shell's filesystem at one instant (the
   * parent is frozen briefly for the capture). Processes and memory are not copied. Each new shell
   * is a create of its own (the org's limits apply); the ones made before a refusal come back with
   * it in `failed`. `state.filesystem.method` says whether the state is a shared copy-on-write
   * layer (`layered`, `layered_reflink`, `layered_copy_once`), shared by reflink, or copied.
   *
   * ```ts
   * const { shells: [a, b] } = await shells.fork(base.id, { count: 2 });
   * ```
   */
  fork(idOrName: string, options: ForkOptions): Promise<ShellForkResult> {
    const { count, names, idempotencyKey, signal } = options;
    return this.#call<ShellForkResult>("POST", `/api/v1/shells/${segment(idOrName)}/fork`, {
      body: { count, ...(names ? { names } : {}) },
      idempotencyKey,
      signal,
    });
  }

  /**
   * A URL that reaches a server listening on `port` inside a running `localhost` or `internet`
   * shell, over HTTP and WebSocket, through the control plane. The URL carries a short-lived
   * token (default one hour, `ttlSeconds` up to a day): treat it as a secret. Requests to it
   * answer 502 `port_not_listening` while nothing listens on the port.
   *
   * ```ts
   * const { url } = await shells.url(shell.id, 8000);
   * await fetch(url); // the shell's server answers
   * ```
   */
  url(
    idOrName: string,
    port: number,
    options: RequestOptions & { ttlSeconds?: number | undefined } = {},
  ): Promise<PortUrl> {
    const { ttlSeconds, ...rest } = options;
    return this.#call<PortUrl>("POST", `/api/v1/shells/${segment(idOrName)}/ports`, {
      ...rest,
      body: { port, ...(ttlSeconds === undefined ? {} : { ttlSeconds }) },
    });
  }

  /**
   * The shell's port URLs that still work (neither expired nor revoked): port, maker, expiry —
   * never the URL, whose path is its token (it is answered once, by {@link url}).
   */
  async urls(idOrName: string, options: RequestOptions = {}): Promise<ExposedPort[]> {
    const { items } = await this.#call<{ items: ExposedPort[] }>(
      "GET",
      `/api/v1/shells/${segment(idOrName)}/ports`,
      options,
    );
    return items;
  }

  /**
   * Revokes a port URL (by its `id`) before it expires: requests with it answer 404 `not_found`
   * from then on, and connections open through it are closed. A URL already revoked or expired
   * fails with a `NotFoundError`.
   */
  revokeUrl(
    idOrName: string,
    portUrlId: string,
    options: RequestOptions = {},
  ): Promise<ExposedPort> {
    return this.#call<ExposedPort>(
      "DELETE",
      `/api/v1/shells/${segment(idOrName)}/ports/${segment(portUrlId)}`,
      options,
    );
  }

  /**
   * Replaces a running `internet` shell's egress allowlist; it takes effect at the shell's next
   * connection or DNS question. Narrowing is never gated; widening passes the org's `egress_change`
   * gate: under `confirm`, pass `confirm` (the shell's name or id); under `approvers`, nothing
   * changes yet and the answer is a {@link PendingApproval} (check with `isPendingApproval`).
   */
  changeEgress(
    idOrName: string,
    body: ShellEgressChange,
    options: IdempotentRequestOptions = {},
  ): Promise<Shell | PendingApproval> {
    return this.#call<Shell | PendingApproval>(
      "PATCH",
      `/api/v1/shells/${segment(idOrName)}/egress`,
      { ...options, body, idempotencyKey: idempotencyKeyOf(options.idempotencyKey) },
    );
  }

  /**
   * Grants a service binding to a running shell (one that has an egress proxy: network
   * `internet`, or a binding granted at launch). It answers at
   * `http://127.0.0.1:3128/bindings/<name>/` inside the shell from its next call on. When the
   * shell's template is marked `reviewBindings`, nothing changes yet and the answer is a
   * {@link PendingApproval} (check with `isPendingApproval`) whose context carries the diff.
   */
  attachBinding(
    idOrName: string,
    binding: string,
    options: IdempotentRequestOptions = {},
  ): Promise<Shell | PendingApproval> {
    return this.#call<Shell | PendingApproval>(
      "POST",
      `/api/v1/shells/${segment(idOrName)}/bindings`,
      { ...options, body: { binding }, idempotencyKey: idempotencyKeyOf(options.idempotencyKey) },
    );
  }

  /** Takes a service binding from a running shell; its next call through it is refused. */
  detachBinding(idOrName: string, binding: string, options: RequestOptions = {}): Promise<Shell> {
    return this.#call<Shell>(
      "DELETE",
      `/api/v1/shells/${segment(idOrName)}/bindings/${segment(binding)}`,
      options,
    );
  }

  /**
   * Runs a command in a running shell and waits for it. A non-zero exit code is a result, not an
   * error: check `exitCode` (and `killReason` when the sandbox ended the command).
   */
  exec(idOrName: string, request: ExecRequest, options: RequestOptions = {}): Promise<ExecResult> {
    const execTimeoutMs = request.timeoutMs ?? DEFAULT_EXEC_TIMEOUT_MS;
    return this.#call<ExecResult>("POST", `/api/v1/shells/${segment(idOrName)}/exec`, {
      ...options,
      body: request,
      timeoutMs: Math.max(this.#timeoutMs, execTimeoutMs + EXEC_RESPONSE_MARGIN_MS),
    });
  }

  /**
   * Runs a command in a running shell and streams it: `stdout`/`stderr` frames (UTF-8 text, each
   * stamped with the time it left the process) as they happen, then one `exit` frame with the
   * result (its `stdout`/`stderr` are empty: the output went out as frames).
   *
   * Nothing is sent until the loop starts; a missing or stopped shell fails the first iteration.
   * Breaking out of the loop hangs up, and the server then ends the command.
   *
   * ```ts
   * for await (const frame of shells.execStream(id, { command: ["sh", "-c", "echo a; sleep 1; echo b"] })) {
   *   if (frame.type === "exit") console.log("exit code", frame.result.exitCode);
   *   else process[frame.type].write(frame.data);
   * }
   * ```
   */
  async *execStream(
    idOrName: string,
    request: ExecRequest,
    options: RequestOptions = {},
  ): AsyncGenerator<ExecFrame, void, undefined> {
    const execTimeoutMs = request.timeoutMs ?? DEFAULT_EXEC_TIMEOUT_MS;
    const path = `/api/v1/shells/${segment(idOrName)}/exec`;
    const answer = await this.#transport.events("POST", path, {
      ...options,
      body: request,
      timeoutMs: Math.max(this.#timeoutMs, execTimeoutMs + EXEC_RESPONSE_MARGIN_MS),
      deadline: "stream",
    });
    if (answer.kind === "json") {
      // A server that does not stream answered the whole result: replay it as frames.
      const result = answer.body as ExecResult;
      const time = Date.now();
      if (result.stdout !== "") yield { type: "stdout", data: result.stdout, time };
      if (result.stderr !== "") yield { type: "stderr", data: result.stderr, time };
      yield { type: "exit", result: { ...result, stdout: "", stderr: "" }, time };
      return;
    }
    for await (const event of answer.events) {
      if (event.event === "error") throw await errorFromStreamEvent(event.data);
      if (event.event !== "stdout" && event.event !== "stderr" && event.event !== "exit") continue;
      let frame: ExecFrame;
      try {
        frame = JSON.parse(event.data) as ExecFrame;
      } catch (cause) {
        throw new ServerError(
          {
            code: "unexpected_response",
            status: 200,
            message: `POST ${path} streamed a ${event.event} event that is not JSON`,
          },
          { cause },
        );
      }
      yield frame;
      if (frame.type === "exit") return;
    }
    throw new ConnectionError({
      code: "connection_failed",
      status: 0,
      message: `POST ${path}: the stream ended before the command's exit frame`,
    });
  }

  /**
   * Runs one turn in the shell's warm code interpreter (python or node): globals, imports and
   * files persist between turns. Answers the turn's output, the last expression's `value` (JSON,
   * or its repr) and, when the code raised, `error` with its traceback — an exception in the code is
   * a result, not a thrown error. `restarted` says a fresh interpreter served this turn.
   */
  interpreter(
    idOrName: string,
    request: InterpreterRequest,
    options: RequestOptions = {},
  ): Promise<InterpreterResult> {
    const turnTimeoutMs = request.timeoutMs ?? DEFAULT_INTERPRETER_TIMEOUT_MS;
    return this.#call<InterpreterResult>(
      "POST",
      `/api/v1/shells/${segment(idOrName)}/interpreter`,
      {
        ...options,
        body: request,
        timeoutMs: Math.max(this.#timeoutMs, turnTimeoutMs + EXEC_RESPONSE_MARGIN_MS),
      },
    );
  }

  /**
   * Mints a short-lived, single-use credential for a terminal on the shell and answers it with
   * `attach()`, which opens the WebSocket to a PTY running a login shell. The token is in this
   * answer only (the server keeps a hash); treat it as a secret. `attach()` presents it as a
   * WebSocket subprotocol: the `url` holds no secret, and a token put in a URL is refused.
   *
   * ```ts
   * const term = await shells.term(shell.id);
   * const connection = await term.attach({ cols: 120, rows: 40 });
   * connection.write("ls\r");
   * for await (const bytes of connection) process.stdout.write(bytes);
   * ```
   */
  async term(idOrName: string, options: RequestOptions = {}): Promise<TerminalCredential> {
    const credential = await this.#call<TermCredential>(
      "POST",
      `/api/v1/shells/${segment(idOrName)}/term`,
      options,
    );
    return {
      ...credential,
      attach: (attachOptions?: TerminalAttachOptions) => attachTerminal(credential, attachOptions),
    };
  }

  /**
   * Starts a one-shot run: an ephemeral shell runs `code` (in `language`) or `command`, reports
   * stdout, stderr, its exit code, a structured result (`shells.result(value)` in python and node,
   * or JSON written to `$SHELLS_RESULT` in any language) and the declared `artifacts`, and is torn
   * down. Answers at once with a handle to follow it.
   *
   * ```ts
   * const run = await shells.run({ language: "python", code: `print("hi"); shells.result({"ok": True})` });
   * for await (const frame of run.stream()) console.log(frame); // live
   * const { result } = await run.result(); // structured
   * await run.teardown();
   * ```
   */
  run(spec: RunCreate, options: IdempotentRequestOptions = {}): Promise<RunHandle> {
    return this.runs.create(spec, options);
  }

  /** A shell's restore points, newest first. */
  async snapshots(idOrName: string, options: RequestOptions = {}): Promise<Snapshot[]> {
    const { items } = await this.#call<{ items: Snapshot[] }>(
      "GET",
      `/api/v1/shells/${segment(idOrName)}/snapshots`,
      options,
    );
    return items;
  }

  /**
   * The org's activity history, newest first unless `order: "asc"`. Iterate with `for await` for
   * every event across pages, or `.page()` for the first page.
   */
  activity(
    query: ActivityListQuery = {},
    options: RequestOptions = {},
  ): PaginatedList<ActivityEvent> {
    const { cursor, ...filters } = query;
    return new PaginatedList<ActivityEvent>(
      (pageCursor) =>
        this.#call<Page<ActivityEvent>>("GET", "/api/v1/activity", {
          ...options,
          query: { ...filters, cursor: pageCursor },
        }),
      cursor,
    );
  }

  /**
   * Walks the org's whole activity chain from its first event and re-computes every hash and link
   * on this side of the wire. Returns `{ ok: true, checked, head }`, or the first event that does not
   * hold (`eventId`, `seq`, `reason`). Given `expectHead` (a head hash recorded earlier), also fails
   * when the chain no longer contains it.
   */
  async verifyActivity(
    options: RequestOptions & { expectHead?: string } = {},
  ): Promise<ChainVerification> {
    // Loaded on first use: the verifier lives with the contract's schemas, which the rest of the
    // client needs only as types.
    const { verifyActivityChain } = await import("@shells/contract");
    const { expectHead, ...request } = options;
    return verifyActivityChain(
      this.activity({ order: "asc", limit: MAX_ACTIVITY_PAGE }, request),
      expectHead === undefined ? {} : { expectHead },
    );
  }

  /**
   * Readiness (`GET /readyz`, no credentials needed): the store answers, and which runtime classes
   * this host can run, with the backend that serves each (`simulator` runs no code), and the
   * regions of its backend pools with each limited class's slots and use per region.
   */
  ready(options: RequestOptions = {}): Promise<RouteResponse<"ready">> {
    return this.#call("GET", "/readyz", options);
  }

  /** Runtime classes and whether this server can run each (and, if not, what is missing). */
  async runtimes(options: RequestOptions = {}): Promise<RuntimeAvailability[]> {
    const { items } = await this.#call<{ items: RuntimeAvailability[] }>(
      "GET",
      "/api/v1/runtimes",
      options,
    );
    return items;
  }

  /** The principal the token authenticates: org, actor, role, key, effective scopes, entitlements. */
  whoami(options: RequestOptions = {}): Promise<Principal> {
    return this.#call<Principal>("GET", "/api/v1/me", options);
  }

  /**
   * Runs a tool through the agent gate (`POST /api/agent/invoke`), as an agent's key does. The
   * caller needs the `shells.agent.invoke` entitlement (else `entitlement_required`) AND the
   * permission the tool's operation needs; every decision lands in the activity log.
   *
   * ```ts
   * const { result } = await agent.invoke("shells_exec", { shell: id, command: ["ls"] });
   * ```
   */
  invoke<T extends AgentTool>(
    tool: T,
    args: AgentToolArguments<T>,
    options: RequestOptions = {},
  ): Promise<AgentInvokeResult<T>> {
    return this.#call<AgentInvokeResult<T>>("POST", "/api/agent/invoke", {
      ...options,
      body: { tool, arguments: args },
    });
  }
}
