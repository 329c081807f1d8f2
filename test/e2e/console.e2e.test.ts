import { execFile } from "node:child_process";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { promisify } from "node:util";
import ShellsClient from "@l1fe/shells";
import type { BrowserContext, Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startConsoleBrowser, type ConsoleBrowser } from "./console-browser.js";
import type { TestServer } from "./harness.js";

// The console in a real browser (Debian's chromium via playwright-core) against a real control
// plane with real container sandboxes.
const SHOTS = join("test-results", "console");
const SHELL_NAME = "console-e2e";

let browser: ConsoleBrowser;
let repoRoot: string;
let server: TestServer;
let context: BrowserContext;
let page: Page;

const shot = (name: string) => page.screenshot({ path: join(SHOTS, `${name}.png`) });

async function setTheme(theme: "Light" | "Dark") {
  await page.getByRole("radio", { name: `${theme} theme` }).click();
  const dark = await page.evaluate("document.documentElement.classList.contains('dark')");
  expect(dark).toBe(theme === "Dark");
}

/** Screenshots of the four surfaces the seed shows, in the current theme. */
async function screenshotSurfaces(theme: string) {
  await page.getByRole("table", { name: "Shells" }).waitFor();
  await shot(`fleet-${theme}`);
  await page.getByRole("button", { name: "+ New shell" }).click();
  await page.getByRole("dialog", { name: "New shell" }).waitFor();
  await shot(`create-dialog-${theme}`);
  await page.getByRole("button", { name: "Cancel" }).click();
  await page.locator(`tr[data-shell-name="${SHELL_NAME}"]`).click();
  const sheet = page.getByRole("dialog", { name: "Shell details" });
  await sheet.getByText("Danger zone").waitFor();
  await shot(`detail-sheet-${theme}`);
  await sheet.getByRole("button", { name: "Terminal & credentials" }).click();
  const credentials = page.getByRole("dialog", { name: /Terminal & credentials/ });
  await credentials.getByText(/expires in \d+:\d\d/).waitFor();
  await shot(`credentials-dialog-${theme}`);
  await credentials.getByRole("button", { name: "Close" }).click();
  await sheet.getByRole("button", { name: "Close details" }).click();
}

