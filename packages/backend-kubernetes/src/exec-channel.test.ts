import { KubeConfig } from "@kubernetes/client-node";
import { afterEach, describe, expect, it } from "vitest";
import {
  Channel,
  ExecSession,
  execEndOf,
  execPath,
  type ExecEnd,
} from "./internal/exec-channel.js";
import { FakeKubeApi, fixture, type ExecReplay } from "./test-support/fake-kube-api.js";

/**
 * The exec subresource's channel protocol against recorded frames, replayed by a loopback server
 * over a real WebSocket (handshake, subprotocol negotiation, binary frames).
 */

let fake: FakeKubeApi;
afterEach(async () => fake?.close());

async function configFor(options: ConstructorParameters<typeof FakeKubeApi>[0] = {}) {
  fake = new FakeKubeApi(options);
  const server = await fake.listen();
  const config = new KubeConfig();
  config.loadFromOptions({
    // The client refuses plain http unless TLS checks are off; there is no TLS to check here.
    clusters: [{ name: "fake", server, skipTLSVerify: true }],
    users: [{ name: "tester", token: "exec-token" }],
    contexts: [{ name: "fake", cluster: "fake", user: "tester" }],
    currentContext: "fake",
  });
  return config;
}

const PATH = execPath("shells-sandboxes", "shells-sh-1", "shell", ["/bin/sh", "-c", "exit 3"], {
  stdin: true,
  tty: false,
});

async function run(replay: string | ExecReplay, config: KubeConfig) {
  fake.onExec = () => (typeof replay === "string" ? fixture<ExecReplay>(replay) : replay);
  const output: { stream: string; text: string }[] = [];
  const session = await ExecSession.open(config, PATH, (stream, chunk) => {
    output.push({ stream, text: Buffer.from(chunk).toString("utf8") });
  });
  const end: ExecEnd = await session.end;
  return { session, output, end };
}

describe("the exec channel protocol", () => {
  it("reads stdout and stderr frames and the exit code from the error channel's Status (v5)", async () => {
    const config = await configFor();
    const { session, output, end } = await run("exec-v5-nonzero-exit.json", config);
    expect(session.protocol).toBe("v5.channel.k8s.io");
    expect(output).toEqual([
      { stream: "stdout", text: "hello from the pod\n" },
      { stream: "stderr", text: "oops\n" },
    ]);
    expect(end).toEqual({ kind: "exit", exitCode: 3 });
  });

  it("reads a Success status as exit 0 on a server that speaks only v4", async () => {
    const config = await configFor({ execProtocols: ["v4.channel.k8s.io"] });
    const { session, output, end } = await run("exec-v4-success.json", config);
    expect(session.protocol).toBe("v4.channel.k8s.io");
    expect(output.map((o) => o.text).join("")).toBe("hello world\n");
    expect(end).toEqual({ kind: "exit", exitCode: 0 });
  });

  it("reports a command that could not run (InternalError) as an error, not an exit code", async () => {
    const config = await configFor();
    const { end } = await run("exec-v5-internal-error.json", config);
    expect(end).toMatchObject({ kind: "error", reason: "InternalError" });
    expect((end as { message: string }).message).toContain("no such file or directory");
  });

  it("reports a connection that ended without a Status as closed, after the output it carried", async () => {
    const config = await configFor();
    const { output, end } = await run("exec-v5-connection-lost.json", config);
    expect(output).toEqual([{ stream: "stdout", text: "partial output" }]);
    expect(end).toEqual({ kind: "closed" });
  });

  it("sends the command, container and streams in the query and the client's bearer token", async () => {
    const config = await configFor();
    await run("exec-v4-success.json", config);
    const [call] = fake.execCalls;
    expect(call).toMatchObject({
      pod: "shells-sh-1",
      container: "shell",
      command: ["/bin/sh", "-c", "exit 3"],
      tty: false,
    });
    const request = fake.requests.find((r) => r.path.endsWith("/exec"))!;
    expect(request.headers.authorization).toBe("Bearer exec-token");
    expect(request.query.get("stderr")).toBe("true");
    expect(request.query.get("stdin")).toBe("true");
  });

  it("frames stdin on channel 0, a resize on channel 4 and, on v5, closes stdin with [255, 0]", async () => {
    const config = await configFor();
    fake.onExec = () => ({ frames: [], holdOpen: true });
    const session = await ExecSession.open(config, PATH, () => undefined);
    await session.write(new Uint8Array([0, 1, 2, 255]));
    session.resize(120, 40);
    expect(session.closeStdin()).toBe(true);
    await expect.poll(() => fake.execCalls[0]?.received.length).toBe(3);
    const [stdin, resize, close] = fake.execCalls[0]!.received;
    expect([...stdin!]).toEqual([Channel.stdin, 0, 1, 2, 255]);
    expect(resize![0]).toBe(Channel.resize);
    expect(JSON.parse(resize!.subarray(1).toString("utf8"))).toEqual({ Width: 120, Height: 40 });
    expect([...close!]).toEqual([Channel.close, Channel.stdin]);
    fake.execCalls[0]!.socket.close();
    expect(await session.end).toEqual({ kind: "closed" });
  });

  it("cannot close stdin alone on v4, and says so", async () => {
    const config = await configFor({ execProtocols: ["v4.channel.k8s.io"] });
    fake.onExec = () => ({ frames: [], holdOpen: true });
    const session = await ExecSession.open(config, PATH, () => undefined);
    expect(session.closeStdin()).toBe(false);
    session.close();
    await session.end;
  });

  it("holds the stream while the consumer is busy, and delivers everything before the end", async () => {
    const config = await configFor();
    const frames = Array.from({ length: 20 }, (_, i) => ({ channel: 1, text: `line ${i}\n` }));
    fake.onExec = () => ({
      frames: [...frames, { channel: 3, json: { metadata: {}, status: "Success" } }],
    });
    const seen: string[] = [];
    let busy = 0;
    let overlapped = false;
    const session = await ExecSession.open(config, PATH, async (_stream, chunk) => {
      if (busy > 0) overlapped = true;
      busy += 1;
      await new Promise((resolve) => setTimeout(resolve, 2));
      seen.push(Buffer.from(chunk).toString("utf8"));
      busy -= 1;
    });
    expect(await session.end).toEqual({ kind: "exit", exitCode: 0 });
    expect(seen).toEqual(frames.map((f) => f.text));
    expect(overlapped).toBe(false);
  });
});

describe("the error channel's Status", () => {
  it("reads each documented shape", () => {
    const encode = (value: unknown) => Buffer.from(JSON.stringify(value));
    expect(execEndOf(encode({ metadata: {}, status: "Success" }))).toEqual({
      kind: "exit",
      exitCode: 0,
    });
    expect(
      execEndOf(
        encode({
          status: "Failure",
          reason: "NonZeroExitCode",
          details: { causes: [{ reason: "ExitCode", message: "137" }] },
        }),
      ),
    ).toEqual({ kind: "exit", exitCode: 137 });
    expect(execEndOf(Buffer.from("not json"))).toMatchObject({ kind: "error" });
  });
});
