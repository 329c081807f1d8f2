import { randomUUID } from "node:crypto";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import ShellsClient from "@l1fe/shells";
import type { Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startConsoleBrowser, type ConsoleBrowser } from "./console-browser.js";

// Governance surfaces of the console in a real browser against real container sandboxes: the
// egress allowlist of internet shells, service bindings, runs and usage.
let browser: ConsoleBrowser;
let page: Page;
let owner: ShellsClient;

const SHOTS = join("test-results", "console");
const shot = (name: string) =>
  page.screenshot({ path: join(SHOTS, `${name}.png`), fullPage: true });

describe("the console's governance pages", () => {
  beforeAll(async () => {
    mkdirSync(SHOTS, { recursive: true });
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
    // Every class this server runs offers internet (wasm through its HTTP bridge to the proxy).
    await create.getByText("wasm", { exact: true }).click();
    expect(await create.getByRole("radio", { name: /internet/ }).isDisabled()).toBe(false);
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
    await shot("create-dialog-internet");
    await create.getByRole("button", { name: "Create shell" }).click();

    const row = page.locator('tr[data-shell-name="egress-e2e"]');
    await row.locator('[data-status="running"]').waitFor({ timeout: 90_000 });
    const created = await owner.get("egress-e2e");
    expect(created.network).toBe("internet");
    expect(created.egress).toEqual({
      mode: "allowlist",
      allow: ["example.com", "*.example.org", "10.0.0.0/8"],
    });

    // A binding the sheet can attach (removed again at the end: the bindings page starts empty).
    await owner.bindings.create({
      name: "sheet_echo",
      upstream: "https://api.example.com",
      inject: "Authorization: Bearer {secret}",
      secret: `sheet-secret-${randomUUID()}`,
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
    await shot("shell-egress-pending");
    expect((await owner.get("egress-e2e")).egress?.allow).toEqual(["example.com", "*.example.org"]);
    await owner.policy.update({ approvalGates: { egress_change: "none" } });

    // Attaching under an approvers gate waits the same way, and attaches nothing yet.
    const bindings = sheet.getByRole("region", { name: "Service bindings" });
    await owner.policy.update({ approvalGates: { binding_attach: "approvers" } });
    await bindings.getByLabel("Binding to attach").selectOption("sheet_echo");
    await bindings.getByRole("button", { name: "Attach" }).click();
    await bindings.getByText(/Pending approval: binding_attach/).waitFor();
    expect((await owner.get("egress-e2e")).bindings ?? []).toEqual([]);
    await owner.policy.update({ approvalGates: { binding_attach: "none" } });

    // A binding attached from the sheet, then detached.
    await bindings.getByLabel("Binding to attach").selectOption("sheet_echo");
    await bindings.getByRole("button", { name: "Attach" }).click();
    const detach = bindings.getByRole("button", { name: "Detach sheet_echo" });
    await detach.waitFor();
    expect((await owner.get("egress-e2e")).bindings).toEqual(["sheet_echo"]);
    await shot("shell-bindings");
    await detach.click();
    await bindings.getByText("None.").waitFor();
    expect((await owner.get("egress-e2e")).bindings ?? []).toEqual([]);
    await owner.bindings.remove("sheet_echo");
    await sheet.getByRole("button", { name: "Close details" }).click();
  }, 150_000);

  it("creates, rotates and deletes a binding without the secret ever reaching the page", async () => {
    // Everything the page receives from here on: bodies and headers of every response.
    const received: Promise<string>[] = [];
    page.on("response", (response) => {
      received.push(
        response
          .body()
          .then((body) => `${JSON.stringify(response.headers())}\n${body.toString("utf8")}`)
          .catch(() => ""),
      );
    });
    const secret = `console-secret-${randomUUID()}`;
    const rotatedSecret = `console-rotated-${randomUUID()}`;
    /** The page's HTML, every field's current value and both storages, as one text. */
    const pageText = () =>
      page.evaluate<string>(`[
        document.documentElement.outerHTML,
        ...Array.from(document.querySelectorAll("input, textarea"), (field) => field.value),
        JSON.stringify({ ...localStorage }),
        JSON.stringify({ ...sessionStorage }),
      ].join("\\n")`);

    await page.getByRole("link", { name: "Bindings" }).click();
    await page.getByText("No bindings yet.").waitFor();
    await page.getByRole("button", { name: "+ New binding" }).click();
    const create = page.getByRole("dialog", { name: "New binding" });
    await create.getByLabel("Name").fill("Bad-Name");
    await create.getByLabel("Upstream (https)").fill("http://api.example.com/v1");
    await create.getByLabel("Allowed paths").fill("/items/*, /v1/**");
    await create.getByLabel("POST").check();
    await create.getByLabel("Secret").fill(secret);
    // The probe sees a typed field's value: what it misses later is truly gone.
    expect(await pageText()).toContain(secret);
    await create.getByRole("button", { name: "Create binding" }).click();
    // Refused here first (the name's form), then by the server (plain http).
    await create.getByText(/name: lowercase letters/).waitFor();
    await create.getByLabel("Name").fill("payments_api");
    await create.getByRole("button", { name: "Create binding" }).click();
    await create.getByText(/binding_upstream_not_https/).waitFor();
    await create.getByLabel("Upstream (https)").fill("https://api.example.com/v1");
    await create.getByRole("button", { name: "Create binding" }).click();

    const table = page.getByRole("table", { name: "Bindings" });
    await table.getByText("payments_api").waitFor();
    await page.getByText(/SHELLS_BINDING_PAYMENTS_API_URL/).waitFor();
    const [listed] = await owner.bindings.list();
    expect(listed).toMatchObject({
      name: "payments_api",
      upstream: "https://api.example.com/v1",
      inject: "Authorization: Bearer {secret}",
      paths: ["/items/*", "/v1/**"],
      methods: ["GET", "POST"],
    });
    expect(await pageText()).not.toContain(secret);
    await shot("bindings");

    await table.getByRole("button", { name: "Rotate payments_api" }).click();
    const rotate = page.getByRole("dialog", { name: "Rotate payments_api" });
    await rotate.getByLabel("New secret").fill(rotatedSecret);
    await rotate.getByRole("button", { name: "Rotate secret" }).click();
    await page.getByText("Rotated the secret of payments_api.").waitFor();
    const [rotated] = await owner.bindings.list();
    expect(Date.parse(rotated?.rotatedAt ?? "")).toBeGreaterThan(
      Date.parse(listed?.rotatedAt ?? ""),
    );
    expect(await pageText()).not.toContain(rotatedSecret);

    await table.getByRole("button", { name: "Delete payments_api" }).click();
    const remove = page.getByRole("dialog", { name: "Delete payments_api" });
    const confirm = remove.getByRole("button", { name: "Delete binding" });
    expect(await confirm.isDisabled()).toBe(true);
    await remove.getByLabel("Type the binding name to confirm").fill("payments_api");
    await confirm.click();
    await page.getByText("No bindings yet.").waitFor();
    expect(await owner.bindings.list()).toEqual([]);

    page.removeAllListeners("response");
    const responses = await Promise.all(received);
    expect(responses.length).toBeGreaterThan(5);
    for (const response of responses) {
      expect(response).not.toContain(secret);
      expect(response).not.toContain(rotatedSecret);
    }
  }, 60_000);

  it("launches a run, streams its output live beside its audit, then shows result, tail and artifacts", async () => {
    await page.getByRole("link", { name: "Runs" }).click();
    const launch = page.getByRole("form", { name: "Launch a run" });
    await launch.getByLabel("Language").selectOption("python");
    await launch.getByLabel("Network").selectOption("internet");
    await launch.getByLabel("Allow host or CIDR").fill("example.com");
    await launch.getByRole("button", { name: "Add" }).click();
    await launch.getByLabel("Artifacts").fill("*.txt");
    await launch
      .getByLabel("Code")
      .fill(
        [
          "import sys, time",
          'print("first-line", flush=True)',
          "time.sleep(4)",
          'print("to-stderr", file=sys.stderr, flush=True)',
          'open("out.txt", "w").write("artifact-body")',
          'shells.result({"answer": 42})',
          'print("last-line")',
        ].join("\n"),
      );
    await launch.getByRole("button", { name: "Launch run" }).click();

    const view = page.getByRole("region", { name: /^Run run/ });
    const output = view.getByTestId("run-output");
    // Live: the first line shows while the run still runs (it sleeps before the rest).
    await output.getByText("first-line").waitFor({ timeout: 60_000 });
    expect(await view.locator("header [data-status]").getAttribute("data-status")).toBe("running");
    expect(await output.textContent()).not.toContain("last-line");
    const audit = view.getByTestId("run-audit");
    await audit.getByText("run.start").waitFor();

    await view.locator('header [data-status="succeeded"]').waitFor({ timeout: 60_000 });
    await output.getByText("last-line").waitFor();
    await audit.getByText("run.finish", { exact: true }).waitFor();
    // The run's shell was created internet, narrowed to the list.
    expect(await audit.textContent()).toContain("shell.create");
    expect(await view.getByTestId("run-exit-code").textContent()).toBe("0");
    expect(JSON.parse((await view.getByTestId("run-result").textContent()) ?? "")).toEqual({
      answer: 42,
    });
    const tail = await view.getByTestId("run-output-tail").textContent();
    expect(tail).toContain("first-line");
    expect(tail).toContain("to-stderr");
    // The workspace diff: the file the run wrote, added, as a unified diff.
    const diff = view.getByTestId("run-diff");
    await diff.getByText("+artifact-body").waitFor({ timeout: 10_000 });
    expect(await diff.textContent()).toContain("out.txt");
    await shot("run");

    const runId = page.url().split("/runs/")[1] ?? "";
    const run = await owner.runs.get(runId);
    expect(run.artifacts.map((a) => a.path)).toEqual(["out.txt"]);
    const [download] = await Promise.all([
      page.waitForEvent("download"),
      view.getByRole("button", { name: "Download out.txt" }).click(),
    ]);
    const stream = await download.createReadStream();
    const chunks: Buffer[] = [];
    for await (const chunk of stream) chunks.push(chunk as Buffer);
    expect(Buffer.concat(chunks).toString("utf8")).toBe("artifact-body");
  }, 120_000);

  it("charts usage by day and class and lists the top shells, as the usage API reports them", async () => {
    // Metered: the internet shell and the run's shell the tests above made.
    await page.getByRole("link", { name: "Usage" }).click();
    const today = new Date().toISOString().slice(0, 10);
    const bar = page.locator(`rect[data-day="${today}"][data-class="container"]`);
    await bar.waitFor({ timeout: 30_000 });
    const shown = Number(await bar.getAttribute("data-value"));
    const report = await owner.usage.report({ groupBy: ["day", "class"] });
    const row = report.rows.find(
      (r) => r.period?.slice(0, 10) === today && r.runtime === "container",
    );
    const reported = (row?.seconds.running ?? 0) / 3600;
    expect(reported).toBeGreaterThan(0);
    // The page read its report a moment before this one: within a minute of running time.
    expect(Math.abs(shown - reported)).toBeLessThan(60 / 3600);

    await shot("usage");
    const shellId = (await owner.get("egress-e2e")).id;
    await page.getByRole("table", { name: "Top shells" }).getByText(shellId).waitFor();

    await page.getByRole("radio", { name: "Cost" }).click();
    const costBar = page.locator(`rect[data-day="${today}"][data-class="container"]`);
    await expect
      .poll(async () => Number(await costBar.getAttribute("data-value")))
      .toBeCloseTo(Number(row?.cost ?? 0), 1);
  }, 60_000);
});
