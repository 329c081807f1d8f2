import ShellsClient from "@l1fe/shells";
import { openSqliteStore } from "@shells/server";
import { join } from "node:path";
import type { Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { addKey, addPrincipal } from "../../apps/server/src/test-support/test-app.js";
import { startConsoleBrowser, type ConsoleBrowser } from "./console-browser.js";

// The console's approval surfaces in a real browser: admins set who approves and how long a
// request waits (others only read them), a listed approver reviews a run from its page, and a
// requester withdraws their own pending approval.
let browser: ConsoleBrowser;
let page: Page;
let owner: ShellsClient;
let reviewer: { id: string; email: string; token: string };
let viewerToken: string;

/** A new tab signed in with `token`. */
async function tabAs(token: string): Promise<Page> {
  const tab = await browser.context.newPage();
  await tab.goto(browser.server.url);
  await tab.getByLabel("API token").fill(token);
  await tab.getByRole("button", { name: "Sign in" }).click();
  await tab.getByRole("navigation", { name: "Main" }).waitFor();
  return tab;
}

describe("the console's approval pages", () => {
  beforeAll(async () => {
    browser = await startConsoleBrowser();
    page = browser.page;
    owner = new ShellsClient({ baseUrl: browser.server.url, token: browser.server.token });
    await browser.signIn();
    const me = await owner.whoami();
    const email = "console-reviewer@example.com";
    const member = await owner.members.create({ email, role: "developer" });
    const store = await openSqliteStore(join(browser.server.dataDir, "shells.db"));
    const key = await addKey(store, {
      orgId: me.orgId,
      principal: { type: "user", id: member.id },
      scopes: ["shells:instances:read", "shells:instances:control"],
    });
    reviewer = { id: member.id, email, token: key.token };
    viewerToken = (
      await addPrincipal(store, {
        orgId: me.orgId,
        role: "viewer",
        scopes: ["shells:instances:read"],
      })
    ).token;
    await store.close();
  }, 180_000);

  afterAll(async () => {
    await browser?.close();
  });

  it("lets an admin choose approvers and the approval wait; a viewer only reads them", async () => {
    await page.getByRole("link", { name: "Policy" }).click();
    const settings = page.getByLabel("Approval settings");
    await settings.getByLabel(`Approver ${reviewer.email}`).check();
    await settings.getByLabel("Approval TTL in seconds").fill("900");
    await page
      .getByRole("combobox", { name: "egress_change", exact: true })
      .selectOption("approvers");
    await page.getByRole("button", { name: "Save policy" }).click();
    await page.getByText("Saved.").waitFor();
    const policy = await owner.policy.get();
    expect(policy.approvers).toEqual([reviewer.id]);
    expect(policy.approvalTtlSeconds).toBe(900);
    expect(policy.approvalGates.egress_change).toBe("approvers");

    const tab = await tabAs(viewerToken);
    await tab.getByRole("link", { name: "Policy" }).click();
    await tab.getByTestId("approvers").getByText(reviewer.email).waitFor();
    expect(await tab.getByLabel("Approval TTL in seconds").count()).toBe(0);
    expect(await tab.getByLabel(`Approver ${reviewer.email}`).count()).toBe(0);
    await tab.close();
  }, 60_000);

  it("a listed approver reviews a run from its page; the verdict shows on the run", async () => {
    const run = await owner.run({ language: "bash", command: ["echo", "to review"] });
    await run.result();
    const tab = await tabAs(reviewer.token);
    await tab.getByRole("link", { name: "Runs" }).click();
    await tab.getByRole("button", { name: `Open ${run.id}` }).click();
    const form = tab.getByRole("form", { name: "Review this run" });
    await form.getByLabel("Verdict").selectOption("changes_requested");
    await form.getByLabel("Review comment").fill("log the exit status too");
    await form.getByRole("button", { name: "Submit review" }).click();
    await tab
      .getByTestId("run-review")
      .getByText(/changes_requested/)
      .waitFor();
    expect((await owner.runs.get(run.id)).review).toMatchObject({
      verdict: "changes_requested",
      comment: "log the exit status too",
      reviewedBy: reviewer.id,
    });
    await tab.close();

    // The run's creator is no reviewer of it: the owner, not listed, gets no form.
    await page.getByRole("link", { name: "Runs" }).click();
    await page.getByRole("button", { name: `Open ${run.id}` }).click();
    await page.getByTestId("run-review").waitFor();
    expect(await page.getByRole("form", { name: "Review this run" }).count()).toBe(0);
  }, 60_000);

  it("a requester withdraws their own pending approval", async () => {
    await owner.policy.update({ approvalGates: { wipe_state: "approvers" } });
    const shell = await owner.create({ name: "withdrawn-wipe", language: "bash" });
    const pending = await owner.action(shell.id, "wipe_state");
    expect(pending).toMatchObject({ status: "pending_approval" });
    const approvalId = (pending as { approval: { id: string } }).approval.id;
    await page.getByRole("link", { name: "Approvals" }).click();
    await page.getByRole("button", { name: `Withdraw ${approvalId}` }).click();
    await expect.poll(async () => (await owner.approvals.get(approvalId)).state).toBe("withdrawn");
    await page.getByRole("table", { name: "Approvals" }).getByText("withdrawn").waitFor();
  }, 60_000);
});
