import { randomBytes } from "node:crypto";
import { access, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { ContainerBackend } from "./container-backend.js";
import { runChecked } from "./internal/proc.js";
import { bashSpec, hostReport, makeTestBackend, request } from "./internal/test-support.js";

const exists = (path: string) =>
  access(path).then(
    () => true,
    () => false,
  );

// The exec/spawn helper starts as host root with the command's environment at hand: none of it may
// steer the helper's own dynamic loader (a library the caller chose would run as host root).
describe.runIf(hostReport.available)("a command's environment and the host-side helper", () => {
  let backend: ContainerBackend;
  let cleanup: () => Promise<void>;
  let dir: string;
  let library: string;
  let marker: string;

  beforeAll(async () => {
    ({ backend, cleanup } = await makeTestBackend());
    await backend.create(bashSpec("env", { env: { LD_LIBRARY_PATH: "/nonexistent-shell-lib" } }));
    dir = await mkdtemp(`${tmpdir()}/shells-preload-`);
    marker = `${dir}/loaded-${randomBytes(4).toString("hex")}`;
    // A host library that leaves a marker on the host when any process loads it.
    await writeFile(
      `${dir}/preload.c`,
      `#include <fcntl.h>\n#include <unistd.h>\n__attribute__((constructor)) static void mark(void) { int fd = open("${marker}", O_CREAT | O_WRONLY, 0600); if (fd >= 0) close(fd); }\n`,
    );
    library = `${dir}/preload.so`;
    await runChecked("gcc", ["-shared", "-fPIC", "-o", library, `${dir}/preload.c`]);
  });
  afterAll(async () => {
    await cleanup();
    await rm(dir, { recursive: true, force: true });
  });

  it("never lets LD_PRELOAD of an exec reach the helper, yet gives it to the command", async () => {
    const result = await backend.exec(
      "env",
      request(["sh", "-c", 'echo "$LD_PRELOAD|$LD_LIBRARY_PATH"'], {
        env: { LD_PRELOAD: library, GCONV_PATH: dir },
      }),
    );
    expect(await exists(marker)).toBe(false);
    expect(result.stdout).toBe(`${library}|/nonexistent-shell-lib\n`);
  });

  it("never lets LD_PRELOAD of a spawned process reach the helper", async () => {
    let out = "";
    const proc = await backend.spawn(
      "env",
      {
        command: ["sh", "-c", 'echo "$LD_PRELOAD"'],
        env: { LD_PRELOAD: library },
        cwd: "/",
        pty: { cols: 80, rows: 24 },
      },
      { onOutput: (_stream, chunk) => void (out += new TextDecoder().decode(chunk)) },
    );
    expect((await proc.exit).exitCode).toBe(0);
    expect(await exists(marker)).toBe(false);
    expect(out).toContain(library);
  });
});
