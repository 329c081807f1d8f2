import { spawnSync } from "node:child_process";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { KubeConfig } from "@kubernetes/client-node";
import { SandboxError, type SandboxSpec } from "@shells/sandbox";
import { afterEach, beforeAll, afterAll, describe, expect, it } from "vitest";
import { loadKubeConfig } from "./kube-config.js";
import {
  KUBERNETES_API_PERMISSIONS,
  KubernetesBackend,
  type KubernetesBackendOptions,
} from "./kubernetes-backend.js";
import {
  EXEC_WRAPPER,
  OOM_CHECK_SCRIPT,
  SIGNAL_SCRIPT,
  SNAPSHOT_SCRIPT,
} from "./internal/shell-scripts.js";
import {
  FakeKubeApi,
  encodeFrame,
  fixture,
  kubeconfigFor,
  type ExecCall,
  type ExecReplay,
  type FakeKubeApiOptions,
  type RecordedRequest,
} from "./test-support/fake-kube-api.js";
import { assertValidObject, type KubernetesObject } from "./test-support/schemas.js";

/**
 * The backend's handling of the Kubernetes API's answers, against a loopback server that speaks the
 * API's wire format with recorded answers (see `test-support/fake-kube-api.ts`). There is no
 * Kubernetes cluster here: these tests show what the backend sends (every object validated
 * against the 1.33 schemas) and what it makes of each answer — watch events, 409, 404, 410, exec
 * frames — not that a cluster runs shells.
 */

const NS = "shells-sandboxes";
const PODS = `/api/v1/namespaces/${NS}/pods`;
const SECRETS = `/api/v1/namespaces/${NS}/secrets`;
const RUNTIME_CLASSES = "/apis/node.k8s.io/v1/runtimeclasses";

let fake: FakeKubeApi;
let fakeUrl: string;
let backend: KubernetesBackend;
afterEach(async () => {
  await backend?.close();
  await fake?.close();
});

async function setup(
  options: Partial<KubernetesBackendOptions> = {},
  fakeOptions: FakeKubeApiOptions = {},
): Promise<void> {
  fake = new FakeKubeApi(fakeOptions);
  fakeUrl = await fake.listen();
  fake.put(RUNTIME_CLASSES, {
    apiVersion: "node.k8s.io/v1",
    kind: "RuntimeClass",
    metadata: { name: "gvisor" },
    handler: "runsc",
  });
  backend = newBackend(options);
  fake.onExec = answerScripts();
}

/** A backend on the fake (a second one is a restarted control plane). */
function newBackend(options: Partial<KubernetesBackendOptions> = {}): KubernetesBackend {
  const kubeConfig = new KubeConfig();
  kubeConfig.loadFromOptions({
    // The client refuses plain http unless TLS checks are off; there is no TLS here to check.
    clusters: [{ name: "fake", server: fakeUrl, skipTLSVerify: true }],
    users: [{ name: "tester", token: "t" }],
    contexts: [{ name: "fake", cluster: "fake", user: "tester" }],
    currentContext: "fake",
  });
  return new KubernetesBackend({
    kubeConfig,
    namespace: NS,
    agentImage: "shells-control-plane:0.1.0",
    startTimeoutMs: 5_000,
    ...options,
  });
}

const spec = (shellId = "sh-0123456789", extra: Partial<SandboxSpec> = {}): SandboxSpec => ({
  shellId,
  language: "bash",
  runtime: "container",
  network: "sealed",
  resources: { cpu: 1, memoryMb: 256, pids: 128, diskMb: 512 },
  env: { GREETING: "hello" },
  ...extra,
});

const ok = (stdout = ""): ExecReplay => ({
  frames: [
    ...(stdout ? [{ channel: 1, text: stdout }] : []),
    { channel: 3, json: { metadata: {}, status: "Success" } },
  ],
});
const exitStatus = (code: number) => ({
  channel: 3,
  json: {
    metadata: {},
    status: "Failure",
    message: `command terminated with non-zero exit code: exit code ${code}`,
    reason: "NonZeroExitCode",
    details: { causes: [{ reason: "ExitCode", message: String(code) }] },
  },
});

/** Answers the backend's fixed scripts; `exec` answers the exec wrapper (default: success). */
function answerScripts(exec: (call: ExecCall) => ExecReplay = () => ok()) {
  return (call: ExecCall): ExecReplay => {
    const script = call.command[2];
    if (script === EXEC_WRAPPER) return exec(call);
    if (script === SNAPSHOT_SCRIPT) return ok("10240\n");
    return ok();
  };
}

