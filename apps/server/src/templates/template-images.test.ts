import { customImageId } from "@shells/contract";
import { SimulatorBackend } from "@shells/sandbox";
import { afterEach, describe, expect, it } from "vitest";
import { sha256 } from "../audit/sha256.js";
import { createTestApp, type TestApp } from "../test-support/test-app.js";
import { describeEachStore } from "../test-support/test-stores.js";

// Templates' custom images through the API, over the simulator's model of a slow image build:
// shells wait for the build as `provisioning`, share it with an admin's build request, run on the
// image; classes without custom images refuse; the sweep removes what nothing needs, recorded.

const RECIPE = { packages: ["jq"], files: [{ path: "/etc/tool.conf", content: "x = 1\n" }] };
const DEFINITION = { language: "bash", runtime: "container", image: RECIPE };
const IMAGE_ID = customImageId(sha256, "bash", RECIPE);

let t: TestApp;
afterEach(async () => {
  await t?.close();
});

interface ShellBody {
  id: string;
  status: string;
  statusReason: string | null;
  imageVersion: string | null;
}

async function defineTemplate(definition: unknown = DEFINITION): Promise<void> {
  const created = await t.call("POST", "/api/v1/templates", { name: "tools", definition });
  expect(created.statusCode, created.body).toBe(201);
}

async function actions(
  prefix: string,
): Promise<{ action: string; details: Record<string, unknown> }[]> {
  return (await t.call("GET", `/api/v1/activity?action=${prefix}`)).json().items;
}

describe("template images", () => {
  it("builds a version's image once for its first shells and an admin's request, then runs them on it", async () => {
    const backend = new SimulatorBackend({ imageBuildMs: 500 });
    t = await createTestApp({ backends: [backend] });
    await defineTemplate();
    expect((await t.call("GET", "/api/v1/templates/tools/versions/1/image")).json()).toMatchObject({
      template: "tools",
      version: 1,
      imageId: IMAGE_ID,
      state: "missing",
      percent: null,
    });

    const [first, second] = await Promise.all([
      t.call("POST", "/api/v1/shells", { template: "tools" }),
      t.call("POST", "/api/v1/shells", { template: "tools" }),
    ]);
    for (const created of [first, second]) {
      expect(created.statusCode, created.body).toBe(201);
      expect(created.json()).toMatchObject({ status: "provisioning" });
      expect(created.json().statusReason).toContain(IMAGE_ID);
    }
    const build = await t.call("POST", "/api/v1/templates/tools/versions/1/image");
    expect(build.statusCode, build.body).toBe(200);
    expect(build.json()).toMatchObject({ imageId: IMAGE_ID, state: "building" });

    await expect
      .poll(async () => (await t.call("GET", "/api/v1/templates/tools/versions/1/image")).json())
      .toMatchObject({ state: "ready", percent: 100 });
    for (const created of [first, second]) {
      await expect
        .poll(async () => {
          const shell = (await t.call("GET", `/api/v1/shells/${created.json().id}`)).json();
          return shell as ShellBody;
        })
        .toMatchObject({ status: "running", imageVersion: IMAGE_ID });
    }
    expect(backend.imageBuilds.get(IMAGE_ID)).toBe(1);
    // Asked for while building: the request joined the build and recorded nothing new.
    expect(await actions("template.image.build")).toHaveLength(0);

    // Cached now: the next shell starts at once, and a build request answers ready.
    const third = await t.call("POST", "/api/v1/shells", { template: "tools" });
    expect(third.json()).toMatchObject({ status: "running", imageVersion: IMAGE_ID });
    const again = await t.call("POST", "/api/v1/templates/tools/versions/1/image");
    expect(again.json()).toMatchObject({ state: "ready" });
    expect(backend.imageBuilds.get(IMAGE_ID)).toBe(1);
  });

  it("provisions a shell whose sandbox the backend lost on its template's image again", async () => {
    const backend = new SimulatorBackend();
    t = await createTestApp({ backends: [backend] });
    await defineTemplate();
    const created = await t.call("POST", "/api/v1/shells", { template: "tools" });
    const id = created.json().id as string;
    await expect
      .poll(async () => (await t.call("GET", `/api/v1/shells/${id}`)).json().status)
      .toBe("running");
    await backend.destroy(id);
    const restarted = await t.call("POST", `/api/v1/shells/${id}/actions/restart`, {});
    expect(restarted.statusCode, restarted.body).toBe(200);
    expect((await backend.list()).map((s) => s.shellId)).toEqual([id]);
    expect((await t.call("GET", `/api/v1/shells/${id}`)).json()).toMatchObject({
      status: "running",
      imageVersion: IMAGE_ID,
    });
  });

  it("gives a shell that asks for another language than the template's the recipe on that language", async () => {
    t = await createTestApp({ backends: [new SimulatorBackend()] });
    await defineTemplate();
    const created = await t.call("POST", "/api/v1/shells", {
      template: "tools",
      language: "python",
    });
    expect(created.statusCode, created.body).toBe(201);
    const pythonImage = customImageId(sha256, "python", RECIPE);
    expect(pythonImage).not.toBe(IMAGE_ID);
    await expect
      .poll(async () => (await t.call("GET", `/api/v1/shells/${created.json().id}`)).json())
      .toMatchObject({ status: "running", language: "python", imageVersion: pythonImage });
  });

  it("records an admin's build and reports a failed build with its reason", async () => {
    t = await createTestApp({
      backends: [new SimulatorBackend({ imageBuildMs: 50, imageBuildError: "apt: no jq" })],
    });
    await defineTemplate();
    const build = await t.call("POST", "/api/v1/templates/tools/versions/1/image");
    expect(build.json()).toMatchObject({ state: "building" });
    await expect
      .poll(async () => (await t.call("GET", "/api/v1/templates/tools/versions/1/image")).json())
      .toMatchObject({ state: "failed", message: expect.stringContaining("apt: no jq") });
    expect(await actions("template.image.build")).toMatchObject([
      { details: { name: "tools", version: 1, imageId: IMAGE_ID, packages: ["jq"] } },
    ]);
  });

  it("refuses a custom image where the backend builds none, and a version without a recipe", async () => {
    const backend = new SimulatorBackend();
    Object.defineProperty(backend, "customImages", { value: false });
    t = await createTestApp({ backends: [backend] });
    await defineTemplate();
    const shell = await t.call("POST", "/api/v1/shells", { template: "tools" });
    expect(shell.statusCode).toBe(422);
    expect(shell.json()).toMatchObject({ error: { code: "runtime_unavailable" } });
    expect(shell.json().error.message).toContain("cannot run custom images");
    const build = await t.call("POST", "/api/v1/templates/tools/versions/1/image");
    expect(build.json()).toMatchObject({ error: { code: "runtime_unavailable" } });
    // Nothing was made: no shell row was left behind by the refusal.
    expect((await t.call("GET", "/api/v1/shells")).json().items).toHaveLength(0);

    await t.call("POST", "/api/v1/templates", {
      name: "plain",
      definition: { language: "bash" },
    });
    const none = await t.call("GET", "/api/v1/templates/plain/versions/1/image");
    expect(none.statusCode).toBe(400);
    expect(none.json()).toMatchObject({ error: { code: "template_invalid" } });
  });
});

