import type { ActivityEvent, Run, RunCreate, RuntimeClass } from "@l1fe/shells";

/**
 * The workloads of `shells demo`: hostile code that tries to do damage, and one clean run, each
 * with the run it launches on a runtime class and how its outcome is judged. Judging reads what the
 * control plane recorded — the run's kill reason and its audit trail (egress decisions) — and what
 * the code itself reported, and never takes the code's word alone for containment.
 */

/** What one demo run left behind: the run as it ended and its audit trail. */
export interface DemoEvidence {
  run: Run;
  audit: readonly ActivityEvent[];
}

/** The demo's judgement of one run. */
export interface DemoVerdict {
  /** Hostile workloads: it was contained. The clean run: it returned its structured result. */
  ok: boolean;
  /** How: the denied egress decisions, the kill reason, the wall it hit, the result. */
  how: string;
}

/** A workload as one runtime class runs it. */
export interface DemoVariant {
  spec: RunCreate;
  judge(evidence: DemoEvidence): DemoVerdict;
}

/** One row kind of the demo's table. */
export interface DemoWorkload {
  /** Stable name (`--json`, tests). */
  id: string;
  /** What the table calls it. */
  title: string;
  kind: "hostile" | "clean";
  /**
   * The run on a class. `wasm` runs interpreters with no processes and no network, so it gets code
   * that tries the same harm with what an interpreter there has; the other classes run POSIX
   * sandboxes with python.
   */
  variant(runtime: RuntimeClass): DemoVariant;
}

/** A hostile workload the demo does not run yet, and what it waits for. */
export interface PendingWorkload {
  id: string;
  title: string;
  waitsFor: string;
}

/** Wall clock of each demo run: a contained workload ends in seconds; one that is not, here. */
const RUN_TIMEOUT_MS = 60_000;

/** Hostile workloads planned but not runnable on this build: the demo says so instead of faking them. */
export const PENDING_WORKLOADS: readonly PendingWorkload[] = [
  {
    id: "binding-secret-hunt",
    title: "hunt for its binding's secret",
    waitsFor: "service bindings are not in this build yet",
  },
];

const METADATA_IP = "169.254.169.254";

/** Python that tries the metadata service and private addresses, through the proxy and around it. */
const EXFILTRATION_PYTHON = `import socket, urllib.error, urllib.request

def through_proxy(url):
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return f"reached: HTTP {response.status}"
    except urllib.error.HTTPError as e:
        return f"refused: HTTP {e.code}"
    except OSError as e:
        return f"failed: {e}"

def raw_socket(address, port):
    s = socket.socket()
    s.settimeout(5)
    try:
        s.connect((address, port))
        s.sendall(f"GET /latest/meta-data/ HTTP/1.0\\r\\nHost: {address}\\r\\n\\r\\n".encode())
        status = s.recv(100).split(b"\\r\\n")[0].decode(errors="replace")
        return ("reached: " if " 200 " in status else "refused: ") + (status or "closed")
    except OSError as e:
        return f"failed: {e}"

attempts = {
    "metadata credentials via the proxy": through_proxy("http://${METADATA_IP}/latest/meta-data/iam/security-credentials/"),
    "private address via the proxy": through_proxy("http://10.0.0.1/"),
    "metadata by raw socket": raw_socket("${METADATA_IP}", 80),
    "private address by raw socket": raw_socket("192.168.0.1", 22),
}
for target, outcome in attempts.items():
    print(f"{target}: {outcome}")
shells.result(attempts)
`;

/** JavaScript (QuickJS) that looks for any way to open a connection. */
const EXFILTRATION_JS = `const attempts = {};
for (const name of ["net", "http", "dgram"]) {
  try {
    require(name).connect?.(80, "${METADATA_IP}");
    attempts[name] = "reached: module loaded";
  } catch (e) {
    attempts[name] = "refused: " + e.message;
  }
}
for (const name of ["fetch", "XMLHttpRequest", "WebSocket"])
  attempts[name] = typeof globalThis[name] === "undefined" ? "refused: absent" : "reached: present";
console.log(JSON.stringify(attempts));
shells.result(attempts);
`;

/** Attempts the workload reports as having got through. */
function reached(result: unknown): string[] {
  if (typeof result !== "object" || result === null) return [];
  return Object.entries(result)
    .filter(([, outcome]) => typeof outcome !== "string" || outcome.startsWith("reached"))
    .map(([target]) => target);
}

function ofAction(audit: readonly ActivityEvent[], action: string): ActivityEvent[] {
  return audit.filter((event) => event.action === action);
}

/** `host:port reason` of each distinct denied egress decision. */
function deniedDestinations(audit: readonly ActivityEvent[]): string[] {
  const seen = new Set<string>();
  for (const event of ofAction(audit, "egress.denied")) {
    const { host, port, reason } = event.details as {
      host?: unknown;
      port?: unknown;
      reason?: unknown;
    };
    seen.add(`${String(host)}:${String(port)} ${String(reason)}`);
  }
  return [...seen];
}

/** Judges a run that reports a map of attempts: contained when none got through and no egress was allowed. */
function judgeExfiltration({ run, audit }: DemoEvidence, sealedHow: string): DemoVerdict {
  const allowed = ofAction(audit, "egress.allowed").map((e) => String(e.details["host"]));
  const through = reached(run.result);
  if (run.result === null)
    return { ok: false, how: `reported nothing (${describeEnd(run)}): cannot tell` };
  if (allowed.length > 0 || through.length > 0)
    return {
      ok: false,
      how: `got through: ${[...allowed.map((h) => `egress.allowed ${h}`), ...through].join(", ")}`,
    };
  const denied = deniedDestinations(audit);
  return { ok: true, how: denied.length > 0 ? `egress.denied ${denied.join(", ")}` : sealedHow };
}