describe("the web console", () => {
  beforeAll(async () => {
    mkdirSync(SHOTS, { recursive: true });
    browser = await startConsoleBrowser({ backend: "container" });
    ({ server, context, page, repoRoot } = browser);
  }, 180_000);

  afterAll(async () => {
    await browser?.close();
  });

  it("signs in, creates a python shell, acts on it, opens a terminal and goes dark", async () => {
    await page.goto(server.url);
    await page.getByLabel("API token").fill(server.token);
    await page.getByRole("button", { name: "Sign in" }).click();
    await page.getByText("No shells yet").waitFor();
    // The token lives in sessionStorage, never in the URL.
    expect(page.url()).not.toContain(server.token);

    // Create: python, container, sealed by default.
    await page.getByRole("button", { name: "+ New shell" }).click();
    const create = page.getByRole("dialog", { name: "New shell" });
    await create.getByRole("textbox", { name: /Name/ }).fill(SHELL_NAME);
    await create.getByText("python", { exact: true }).click();
    expect(await create.getByRole("radio", { name: /sealed/ }).isChecked()).toBe(true);
    await create.getByRole("button", { name: "Create shell" }).click();

    // The table turns running by itself: no reload, no refresh button.
    const row = page.locator(`tr[data-shell-name="${SHELL_NAME}"]`);
    await row.locator('[data-status="running"]').waitFor({ timeout: 90_000 });
    expect(await row.textContent()).toContain("python");

    // The detail sheet: snapshot lands in the activity terminal.
    await row.click();
    const sheet = page.getByRole("dialog", { name: "Shell details" });
    await sheet.getByRole("button", { name: "snapshot", exact: true }).click();
    const activity = sheet.getByTestId("activity-terminal");
    await activity
      .getByText(/snapshot: /)
      .first()
      .waitFor({ timeout: 30_000 });

    // wipe_state needs the shell's name typed exactly.
    await sheet.getByRole("button", { name: "wipe_state", exact: true }).click();
    const confirm = page.getByRole("dialog", { name: "Confirm wipe_state" });
    const confirmButton = confirm.getByRole("button", { name: "wipe_state" });
    await confirm.getByLabel("Type the shell name to confirm").fill("not-the-name");
    expect(await confirmButton.isDisabled()).toBe(true);
    await confirm.getByLabel("Type the shell name to confirm").fill(SHELL_NAME);
    expect(await confirmButton.isEnabled()).toBe(true);
    await confirmButton.click();
    await activity
      .getByText(/wipe_state: /)
      .first()
      .waitFor({ timeout: 30_000 });

    // Credentials: masked, revealable, counting down; the embedded terminal runs a command.
    await sheet.getByRole("button", { name: "Terminal & credentials" }).click();
    const credentials = page.getByRole("dialog", { name: /Terminal & credentials/ });
    const token = credentials.getByTestId("credential-token");
    await credentials.getByText(/expires in \d+:\d\d/).waitFor();
    expect(await token.textContent()).toContain("••••");
    const countdown = credentials.getByTestId("credential-countdown");
    const before = await countdown.textContent();
    await page.waitForTimeout(1200);
    expect(await countdown.textContent()).not.toBe(before);
    await credentials.getByRole("button", { name: "Reveal" }).click();
    expect(await token.textContent()).not.toContain("•");
    await credentials.getByRole("button", { name: "Hide" }).click();
    expect(await token.textContent()).toContain("••••");

    await credentials.getByRole("button", { name: "Connect" }).click();
    await credentials.getByTestId("terminal-state").getByText("open").waitFor({ timeout: 30_000 });
    const pty = credentials.getByTestId("pty-terminal");
    await pty.click();
    await page.keyboard.type("echo console-$((6*7))\r");
    await pty.getByText("console-42").first().waitFor({ timeout: 30_000 });
    await credentials.getByRole("button", { name: "Close" }).click();
    await sheet.getByRole("button", { name: "Close details" }).click();

    // Screenshots in light, then dark mode (the terminals stay dark in both).
    await screenshotSurfaces("light");
    await setTheme("Dark");
    await screenshotSurfaces("dark");
    // The choice outlives a reload.
    await page.reload();
    await page.getByRole("table", { name: "Shells" }).waitFor();
    expect(await page.evaluate("document.documentElement.classList.contains('dark')")).toBe(true);
  }, 150_000);

  it("prints control sequences from a command string in the activity terminal as inert text", async () => {
    const owner = new ShellsClient({ baseUrl: server.url, token: server.token });
    const shell = await owner.get(SHELL_NAME);
    await page.locator(`tr[data-shell-name="${SHELL_NAME}"]`).click();
    const sheet = page.getByRole("dialog", { name: "Shell details" });
    // The terminal's rows as one text: a line wrapped across rows reads whole.
    const screen = sheet.getByTestId("activity-terminal").locator(".xterm-rows");
    await expect.poll(() => screen.textContent(), { timeout: 10_000 }).toMatch(/shell\./);
    // A hyperlink (OSC 8) around "click", then clear-screen: neither may act in the console.
    const hostile = "\x1b]8;;http://evil\x07click\x1b]8;;\x07\x1b[2J";
    await owner.exec(shell.id, { command: ["true", hostile] });
    await expect
      .poll(() => screen.textContent(), { timeout: 30_000 })
      .toContain("␛]8;;http://evil␇click␛]8;;␇␛[2J");
    // Nothing was cleared: the rows above the event still show what was written before it.
    const rows = await screen.locator(":scope > div").allTextContents();
    let upTo = "";
    const eventRow = rows.findIndex((row) => (upTo += row).includes("command=true"));
    expect(eventRow).toBeGreaterThan(0);
    expect(rows.slice(0, eventRow).filter((row) => row.trim() !== "").length).toBeGreaterThan(0);
    expect(await sheet.getByTestId("activity-terminal").locator("a").count()).toBe(0);
    await sheet.getByRole("button", { name: "Close details" }).click();
  }, 60_000);

  it("shows a viewer the fleet and the pages, but no button it cannot use", async () => {
    const owner = new ShellsClient({ baseUrl: server.url, token: server.token });
    await owner.members.create({ email: "viewer@example.com", role: "viewer" });
    // Nobody mints a key for another member through the API: the host's operator issues the
    // viewer's first key with the server's `issue-key` command, over the same data dir.
    const issued = await promisify(execFile)(
      process.execPath,
      [
        "apps/server/dist/server.js",
        "issue-key",
        "--email",
        "viewer@example.com",
        "--name",
        "console-viewer",
        "--data-dir",
        server.dataDir,
      ],
      { cwd: repoRoot },
    );
    const token = issued.stdout.trim();
    // A new tab has its own sessionStorage: it starts signed out.
    const tab = await context.newPage();
    await tab.goto(server.url);
    await tab.getByLabel("API token").fill(token);
    await tab.getByRole("button", { name: "Sign in" }).click();
    // Any member sees the server's regions and their capacity (from /readyz) over the fleet.
    const regions = tab.getByRole("list", { name: "Capacity by region" });
    await regions.getByText("local").waitFor();
    expect(await regions.textContent()).toMatch(/local \(default\).*unlimited/);
    await tab.locator(`tr[data-shell-name="${SHELL_NAME}"]`).click();
    const sheet = tab.getByRole("dialog", { name: "Shell details" });
    await sheet.getByTestId("activity-terminal").waitFor();
    expect(await tab.getByRole("button", { name: "+ New shell" }).count()).toBe(0);
    expect(await sheet.getByRole("button", { name: "snapshot" }).count()).toBe(0);
    expect(await sheet.getByText("Danger zone").count()).toBe(0);
    expect(await sheet.getByRole("button", { name: "Terminal & credentials" }).count()).toBe(0);
    await sheet.getByRole("button", { name: "Close details" }).click();
    await tab.getByRole("link", { name: "Policy" }).click();
    await tab.getByText("Approval gates").waitFor();
    expect(await tab.getByRole("button", { name: "Save policy" }).count()).toBe(0);
    await tab.getByRole("link", { name: "Templates" }).click();
    await tab.getByText("No templates yet.").waitFor();
    expect(await tab.getByRole("button", { name: "+ New template" }).count()).toBe(0);
    // Webhooks are the admins' (an endpoint's URL can be a credential): no table, no button.
    await tab.getByRole("link", { name: "Webhooks" }).click();
    await tab.getByText(/shown to the org's admins only/).waitFor();
    expect(await tab.getByRole("table", { name: "Webhooks" }).count()).toBe(0);
    await tab.close();
  }, 60_000);
});
