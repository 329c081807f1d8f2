import { execFile } from "node:child_process";
import { promisify } from "node:util";
import ShellsClient, { ShellsError } from "@l1fe/shells";
import type { Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startConsoleBrowser, type ConsoleBrowser } from "./console-browser.js";

// Role-based administration in the console, in a real browser against a real control plane: an
// owner changes members, agents, entitlements, keys and projects' egress rules; lesser roles see
// the same tables with only the controls they may use.
let browser: ConsoleBrowser;
let page: Page;
let owner: ShellsClient;

const MEMBER = "access-member@example.com";

/** The page's HTML, every field's current value and both storages, as one text. */
const pageText = (on: Page) =>
  on.evaluate<string>(`[
    document.documentElement.outerHTML,
    ...Array.from(document.querySelectorAll("input, textarea"), (field) => field.value),
    JSON.stringify({ ...localStorage }),
    JSON.stringify({ ...sessionStorage }),
  ].join("\\n")`);

async function actions(): Promise<string[]> {
  return (await owner.activity({ limit: 200 }).page()).items.map(
    (event) => `${event.action}:${event.outcome}`,
  );
}

describe("the console's Access and Projects pages", () => {
  beforeAll(async () => {
    browser = await startConsoleBrowser();
    page = browser.page;
    owner = new ShellsClient({ baseUrl: browser.server.url, token: browser.server.token });
    await browser.signIn();
    await page.getByRole("link", { name: "Access" }).click();
    await page.getByRole("table", { name: "Members" }).getByText("owner@localhost").waitFor();
  }, 180_000);

  afterAll(async () => {
    await browser?.close();
  });

  it("lets an owner invite, re-role and remove members, run an agent's entitlement and keys, each recorded", async () => {
    const leaving = await owner.members.create({ email: "leaving@example.com", role: "developer" });
    const members = page.getByRole("table", { name: "Members" });
    await page.getByRole("button", { name: "+ Invite member" }).click();
    const invite = page.getByRole("dialog", { name: "Invite a member" });
    await invite.getByLabel("Email").fill("not-an-email");
    await invite.getByRole("button", { name: "Invite" }).click();
    await invite.getByText(/email: /).waitFor();
    await invite.getByLabel("Email").fill(MEMBER);
    await invite.getByLabel("Role").selectOption("viewer");
    await invite.getByRole("button", { name: "Invite" }).click();
    await page.getByText(`Added ${MEMBER} as viewer.`).waitFor();
    const invited = (await owner.members.list()).find((member) => member.email === MEMBER);
    expect(invited?.role).toBe("viewer");

    await members.getByRole("button", { name: `Change the role of ${MEMBER}` }).click();
    const role = page.getByRole("dialog", { name: `Role of ${MEMBER}` });
    await role.getByLabel("New role").selectOption("admin");
    await role.getByRole("button", { name: "Change role" }).click();
    await page.getByText(`${MEMBER} is now admin.`).waitFor();
    expect((await owner.members.list()).find((m) => m.email === MEMBER)?.role).toBe("admin");

    // A member made through the API (listed with the next refresh), removed through the console.
    await page.getByRole("button", { name: "Remove leaving@example.com" }).click();
    await page
      .getByRole("dialog", { name: "Remove leaving@example.com" })
      .getByRole("button", { name: "Remove member" })
      .click();
    await page.getByText("Removed leaving@example.com; their keys are revoked.").waitFor();
    expect((await owner.members.list()).find((m) => m.id === leaving.id)?.disabledAt).not.toBe(
      null,
    );

    await page.getByRole("button", { name: "+ New agent" }).click();
    const newAgent = page.getByRole("dialog", { name: "New agent" });
    await newAgent.getByLabel("Name").fill("ci-bot");
    await newAgent.getByLabel("Role").selectOption("developer");
    await newAgent.getByRole("button", { name: "Create agent" }).click();
    await page.getByText("Created the agent ci-bot.").waitFor();
    const agent = (await owner.agents.list()).find((candidate) => candidate.name === "ci-bot");
    expect(agent?.role).toBe("developer");

    const agents = page.getByRole("table", { name: "Agents" });
    await agents.getByRole("button", { name: "Grant shells.agent.invoke to ci-bot" }).click();
    await agents
      .getByRole("button", { name: "Withdraw shells.agent.invoke from ci-bot" })
      .waitFor();
    expect(await owner.entitlements.list()).toEqual([
      expect.objectContaining({
        entitlement: "shells.agent.invoke",
        principal: { type: "agent", id: agent?.id },
      }),
    ]);

    // A key for the agent: its token is shown once, works, and is gone once the dialog closes.
    await page.getByRole("button", { name: "+ New key" }).click();
    const newKey = page.getByRole("dialog", { name: "New API key" });
    await newKey.getByLabel("Key name").fill("ci-bot-key");
    await newKey.getByLabel("Acts as").selectOption({ label: "agent ci-bot (developer)" });
    await newKey.getByLabel("shells:agent:invoke").check();
    await newKey.getByLabel("Expires").selectOption({ label: "in 30 days" });
    await newKey.getByRole("button", { name: "Issue key" }).click();
    const token = (await page.getByTestId("api-key-token").textContent()) ?? "";
    expect(token.length).toBeGreaterThan(20);
    const asAgent = new ShellsClient({ baseUrl: browser.server.url, token });
    const me = await asAgent.whoami();
    expect(me).toMatchObject({ actor: { type: "agent", id: agent?.id }, role: "developer" });
    expect(me.scopes.sort()).toEqual(["shells:agent:invoke", "shells:instances:read"]);
    expect(me.entitlements).toEqual(["shells.agent.invoke"]);
    const issued = (await owner.keys.list()).find((key) => key.name === "ci-bot-key");
    const daysLeft = (Date.parse(issued?.expiresAt ?? "") - Date.now()) / 86_400_000;
    expect(daysLeft).toBeGreaterThan(29.9);
    expect(daysLeft).toBeLessThan(30.1);
    await page.getByRole("button", { name: "I have stored it" }).click();
    const keys = page.getByRole("table", { name: "API keys" });
    await keys.getByText("ci-bot-key").waitFor();
    expect(await pageText(page)).not.toContain(token);

    await keys.getByRole("button", { name: "Revoke ci-bot-key" }).click();
    await page
      .getByRole("dialog", { name: "Revoke ci-bot-key" })
      .getByRole("button", { name: "Revoke key" })
      .click();
    await page.getByText("Revoked ci-bot-key.").waitFor();
    const refused = await asAgent.whoami().catch((error: unknown) => error);
    expect(refused).toBeInstanceOf(ShellsError);
    expect((refused as ShellsError).code).toBe("unauthenticated");

    // Every change is in the activity history, and the Activity page shows it.
    const recorded = await actions();
    for (const action of [
      "iam.member.create",
      "iam.member.update",
      "iam.member.remove",
      "iam.agent.create",
      "iam.entitlement.grant",
      "iam.key.create",
      "iam.key.revoke",
    ]) {
      expect(recorded).toContain(`${action}:success`);
    }
    await page.getByRole("link", { name: "Activity" }).click();
    const activity = page.getByRole("table", { name: "Activity" });
    await activity.getByText("iam.key.revoke").waitFor();
    await activity.getByText("iam.entitlement.grant").waitFor();
    await activity.getByText("iam.member.update").first().waitFor();
  }, 60_000);

  it("lets an admin create a project, narrow its egress rules (recorded with the old and new rules) and widen them with a typed confirmation", async () => {
    await page.getByRole("link", { name: "Projects" }).click();
    const projects = page.getByRole("table", { name: "Projects" });
    await projects.getByText("default").waitFor();
    await page.getByRole("button", { name: "+ New project" }).click();
    const create = page.getByRole("dialog", { name: "New project" });
    await create.getByLabel("Project name").fill("payments");
    await create.getByRole("button", { name: "Create project" }).click();
    await page.getByText("Created the project payments.").waitFor();

    await projects.getByRole("button", { name: "Edit the egress rules of payments" }).click();
    const edit = page.getByRole("dialog", { name: "Egress rules of payments" });
    await edit.getByLabel("Set allow hosts").check();
    await edit.getByLabel("Allow hosts", { exact: true }).fill("api.example.com, *.example.org");
    await edit.getByLabel("Set deny ports").check();
    await edit.getByLabel("Deny ports", { exact: true }).fill("25 smtp");
    await edit.getByRole("button", { name: "Save rules" }).click();
    await edit.getByText(/rules\.denyPorts\.1: /).waitFor();
    await edit.getByLabel("Deny ports", { exact: true }).fill("25");
    // Set and empty: closes every non-public range the org opened.
    await edit.getByLabel("Set allow CIDRs").check();
    await edit.getByRole("button", { name: "Save rules" }).click();
    await page.getByText("Saved the egress rules of payments.").waitFor();
    expect((await owner.projects.getEgress("payments")).rules).toEqual({
      allowHosts: ["api.example.com", "*.example.org"],
      allowCidrs: [],
      denyPorts: [25],
    });
    const row = projects.getByRole("row").filter({ hasText: "payments" });
    await row.getByText("*.example.org").waitFor();
    expect(await row.getByTestId("egress-rules").textContent()).toContain("Allow CIDRs:none");
    const [update] = (await owner.activity({ limit: 200 }).page()).items.filter(
      (event) => event.action === "project.egress.update",
    );
    expect(update?.details).toMatchObject({
      project: "payments",
      from: {},
      to: { allowHosts: ["api.example.com", "*.example.org"], allowCidrs: [], denyPorts: [25] },
    });

    // Under the org's `confirm` gate a widening needs the project's name, typed in the dialog.
    await owner.policy.update({ approvalGates: { project_egress_change: "confirm" } });
    await projects.getByRole("button", { name: "Edit the egress rules of payments" }).click();
    const widen = page.getByRole("dialog", { name: "Egress rules of payments" });
    await widen.getByLabel("Set deny ports").uncheck();
    await widen.getByRole("button", { name: "Save rules" }).click();
    await widen.getByText(/gated by typed confirmation/).waitFor();
    expect((await owner.projects.getEgress("payments")).rules.denyPorts).toEqual([25]);
    await widen.getByLabel("Confirm a widening").fill("payments");
    await widen.getByRole("button", { name: "Save rules" }).click();
    await page.getByText("Saved the egress rules of payments.").waitFor();
    expect((await owner.projects.getEgress("payments")).rules.denyPorts).toBeUndefined();
  }, 60_000);

  it("draws for an admin, a developer and a viewer only the controls each may use", async () => {
    // Nobody mints a key for another member through the API: the host's operator issues the
    // member's key (every scope of their role, admin now) with the server's `issue-key` command.
    const issued = await promisify(execFile)(
      process.execPath,
      [
        "apps/server/dist/server.js",
        "issue-key",
        "--email",
        MEMBER,
        "--name",
        "console-member",
        "--data-dir",
        browser.server.dataDir,
      ],
      { cwd: browser.repoRoot },
    );
    const tab = await browser.context.newPage();
    await tab.goto(`${browser.server.url}/access`);
    await tab.getByLabel("API token").fill(issued.stdout.trim());
    await tab.getByRole("button", { name: "Sign in" }).click();
    const members = tab.getByRole("table", { name: "Members" });
    const agents = tab.getByRole("table", { name: "Agents" });
    const keys = tab.getByRole("table", { name: "API keys" });
    const count = (name: string | RegExp) => tab.getByRole("button", { name }).count();

    // An admin changes members and agents, but leaves owners to owners.
    await members.getByText("owner@localhost").waitFor();
    await members.getByRole("button", { name: `Change the role of ${MEMBER}` }).waitFor();
    expect(await count("Change the role of owner@localhost")).toBe(0);
    expect(await count("Remove owner@localhost")).toBe(0);
    expect(await count("+ New agent")).toBe(1);
    await tab.getByRole("button", { name: "+ Invite member" }).click();
    const invite = tab.getByRole("dialog", { name: "Invite a member" });
    expect(await invite.getByRole("option").allTextContents()).toEqual([
      "viewer",
      "developer",
      "admin",
    ]);
    await invite.getByRole("button", { name: "Cancel" }).click();

    // A developer mints and revokes their own keys only, and never for an agent.
    const memberId = (await owner.members.list()).find((m) => m.email === MEMBER)?.id ?? "";
    await owner.members.update(memberId, { role: "developer" });
    await tab.reload();
    await keys.getByText("console-member").waitFor();
    expect(await keys.getByText("ci-bot-key").count()).toBe(0);
    await members.getByText("owner@localhost").waitFor();
    await agents.getByText("ci-bot").waitFor();
    expect(await count("+ Invite member")).toBe(0);
    expect(await count(/^Change the role of/)).toBe(0);
    expect(await count(/^Remove /)).toBe(0);
    expect(await count("+ New agent")).toBe(0);
    expect(await count(/^Disable /)).toBe(0);
    expect(await count(/shells\.agent\.invoke/)).toBe(0);
    expect(await count("Revoke console-member")).toBe(1);
    await tab.getByRole("button", { name: "+ New key" }).click();
    const newKey = tab.getByRole("dialog", { name: "New API key" });
    expect(await newKey.getByLabel("Acts as").count()).toBe(0);
    await newKey.getByLabel("Key name").fill("dev-laptop");
    await newKey.getByRole("button", { name: "Issue key" }).click();
    const token = (await tab.getByTestId("api-key-token").textContent()) ?? "";
    await tab.getByRole("button", { name: "I have stored it" }).click();
    await keys.getByText("dev-laptop").waitFor();
    expect((await new ShellsClient({ baseUrl: browser.server.url, token }).whoami()).actor).toEqual(
      { type: "user", id: memberId },
    );
    expect(await pageText(tab)).not.toContain(token);

    // A viewer reads the same tables and is offered no control at all.
    await owner.members.update(memberId, { role: "viewer" });
    await tab.reload();
    await keys.getByText("dev-laptop").waitFor();
    await members.getByText("owner@localhost").waitFor();
    await agents.getByText("ci-bot").waitFor();
    expect(await count("+ New key")).toBe(0);
    expect(await count(/^Revoke /)).toBe(0);
    expect(await count("+ Invite member")).toBe(0);
    expect(await count("+ New agent")).toBe(0);
    expect(await tab.locator("main").getByRole("button").count()).toBe(0);
    // The projects' rules are there to read, with nothing to change them.
    await tab.getByRole("link", { name: "Projects" }).click();
    await tab.getByRole("table", { name: "Projects" }).getByText("*.example.org").waitFor();
    expect(await tab.locator("main").getByRole("button").count()).toBe(0);
    await tab.close();
  }, 60_000);
});