const run = (shellId: string, command: string[], extra = {}) =>
  backend.exec(shellId, {
    command,
    env: {},
    cwd: "/workspace",
    stdin: undefined,
    timeoutMs: 20_000,
    maxOutputBytes: 1024 * 1024,
    ...extra,
  });

const errorOf = (promise: Promise<unknown>) =>
  promise.then(
    () => null,
    (error: unknown) => error as SandboxError,
  );

/** The RBAC verb of an API request, as the authorizer derives it. */
function permissionOf(request: RecordedRequest): { resource: string; verb: string } {
  const m =
    /^\/apis?\/(?:[^/]+\/)?v1\/(?:namespaces\/[^/]+\/)?([a-z]+)(?:\/([^/]+))?(?:\/([a-z]+))?$/.exec(
      request.path,
    );
  const resource = `${m?.[1] ?? "?"}${m?.[3] ? `/${m[3]}` : ""}`;
  const named = Boolean(m?.[2]);
  const verb =
    request.method === "POST"
      ? "create"
      : request.method === "PUT"
        ? "update"
        : request.method === "DELETE"
          ? "delete"
          : request.query.get("watch") === "true"
            ? "watch"
            : named
              ? "get"
              : "list";
  return { resource, verb };
}

describe("constructing the backend", () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "shells-k8s-config-"));
  });
  afterAll(async () => rm(dir, { recursive: true, force: true }));

  it("from a kubeconfig file: it calls the cluster with the file's credentials", async () => {
    await setup();
    const path = join(dir, "kubeconfig");
    await writeFile(path, kubeconfigFor(fakeUrl, "file-token"));
    const fromFile = new KubernetesBackend({
      kubeConfig: loadKubeConfig({ kubeconfigPath: path }),
      namespace: NS,
      agentImage: "a",
    });
    const [offered] = await fromFile.availability();
    expect(offered).toMatchObject({ runtime: "container", available: true, backend: "kubernetes" });
    expect(offered?.reason).toContain("unverified against a live cluster");
    expect(fake.requests.at(-1)?.headers.authorization).toBe("Bearer file-token");
    await fromFile.close();
  });

  const openssl = spawnSync("openssl", ["version"]).status === 0;
  it.skipIf(!openssl)(
    "from a Pod's service account: the token file, and TLS checked against the service account's CA",
    async () => {
      const key = join(dir, "key.pem");
      const cert = join(dir, "cert.pem");
      const made = spawnSync("openssl", [
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        key,
        "-out",
        cert,
        "-days",
        "1",
        "-subj",
        "/CN=127.0.0.1",
        "-addext",
        "subjectAltName=IP:127.0.0.1",
      ]);
      expect(made.status, made.stderr.toString()).toBe(0);
      fake = new FakeKubeApi({
        tls: { key: await readFile(key, "utf8"), cert: await readFile(cert, "utf8") },
      });
      const port = new URL(await fake.listen()).port;
      fake.put(RUNTIME_CLASSES, {
        apiVersion: "node.k8s.io/v1",
        kind: "RuntimeClass",
        metadata: { name: "gvisor" },
        handler: "runsc",
      });
      const account = join(dir, "root", "var/run/secrets/kubernetes.io/serviceaccount");
      await mkdir(account, { recursive: true });
      await writeFile(join(account, "token"), "service-account-token");
      await writeFile(join(account, "ca.crt"), await readFile(cert));
      await writeFile(join(account, "namespace"), NS);
      const saved = { ...process.env };
      process.env.KUBERNETES_SERVICE_HOST = "127.0.0.1";
      process.env.KUBERNETES_SERVICE_PORT = port;
      try {
        const inCluster = new KubernetesBackend({
          kubeConfig: loadKubeConfig({ inCluster: { rootDir: join(dir, "root") } }),
          namespace: NS,
          agentImage: "a",
        });
        const [offered] = await inCluster.availability();
        expect(offered?.available, offered?.reason ?? "").toBe(true);
        expect(fake.requests.at(-1)?.headers.authorization).toBe("Bearer service-account-token");
        await inCluster.close();
      } finally {
        process.env = saved;
      }
    },
  );
  if (!openssl) it.skip("from a Pod's service account (needs openssl to make a test CA)", () => {});

  it("reports a missing RuntimeClass as unavailable, with the reason", async () => {
    await setup({ runtimeClassName: "kata-qemu" });
    const [offered] = await backend.availability();
    expect(offered).toMatchObject({ runtime: "microvm", available: false });
    expect(offered?.reason).toContain("no RuntimeClass kata-qemu");
  });
});