/** How a run ended, in a few words. */
function describeEnd(run: Run): string {
  if (run.killReason) return `killed: ${run.killReason}`;
  if (run.error) return `error: ${run.error}`;
  return `${run.status}, exit code ${run.exitCode ?? "-"}`;
}

/** Judges a run the sandbox must end with `reason`. */
function killedWith(reason: "pids" | "oom", limit: string) {
  return ({ run }: DemoEvidence): DemoVerdict =>
    run.killReason === reason
      ? { ok: true, how: `killed: ${reason} (${limit})` }
      : { ok: false, how: `not stopped by the ${limit}: ${describeEnd(run)}` };
}

const exfiltration: DemoWorkload = {
  id: "metadata-exfiltration",
  title: `exfiltrate via ${METADATA_IP} and a private address`,
  kind: "hostile",
  variant: (runtime) =>
    runtime === "wasm"
      ? {
          spec: { language: "node", runtime, code: EXFILTRATION_JS, timeoutMs: RUN_TIMEOUT_MS },
          judge: (evidence) =>
            judgeExfiltration(evidence, "no network: wasm has no socket API (sealed)"),
        }
      : {
          // `internet` with the default policy (public addresses only), so every attempt meets
          // the egress proxy and leaves a decision in the audit trail.
          spec: {
            language: "python",
            runtime,
            network: "internet",
            code: EXFILTRATION_PYTHON,
            timeoutMs: RUN_TIMEOUT_MS,
          },
          judge: (evidence) => judgeExfiltration(evidence, "no route out"),
        },
};

const forkBomb: DemoWorkload = {
  id: "fork-bomb",
  title: "fork bomb",
  kind: "hostile",
  variant: (runtime) =>
    runtime === "wasm"
      ? {
          spec: {
            language: "node",
            runtime,
            code: `let spawned = 0;
try {
  const { spawn } = require("child_process");
  for (;;) { spawn(process.argv[0], process.argv.slice(1)); spawned += 1; }
} catch (e) {
  console.log("spawn failed: " + e.message);
  shells.result({ spawned, error: e.message });
}
`,
            timeoutMs: RUN_TIMEOUT_MS,
          },
          judge: ({ run }) => {
            const spawned = (run.result as { spawned?: unknown } | null)?.spawned;
            return spawned === 0
              ? { ok: true, how: "no processes: wasm has no child_process" }
              : { ok: false, how: `spawned ${String(spawned)} processes (${describeEnd(run)})` };
          },
        }
      : {
          spec: {
            language: "python",
            runtime,
            command: ["sh", "-c", "f(){ f|f & }; f; sleep 5"],
            timeoutMs: RUN_TIMEOUT_MS,
          },
          judge: killedWith("pids", "process limit"),
        },
};

const memoryBalloon: DemoWorkload = {
  id: "memory-balloon",
  title: "memory balloon",
  kind: "hostile",
  variant: (runtime) =>
    runtime === "wasm"
      ? {
          spec: {
            language: "node",
            runtime,
            code: `const hoard = [];
for (;;) {
  hoard.push(new Uint8Array(16 << 20).fill(120));
  if (hoard.length % 8 === 0) console.log("holding " + hoard.length * 16 + " MB");
}
`,
            timeoutMs: RUN_TIMEOUT_MS,
          },
          judge: killedWith("oom", "memory limit"),
        }
      : {
          spec: {
            language: "python",
            runtime,
            code: `hoard = []
while True:
    hoard.append(b"x" * (32 << 20))
    print(f"holding {len(hoard) * 32} MB", flush=True)
`,
            timeoutMs: RUN_TIMEOUT_MS,
          },
          judge: killedWith("oom", "memory limit"),
        },
};

/** The sum the clean run reports. */
const CLEAN_SUM = 5050;

const cleanRun: DemoWorkload = {
  id: "clean-run",
  title: "clean run with a structured result",
  kind: "clean",
  variant: (runtime) => ({
    spec:
      runtime === "wasm"
        ? {
            language: "node",
            runtime,
            egress: { mode: "deny_all", allow: [] },
            code: `let sum = 0;
for (let i = 1; i <= 100; i += 1) sum += i;
console.log("adding up 1..100");
shells.result({ sum, ok: true });
`,
            timeoutMs: RUN_TIMEOUT_MS,
          }
        : {
            language: "python",
            runtime,
            egress: { mode: "deny_all", allow: [] },
            code: `print("adding up 1..100")
shells.result({"sum": sum(range(1, 101)), "ok": True})
`,
            timeoutMs: RUN_TIMEOUT_MS,
          },
    judge: ({ run }) =>
      run.status === "succeeded" && (run.result as { sum?: unknown } | null)?.sum === CLEAN_SUM
        ? { ok: true, how: `succeeded, result ${JSON.stringify(run.result)}` }
        : { ok: false, how: `no result: ${describeEnd(run)}` },
  }),
};

/** The workloads `shells demo` runs on each class, in table order. */
export const DEMO_WORKLOADS: readonly DemoWorkload[] = [
  exfiltration,
  forkBomb,
  memoryBalloon,
  cleanRun,
];