// The sweep's queries over every org's template versions and shells run on both stores.
describeEachStore((store) => {
  it("sweeps away an image once no latest version names it and no shell runs on it, and records it", async () => {
    const backend = new SimulatorBackend();
    t = await createTestApp({
      backends: [backend],
      openStore: store.open,
      env: { SHELLS_IMAGE_SWEEP_INTERVAL_SECONDS: "1", SHELLS_IMAGE_UNUSED_SECONDS: "0" },
    });
    await defineTemplate();
    const shell = await t.call("POST", "/api/v1/shells", { template: "tools" });
    await expect
      .poll(async () => (await t.call("GET", `/api/v1/shells/${shell.json().id}`)).json().status)
      .toBe("running");
    // Version 2 names another image: version 1's is kept only by the shell running on it.
    const v2 = { ...DEFINITION, image: { packages: ["tree"] } };
    await t.call("POST", "/api/v1/templates/tools/versions", { definition: v2 });
    await t.call("POST", "/api/v1/templates/tools/versions/2/image");
    await expect
      .poll(async () => (await t.call("GET", "/api/v1/templates/tools/versions/2/image")).json())
      .toMatchObject({ state: "ready" });
    await new Promise((resolve) => setTimeout(resolve, 1500));
    expect(await actions("template.image.remove")).toHaveLength(0);
    expect((await t.call("GET", "/api/v1/templates/tools/versions/1/image")).json().state).toBe(
      "ready",
    );

    const deleted = await t.call("DELETE", `/api/v1/shells/${shell.json().id}`);
    expect(deleted.statusCode, deleted.body).toBeLessThan(300);
    await expect.poll(() => actions("template.image.remove"), { timeout: 5000 }).toHaveLength(1);
    expect((await actions("template.image.remove"))[0]).toMatchObject({
      actor: { type: "system" },
      details: { name: "tools", versions: [1], imageId: IMAGE_ID, reason: "unused" },
    });
    expect((await t.call("GET", "/api/v1/templates/tools/versions/1/image")).json().state).toBe(
      "missing",
    );
    expect((await t.call("GET", "/api/v1/templates/tools/versions/2/image")).json().state).toBe(
      "ready",
    );
  });
});
