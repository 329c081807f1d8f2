import ShellsClient from "@l1fe/shells";
import { SimulatorBackend } from "@shells/sandbox";
import type { Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startConsoleBrowser, type ConsoleBrowser } from "./console-browser.js";

// The console's view of a template's custom image in a real browser: the recipe, the build's state,
// an admin's "Build image" with each step on a bar, and the image ready at the end. The image build
// is the simulator's model of one (a few seconds of steps); real builds are covered by
// template-images.e2e.test.ts.
let browser: ConsoleBrowser;
let page: Page;
let owner: ShellsClient;

describe("the console's template image", () => {
  beforeAll(async () => {
    browser = await startConsoleBrowser({
      backends: [new SimulatorBackend({ imageBuildMs: 4000 })],
    });
    page = browser.page;
    owner = new ShellsClient({ baseUrl: browser.server.url, token: browser.server.token });
    await browser.signIn();
  }, 180_000);
  afterAll(async () => {
    await browser?.close();
  });

  it("shows the recipe, builds the image on request with its progress, and ends ready", async () => {
    await owner.templates.create({
      name: "tools",
      definition: {
        language: "bash",
        runtime: "container",
        image: {
          packages: ["jq", "tree"],
          files: [{ path: "/etc/tool.conf", content: "x = 1\n" }],
        },
      },
    });
    await page.goto(`${browser.server.url}/templates/tools`);
    const image = page.getByLabel("Custom image");
    await image.getByText("jq tree").waitFor();
    await image.getByText("/etc/tool.conf").waitFor();
    const state = image.getByTestId("template-image-state");
    await expect.poll(() => state.textContent()).toBe("missing");

    await image.getByRole("button", { name: "Build image" }).click();
    const bar = image.getByRole("progressbar");
    await bar.waitFor();
    await expect.poll(() => state.textContent()).toBe("building");
    await image
      .getByText(/step \d\/5/)
      .first()
      .waitFor();
    await expect.poll(() => state.textContent(), { timeout: 15_000 }).toBe("ready");
    expect(await bar.count()).toBe(0);
    expect(await image.getByRole("button", { name: "Build image" }).count()).toBe(0);
    expect((await owner.templates.image("tools", 1)).state).toBe("ready");
  }, 60_000);
});