describe("creating a shell", () => {
  it("sends a Secret, two PVCs, a NetworkPolicy and a Pod, each valid against the schemas, and waits until the Pod runs", async () => {
    await setup();
    const info = await backend.create(spec());
    expect(info).toMatchObject({
      shellId: "sh-0123456789",
      state: "running",
      isolation: "kubernetes (RuntimeClass gvisor)",
    });
    expect(info.imageVersion).toMatch(/@sha256:/);
    const kinds = fake.sentObjects.map((o) => o.kind);
    expect(kinds).toEqual([
      "Secret",
      "PersistentVolumeClaim",
      "PersistentVolumeClaim",
      "NetworkPolicy",
      "Pod",
    ]);
    for (const object of fake.sentObjects) await assertValidObject(object as KubernetesObject);
    // It waited through the watch: the Pod's running status came as a MODIFIED event.
    expect(fake.requests.some((r) => r.path === PODS && r.query.get("watch") === "true")).toBe(
      true,
    );
  });

  it("re-lists and watches again when the watch answers 410 Gone", async () => {
    await setup();
    fake.expireWatches = 1;
    expect(await backend.create(spec())).toMatchObject({ state: "running" });
    const podLists = fake.requests.filter(
      (r) => r.path === PODS && r.method === "GET" && r.query.get("watch") !== "true",
    );
    expect(podLists.length).toBeGreaterThanOrEqual(2);
  });

  it("adopts the objects a create cut short left behind (409 AlreadyExists on its own objects)", async () => {
    await setup();
    await backend.create(spec());
    await backend.close();
    // A new control plane process creates the same shell again over the objects already there.
    backend = newBackend();
    expect(await backend.create(spec())).toMatchObject({ state: "running" });
    expect(fake.stored("pods")).toHaveLength(1);
  });

  it("refuses a name taken by an object that is not its own, and leaves that object alone", async () => {
    await setup();
    fake.put(SECRETS, {
      apiVersion: "v1",
      kind: "Secret",
      metadata: { name: "shells-sh-0123456789", labels: { team: "other" } },
    });
    const error = await errorOf(backend.create(spec()));
    expect(error).toBeInstanceOf(SandboxError);
    expect(error?.message).toContain("is not this control plane's object");
    expect(fake.stored("secrets").map((s) => s.metadata.labels)).toEqual([{ team: "other" }]);
    expect(fake.stored("pods")).toEqual([]);
    expect(fake.stored("persistentvolumeclaims")).toEqual([]);
  });

  it("gives up on an image that can never be pulled, and leaves nothing behind", async () => {
    await setup();
    fake.podStatusOnStart = () => fixture("pod-status-invalid-image.json");
    const error = await errorOf(backend.create(spec()));
    expect(error?.code).toBe("failed");
    expect(error?.message).toContain("InvalidImageName");
    for (const plural of ["pods", "secrets", "persistentvolumeclaims", "networkpolicies"])
      await expect.poll(() => fake.stored(plural)).toEqual([]);
  });

  it("refuses what it cannot honour with unsupported", async () => {
    await setup();
    expect((await errorOf(backend.create(spec("sh-1", { runtime: "microvm" }))))?.code).toBe(
      "unsupported",
    );
    expect((await errorOf(backend.create(spec("sh-1", { network: "internet" }))))?.code).toBe(
      "unsupported",
    );
    expect((await errorOf(backend.create(spec("Sh_Upper"))))?.code).toBe("unsupported");
    expect((await errorOf(backend.create(spec("sh-1", { from: { captureId: "c" } }))))?.code).toBe(
      "unsupported",
    );
    expect(fake.sentObjects).toEqual([]);
  });
});

