import ShellsClient from "@l1fe/shells";
import type { Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startConsoleBrowser, type ConsoleBrowser } from "./console-browser.js";

// Governance surfaces of the console in a real browser against real container sandboxes: the
// egress allowlist of internet shells, service bindings, runs and usage.
let browser: ConsoleBrowser;
let page: Page;
let owner: ShellsClient;

describe("the console's governance pages", () => {
  beforeAll(async () => {
    browser = await startConsoleBrowser({ backend: "container" });
    page = browser.page;
    owner = new ShellsClient({ baseUrl: browser.server.url, token: browser.server.token });
    await browser.signIn();
  }, 180_000);

  afterAll(async () => {
    await browser?.close();
  });

  it("creates an internet shell with an allowlist, narrows it live, and shows a gated widening as pending", async () => {
    await page.getByRole("button", { name: "+ New shell" }).click();
    const create = page.getByRole("dialog", { name: "New shell" });
    await create.getByRole("textbox", { name: /Name/ }).fill("egress-e2e");
    await create.getByText("bash", { exact: true }).click();
    // The wasm class runs sealed only: choosing it disables internet.
    await create.getByText("wasm", { exact: true }).click();
    expect(await create.getByRole("radio", { name: /internet/ }).isDisabled()).toBe(true);
    await create.getByText("container", { exact: true }).click();
    await create.getByText("internet", { exact: true }).click();

    const entry = create.getByLabel("Allow host or CIDR");
    await entry.fill("not a host!");
    await entry.press("Enter");
    await create.getByText(/not a host name, \*\.suffix or CIDR/).waitFor();
    for (const allowed of ["example.com", "*.example.org", "10.0.0.0/8"]) {
      await entry.fill(allowed);
      await entry.press("Enter");
    }
    await create.getByRole("button", { name: "Create shell" }).click();

    const row = page.locator('tr[data-shell-name="egress-e2e"]');
    await row.locator('[data-status="running"]').waitFor({ timeout: 90_000 });
    const created = await owner.get("egress-e2e");
    expect(created.network).toBe("internet");
    expect(created.egress).toEqual({
      mode: "allowlist",
      allow: ["example.com", "*.example.org", "10.0.0.0/8"],
    });

    // Narrowing from the sheet applies at once.
    await row.click();
    const sheet = page.getByRole("dialog", { name: "Shell details" });
    const egress = sheet.getByRole("region", { name: "Egress allowlist" });
    await egress.getByRole("button", { name: "Remove 10.0.0.0/8" }).click();
    await egress.getByRole("button", { name: "Save allowlist" }).click();
    await egress.getByText("Applied").waitFor();
    expect((await owner.get("egress-e2e")).egress?.allow).toEqual(["example.com", "*.example.org"]);

    // Widening under an approvers gate: nothing changes yet, and the sheet says it waits.
    const approver = (await owner.whoami()).actor.id;
    await owner.policy.update({
      approvalGates: { egress_change: "approvers" },
      approvers: [approver],
    });
    await egress.getByLabel("Allow host or CIDR").fill("widen.example.net");
    await egress.getByRole("button", { name: "Add" }).click();
    await egress.getByRole("button", { name: "Save allowlist" }).click();
    await egress.getByText(/Pending approval: egress_change/).waitFor();
    expect((await owner.get("egress-e2e")).egress?.allow).toEqual(["example.com", "*.example.org"]);
    await owner.policy.update({ approvalGates: { egress_change: "none" } });
    await sheet.getByRole("button", { name: "Close details" }).click();
  }, 150_000);
});
