import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { ContainerBackend } from "./container-backend.js";
import { hostReport, makeTestBackend, request, SMALL } from "./internal/test-support.js";

// Slow on the first run only: builds the python image (about 20–60 s) into the shared cache.
describe.runIf(hostReport.available)("a python shell", () => {
  let backend: ContainerBackend;
  let cleanup: () => Promise<void>;

  beforeAll(async () => {
    ({ backend, cleanup } = await makeTestBackend());
    await backend.create({
      shellId: "py",
      language: "python",
      runtime: "container",
      network: "localhost",
      resources: { ...SMALL, memoryMb: 256, diskMb: 256 },
      env: {},
    });
  }, 600_000);
  afterAll(() => cleanup());

  it("keeps `python3 -m http.server 8000 &` answering later execs", async () => {
    // As a user types it: no redirection, so the server logs each request long after the exec
    // that started it has ended.
    const started = await backend.exec(
      "py",
      request(["sh", "-c", "python3 -m http.server 8000 & sleep 1; echo started"]),
    );
    expect(started.stdout).toBe("started\n");
    const fetch =
      "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:8000/').status)";
    for (let i = 0; i < 3; i++) {
      const result = await backend.exec("py", request(["python3", "-c", fetch]));
      expect(result).toMatchObject({ exitCode: 0, stdout: "200\n" });
    }
  });

  it("has pip, and lets root write to the system site-packages", async () => {
    const pip = await backend.exec("py", request(["python3", "-m", "pip", "--version"]));
    expect(pip.exitCode).toBe(0);
    const site = await backend.exec(
      "py",
      request([
        "sh",
        "-c",
        "d=$(python3 -c 'import sysconfig; print(sysconfig.get_paths()[\"purelib\"])'); mkdir -p $d && echo 'X = 1' > $d/shellsprobe.py && python3 -c 'import shellsprobe; print(shellsprobe.X)'",
      ]),
    );
    expect(site).toMatchObject({ exitCode: 0, stdout: "1\n" });
  });
});