describe("running commands", () => {
  it("runs the command through the exec wrapper and reads its output and exit code", async () => {
    await setup();
    fake.onExec = answerScripts(() => ({
      ...fixture<ExecReplay>("exec-v5-nonzero-exit.json"),
      afterInput: true,
    }));
    await backend.create(spec());
    const result = await run("sh-0123456789", ["sh", "-c", "exit 3"], {
      env: { A: "1" },
      stdin: "input",
      cwd: "/workspace/sub",
    });
    expect(result).toMatchObject({ exitCode: 3, stdout: "hello from the pod\n", stderr: "oops\n" });
    expect(result.killReason).toBeUndefined();
    const call = fake.execCalls.find((c) => c.command[2] === EXEC_WRAPPER)!;
    expect(call).toMatchObject({ pod: "shells-sh-0123456789", container: "shell", tty: false });
    // id, cwd, stdin length, wall clock (s), then env assignments and the command.
    expect(call.command.slice(5)).toEqual([
      "/workspace/sub",
      "5",
      "20.000",
      "env",
      "A=1",
      "sh",
      "-c",
      "exit 3",
    ]);
    await expect.poll(() => call.received.map((f) => f.toString("latin1"))).toEqual(["\x00input"]);
  });

  it("cuts output at the limit, ends the command through the signal script and says output_limit", async () => {
    await setup();
    let held: ExecCall | undefined;
    fake.onExec = (call) => {
      const script = call.command[2];
      if (script === EXEC_WRAPPER) {
        held = call;
        return { frames: [{ channel: 1, text: "x".repeat(4000) }], holdOpen: true };
      }
      if (script === SIGNAL_SCRIPT) {
        // `timeout` takes the ALRM as its time being up and kills the group: exit 137.
        held?.socket.send(encodeFrame(exitStatus(137)));
        held?.socket.close();
      }
      return ok();
    };
    await backend.create(spec());
    const result = await run("sh-0123456789", ["yes"], { maxOutputBytes: 1000 });
    expect(result).toMatchObject({ exitCode: 137, killReason: "output_limit", truncated: true });
    expect(result.stdout).toHaveLength(1000);
    const signal = fake.execCalls.find((c) => c.command[2] === SIGNAL_SCRIPT)!;
    expect(signal.command.slice(4)).toEqual([held!.command[4], "ALRM", ""]);
  });

  it("reads a SIGKILL past the wall clock as wall_clock", async () => {
    await setup();
    fake.onExec = answerScripts(() => ({ frames: [], holdOpen: true }));
    await backend.create(spec());
    const pending = run("sh-0123456789", ["sleep", "60"], { timeoutMs: 50 });
    await expect.poll(() => fake.execCalls.some((c) => c.command[2] === EXEC_WRAPPER)).toBe(true);
    await new Promise((resolve) => setTimeout(resolve, 80));
    const call = fake.execCalls.find((c) => c.command[2] === EXEC_WRAPPER)!;
    call.socket.send(encodeFrame(exitStatus(137)));
    call.socket.close();
    expect(await pending).toMatchObject({ exitCode: 137, killReason: "wall_clock" });
  });

  it("reads a SIGKILL the cgroup's OOM killer caused (the wrapper's mark) as oom", async () => {
    await setup();
    fake.onExec = (call) => {
      if (call.command[2] === EXEC_WRAPPER) return fixture<ExecReplay>("exec-v5-killed.json");
      if (call.command[2] === OOM_CHECK_SCRIPT) return ok("oom\n");
      return ok();
    };
    await backend.create(spec());
    expect(await run("sh-0123456789", ["python3", "-c", "x = ' ' * 10**10"])).toMatchObject({
      exitCode: 137,
      killReason: "oom",
    });
  });

  it("ends a running exec with killReason stopped when the shell is stopped", async () => {
    await setup();
    fake.onExec = answerScripts(() => ({
      frames: [{ channel: 1, text: "working\n" }],
      holdOpen: true,
    }));
    await backend.create(spec());
    const pending = run("sh-0123456789", ["sleep", "60"]);
    await expect.poll(() => fake.execCalls.some((c) => c.command[2] === EXEC_WRAPPER)).toBe(true);
    expect(await backend.stop("sh-0123456789")).toMatchObject({ state: "stopped" });
    expect(await pending).toMatchObject({
      exitCode: 137,
      killReason: "stopped",
      stdout: "working\n",
    });
  });

  it("ends a running exec with killReason oom when its Pod was OOM-killed", async () => {
    await setup();
    fake.onExec = answerScripts(() => ({ frames: [], holdOpen: true }));
    await backend.create(spec());
    const pending = run("sh-0123456789", ["sleep", "60"]);
    await expect.poll(() => fake.execCalls.some((c) => c.command[2] === EXEC_WRAPPER)).toBe(true);
    fake.setPodStatus(PODS, "shells-sh-0123456789", fixture("pod-status-oomkilled.json"));
    fake.execCalls.find((c) => c.command[2] === EXEC_WRAPPER)!.socket.terminate();
    expect(await pending).toMatchObject({ exitCode: 137, killReason: "oom" });
  });

  it("answers not_running for a stopped shell and not_found for an unknown one", async () => {
    await setup();
    await backend.create(spec());
    await backend.stop("sh-0123456789");
    expect((await errorOf(run("sh-0123456789", ["true"])))?.code).toBe("not_running");
    expect((await errorOf(run("sh-unknown", ["true"])))?.code).toBe("not_found");
  });

  it("reports an exec the runtime could not start as failed", async () => {
    await setup();
    fake.onExec = answerScripts(() => fixture<ExecReplay>("exec-v5-internal-error.json"));
    await backend.create(spec());
    const error = await errorOf(run("sh-0123456789", ["true"]));
    expect(error?.code).toBe("failed");
    expect(error?.message).toContain("no such file or directory");
  });
});

describe("a shell's lifecycle", () => {
  it("stops by deleting the Pod and keeps its state; starts a new Pod on it", async () => {
    await setup();
    await backend.create(spec());
    await backend.stop("sh-0123456789");
    expect(fake.stored("pods")).toEqual([]);
    expect(fake.stored("persistentvolumeclaims")).toHaveLength(2);
    expect(fake.stored("secrets")).toHaveLength(1);
    expect(fake.stored("networkpolicies")).toHaveLength(1);
    // A restarted control plane reads the spec back from the Secret.
    await backend.close();
    backend = newBackend();
    expect(await backend.start("sh-0123456789")).toMatchObject({ state: "running" });
    const pods = fake.sentObjects.filter((o) => o.kind === "Pod");
    expect(pods).toHaveLength(2);
    expect(pods[1]).toEqual(pods[0]);
  });

  it("destroys every object of the shell, and a second destroy (everything 404) is fine", async () => {
    await setup();
    await backend.create(spec());
    await backend.create(spec("sh-other"));
    await backend.destroy("sh-0123456789");
    for (const plural of ["pods", "secrets", "persistentvolumeclaims", "networkpolicies"]) {
      await expect
        .poll(() =>
          fake
            .stored(plural)
            .filter((o) => o.metadata.labels?.["shells.dev/shell-id"] === "sh-0123456789"),
        )
        .toEqual([]);
      expect(fake.stored(plural).length).toBeGreaterThan(0);
    }
    await backend.destroy("sh-0123456789");
    const answers404 = fake.intercept;
    fake.intercept = (request) =>
      request.method === "DELETE"
        ? { status: 404, body: fixture("status-not-found.json", { kind: "pods", name: "x" }) }
        : answers404(request);
    fake.put(PODS, {
      apiVersion: "v1",
      kind: "Pod",
      metadata: {
        name: "shells-sh-other",
        labels: {
          "app.kubernetes.io/managed-by": "shells",
          "shells.dev/instance": "default",
          "shells.dev/shell-id": "sh-other",
        },
      },
    });
    await backend.destroy("sh-other");
  });

  it("lists every shell of its instance from labels, and reaps a maintenance Pod that ended", async () => {
    await setup();
    await backend.create(spec("sh-a"));
    await backend.create(spec("sh-b"));
    await backend.stop("sh-b");
    const maintenance = (shellId: string) => ({
      "app.kubernetes.io/managed-by": "shells",
      "shells.dev/instance": "default",
      "shells.dev/shell-id": shellId,
      "app.kubernetes.io/component": "maintenance",
    });
    // A maintenance Pod a crash left, past its deadline; and one another replica works in now.
    fake.put(PODS, {
      apiVersion: "v1",
      kind: "Pod",
      metadata: { name: "shells-sh-b-maint", labels: maintenance("sh-b") },
      status: fixture("pod-status-deadline-exceeded.json"),
    });
    fake.put(PODS, {
      apiVersion: "v1",
      kind: "Pod",
      metadata: {
        name: "shells-sh-a-maint",
        labels: maintenance("sh-a"),
        creationTimestamp: new Date().toISOString(),
      },
      status: fixture("pod-status-running.json"),
    });
    fake.put(PODS, {
      apiVersion: "v1",
      kind: "Pod",
      metadata: { name: "someone-else", labels: { app: "x" } },
    });
    expect(await backend.list()).toMatchObject([
      { shellId: "sh-a", state: "running" },
      { shellId: "sh-b", state: "stopped" },
    ]);
    await expect
      .poll(() =>
        fake
          .stored("pods")
          .map((p) => p.metadata.name)
          .sort(),
      )
      .toEqual(["shells-sh-a", "shells-sh-a-maint", "someone-else"]);
  });

  it("wipes state with a new, empty state volume and a new Pod", async () => {
    await setup();
    await backend.create(spec());
    const before = fake
      .stored("persistentvolumeclaims")
      .find((p) => p.metadata.name.endsWith("-state"))!;
    expect(await backend.wipeState("sh-0123456789")).toMatchObject({ state: "running" });
    const after = fake
      .stored("persistentvolumeclaims")
      .find((p) => p.metadata.name.endsWith("-state"))!;
    expect(after.metadata.uid).not.toBe(before.metadata.uid);
    expect(fake.stored("pods")).toHaveLength(1);
  });
});

describe("snapshots", () => {
  it("archives the workspace in the agent container and records it on the snapshots volume", async () => {
    await setup();
    await backend.create(spec());
    const snapshot = await backend.snapshot("sh-0123456789", "before-upgrade");
    expect(snapshot).toMatchObject({ name: "before-upgrade", sizeBytes: 10240 });
    const call = fake.execCalls.find((c) => c.command[2] === SNAPSHOT_SCRIPT)!;
    expect(call).toMatchObject({ pod: "shells-sh-0123456789", container: "agent" });
    expect(call.command.slice(4)).toEqual(["before-upgrade"]);
    expect(await backend.listSnapshots("sh-0123456789")).toEqual([snapshot]);
    for (const object of fake.sentObjects) await assertValidObject(object as KubernetesObject);
  });

  it("tries the record again when it lost a race (409 Conflict on a stale resourceVersion)", async () => {
    await setup();
    await backend.create(spec());
    let conflicts = 0;
    fake.intercept = (request) => {
      if (request.method === "PUT" && conflicts === 0) {
        conflicts += 1;
        return {
          status: 409,
          body: fixture("status-conflict.json", { kind: "persistentvolumeclaims", name: "x" }),
        };
      }
      return undefined;
    };
    await backend.snapshot("sh-0123456789", "one");
    expect(conflicts).toBe(1);
    expect((await backend.listSnapshots("sh-0123456789")).map((s) => s.name)).toEqual(["one"]);
  });

  it("snapshots a stopped shell through a maintenance Pod it deletes afterwards", async () => {
    await setup();
    await backend.create(spec());
    await backend.stop("sh-0123456789");
    await backend.snapshot("sh-0123456789", "cold");
    const call = fake.execCalls.find((c) => c.command[2] === SNAPSHOT_SCRIPT)!;
    expect(call).toMatchObject({ pod: "shells-sh-0123456789-maint", container: "agent" });
    await expect.poll(() => fake.stored("pods")).toEqual([]);
  });

  it("refuses to restore a snapshot that does not exist", async () => {
    await setup();
    await backend.create(spec());
    expect((await errorOf(backend.restore("sh-0123456789", "nope")))?.code).toBe(
      "snapshot_not_found",
    );
  });
});

describe("least privilege", () => {
  it("makes only the API requests the Role in deploy/kubernetes grants", async () => {
    await setup();
    await backend.availability();
    await backend.create(spec());
    // A restarted control plane adopts the shell's objects and reads its spec from the Secret.
    await backend.close();
    backend = newBackend();
    await backend.create(spec());
    await run("sh-0123456789", ["true"]);
    await backend.snapshot("sh-0123456789", "s");
    await backend.restore("sh-0123456789", "s");
    await backend.wipeState("sh-0123456789");
    await backend.stop("sh-0123456789");
    await backend.list();
    await backend.destroy("sh-0123456789");
    const granted = [
      ...KUBERNETES_API_PERMISSIONS.namespaced,
      ...KUBERNETES_API_PERMISSIONS.cluster,
    ];
    const used = new Set(fake.requests.map((r) => JSON.stringify(permissionOf(r))));
    for (const entry of used) {
      const { resource, verb } = JSON.parse(entry) as { resource: string; verb: string };
      const rule = granted.find((g) => g.resource === resource);
      expect(rule?.verbs, `${verb} ${resource}`).toContain(verb);
    }
    // And every permission granted is used (none to spare), but exec's `create`, which only newer
    // API servers ask for on the WebSocket upgrade.
    for (const rule of granted)
      for (const verb of rule.verbs)
        if (!(rule.resource === "pods/exec" && verb === "create"))
          expect(used, `${verb} ${rule.resource}`).toContain(
            JSON.stringify({ resource: rule.resource, verb }),
          );
  });
});
