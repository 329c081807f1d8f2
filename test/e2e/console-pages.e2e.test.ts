import { createHash } from "node:crypto";
import { mkdirSync } from "node:fs";
import { createServer, type IncomingHttpHeaders, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import ShellsClient, {
  verifyWebhook,
  type Checkpoint,
  type EvidenceBundle,
  type Shell,
} from "@l1fe/shells";
import { checkpointSignatureProblem, verifyEvidenceBundle, type Sha256 } from "@shells/contract";
import type { Download, Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startConsoleBrowser, type ConsoleBrowser } from "./console-browser.js";

// The console's templates, webhooks, shell-sheet (pause, ports, fork) and evidence surfaces in a
// real browser (Debian's chromium) against a real control plane with real container sandboxes.
let browser: ConsoleBrowser;
let page: Page;
let owner: ShellsClient;

const SHOTS = join("test-results", "console");
const shot = (name: string) =>
  page.screenshot({ path: join(SHOTS, `${name}.png`), fullPage: true });
const sha256: Sha256 = (data) => createHash("sha256").update(data).digest();

const TEMPLATE = "py-service";
const SHELL = "from-template";
const FORK = "from-template-fork";

/** A download's bytes as text. */
async function textOf(download: Download): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of await download.createReadStream()) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString("utf8");
}

/** Clicks `button` and answers what the click downloaded. */
async function downloadBy(click: () => Promise<void>): Promise<string> {
  const [download] = await Promise.all([page.waitForEvent("download"), click()]);
  return textOf(download);
}

/** A webhook receiver on loopback: records every request and answers 200. */
class Receiver {
  readonly seen: { headers: IncomingHttpHeaders; body: string }[] = [];
  readonly #server: Server = createServer((request, response) => {
    let body = "";
    request.on("data", (chunk: Buffer) => (body += chunk.toString()));
    request.on("end", () => {
      this.seen.push({ headers: request.headers, body });
      response.writeHead(200).end();
    });
  });

  async listen(): Promise<this> {
    await new Promise<void>((resolve) => this.#server.listen(0, "127.0.0.1", resolve));
    return this;
  }

  get url(): string {
    return `http://127.0.0.1:${(this.#server.address() as AddressInfo).port}/hooks/shells`;
  }

  close(): Promise<void> {
    this.#server.closeAllConnections();
    return new Promise((resolve) => this.#server.close(() => resolve()));
  }
}

describe("the console's templates, webhooks, shell sheet and evidence", () => {
  let receiver: Receiver;

  beforeAll(async () => {
    mkdirSync(SHOTS, { recursive: true });
    receiver = await new Receiver().listen();
    browser = await startConsoleBrowser({ backend: "container" });
    page = browser.page;
    owner = new ShellsClient({ baseUrl: browser.server.url, token: browser.server.token });
    await browser.signIn();
  }, 180_000);

  afterAll(async () => {
    await receiver?.close();
    await browser?.close();
  });

  it("creates a template, shows the API's refusal, publishes a locked version and creates a shell from it", async () => {
    await page.getByRole("link", { name: "Templates" }).click();
    await page.getByText("No templates yet.").waitFor();

    await page.getByRole("button", { name: "+ New template" }).click();
    const create = page.getByRole("dialog", { name: "New template" });
    await create.getByLabel("Template name").fill(TEMPLATE);
    await create.getByLabel("Description").fill("A python service on loopback");
    await create.getByLabel("Language").selectOption("python");
    await create.getByLabel("Network", { exact: true }).selectOption("localhost");
    await create.getByRole("button", { name: "+ Managed file" }).click();
    const file = create.getByRole("group", { name: "managed file 1" });
    await file.getByLabel("File path").fill("POLICY.md");
    await file.getByLabel("File content").fill("Be kind to the network.\n");
    // Locking the runtime while leaving it unset is refused by the server, code and all.
    await create.getByLabel("Lock runtime").check();
    await create.getByRole("button", { name: "Create template" }).click();
    await create.getByText(/must set runtime\. \(template_invalid\)/).waitFor();
    expect(await owner.templates.list()).toEqual([]);

    await create.getByLabel("Runtime", { exact: true }).selectOption("container");
    await create.getByRole("button", { name: "Create template" }).click();
    await page.getByText(`Created ${TEMPLATE} with version 1.`).waitFor();
    const view = page.getByRole("region", { name: `Template ${TEMPLATE}` });
    await view.getByTestId("template-locks").getByText("runtime").waitFor();
    expect(page.url()).toContain(`/templates/${TEMPLATE}`);
    const first = await owner.templates.get(TEMPLATE);
    expect(first.latest.definition).toEqual({
      description: "A python service on loopback",
      language: "python",
      runtime: "container",
      network: "localhost",
      files: [{ path: "POLICY.md", content: "Be kind to the network.\n", readOnly: true }],
      locks: ["runtime"],
    });

    // Version 2: a metadata file, review before run, and the network locked too.
    await view.getByRole("button", { name: "New version from v1" }).click();
    const publish = page.getByRole("dialog", { name: `New version of ${TEMPLATE}` });
    expect(await publish.getByLabel("File path").inputValue()).toBe("POLICY.md");
    await publish.getByRole("button", { name: "+ Metadata file" }).click();
    const meta = publish.getByRole("group", { name: "metadata file 1" });
    await meta.getByLabel("Kind").selectOption("mcp");
    await meta.getByLabel("Metadata name").fill("github.json");
    await meta.getByLabel("Metadata content").fill('{"url":"https://mcp.example.com"}');
    await publish.getByLabel("Review before run").check();
    await publish.getByLabel("Lock network").check();
    await publish.getByRole("button", { name: "Publish version 2" }).click();
    await view.getByText("Published version 2.").waitFor();
    expect(await view.getByRole("tab", { name: "v2" }).getAttribute("aria-selected")).toBe("true");
    const changes = view.getByRole("list", { name: "Changes" });
    for (const field of ["locks", "reviewBeforeRun"])
      await changes.getByText(field).first().waitFor();
    await view.getByText("/workspace/.shells/mcps/github.json").first().waitFor();
    const versions = await owner.templates.versions(TEMPLATE);
    expect(versions.map((v) => v.version)).toEqual([1, 2]);
    expect(versions[0]?.definition).toEqual(first.latest.definition);
    expect(versions[1]?.definition).toMatchObject({
      reviewBeforeRun: true,
      locks: ["runtime", "network"],
      metadata: [
        { kind: "mcp", name: "github.json", content: '{"url":"https://mcp.example.com"}' },
      ],
    });
    // The first version still reads as it was.
    await view.getByRole("tab", { name: "v1" }).click();
    await view.getByText("First version: no changes to show").waitFor();
    expect(await view.getByTestId("template-locks").textContent()).not.toContain("network");
    await view.getByRole("tab", { name: "v2" }).click();
    await shot("templates");

    // A shell from version 2 opens in the fleet's sheet with the template's files in place.
    await view.getByRole("button", { name: "Create shell from v2" }).click();
    const launch = page.getByRole("dialog", { name: `New shell from ${TEMPLATE}@2` });
    await launch.getByLabel("Shell name (optional)").fill(SHELL);
    await launch.getByRole("button", { name: "Create shell" }).click();
    const sheet = page.getByRole("dialog", { name: "Shell details" });
    await sheet.getByRole("heading", { name: SHELL }).waitFor({ timeout: 120_000 });
    const shell = await owner.get(SHELL);
    expect(page.url()).toContain(`/shells/${shell.id}`);
    expect(shell).toMatchObject({
      template: `${TEMPLATE}@2`,
      network: "localhost",
      runtime: "container",
    });
    const policy = await owner.exec(shell.id, {
      command: ["cat", "/workspace/POLICY.md", "/workspace/.shells/mcps/github.json"],
    });
    expect(policy.stdout).toBe('Be kind to the network.\n{"url":"https://mcp.example.com"}');
    await sheet.getByRole("button", { name: "Close details" }).click();

    // A template the org lacks: the page says so with the API's code.
    await page.goto(`${browser.server.url}/templates/no-such-template`);
    await page.getByText(/\(template_not_found\)/).waitFor();
  }, 240_000);

  it("pauses and resumes a shell, exposes a port whose URL reaches its server, and forks it by name", async () => {
    const shell = await owner.get(SHELL);
    const started = await owner.exec(shell.id, {
      command: [
        "sh",
        "-c",
        "(python3 -m http.server 8000 --bind 127.0.0.1 --directory /workspace >/dev/null 2>&1 &); sleep 1",
      ],
    });
    expect(started.exitCode).toBe(0);
    await page.goto(`${browser.server.url}/shells/${shell.id}`);
    const sheet = page.getByRole("dialog", { name: "Shell details" });
    const statusOf = () => sheet.locator("header [data-status]").getAttribute("data-status");

    // Exposed ports: a URL made here reaches the shell's server; the API lists it; Revoke ends it.
    const ports = sheet.getByRole("region", { name: "Exposed ports" });
    await ports.getByText("No port URL works now.").waitFor();
    await ports.getByLabel("Port", { exact: true }).fill("70000");
    await ports.getByRole("button", { name: "Expose port" }).click();
    await ports.getByText(/^port: /).waitFor();
    await ports.getByLabel("Port", { exact: true }).fill("8000");
    await ports.getByRole("button", { name: "Expose port" }).click();
    const link = ports.getByTestId("port-url");
    await link.waitFor();
    const url = (await link.getAttribute("href")) ?? "";
    expect(url).toMatch(new RegExp(`^${browser.server.url}/ports/[^/]+/$`));
    const served = await fetch(`${url}POLICY.md`);
    expect(served.status).toBe(200);
    expect(await served.text()).toBe("Be kind to the network.\n");
    const [exposed] = await owner
      .activity({ shell: shell.id, action: "shell.port.expose" })
      .page()
      .then((p) => p.items);
    expect(exposed?.details).toMatchObject({ port: 8000, ttlSeconds: 3600 });
    expect((await owner.urls(shell.id)).map((listed) => listed.port)).toEqual([8000]);
    await shot("shell-ports");
    await ports.getByRole("button", { name: "Revoke the URL of port 8000" }).click();
    await ports.getByText("No port URL works now.").waitFor();
    expect((await fetch(`${url}POLICY.md`)).status).toBe(404);

    // Pause: the button turns into Resume, and the shell refuses execs until then.
    await sheet.getByRole("button", { name: "Pause", exact: true }).click();
    await sheet.getByRole("button", { name: "Resume", exact: true }).waitFor({ timeout: 30_000 });
    await expect.poll(statusOf).toBe("paused");
    expect((await owner.get(shell.id)).status).toBe("paused");
    await expect(owner.exec(shell.id, { command: ["true"] })).rejects.toMatchObject({
      code: "shell_paused",
    });
    await sheet.getByText(/Every process is held where it was/).waitFor();
    await sheet.getByRole("button", { name: "Resume", exact: true }).click();
    await sheet.getByRole("button", { name: "Pause", exact: true }).waitFor({ timeout: 30_000 });
    await expect.poll(statusOf).toBe("running");
    expect((await owner.exec(shell.id, { command: ["true"] })).exitCode).toBe(0);

    // Fork by name: the new shell has the parent's files, and opens from the result.
    await sheet.getByRole("button", { name: "Fork…" }).click();
    const fork = page.getByRole("dialog", { name: `Fork ${SHELL}` });
    await fork.getByLabel("Name of the new shell").fill(FORK);
    await fork.getByRole("button", { name: "Fork shell" }).click();
    const outcome = sheet.getByRole("status", { name: "Fork result" });
    await outcome.getByText(`Forked into ${FORK}`).waitFor({ timeout: 120_000 });
    const forked: Shell = await owner.get(FORK);
    expect(forked).toMatchObject({ status: "running", network: "localhost" });
    const copied = await owner.exec(forked.id, { command: ["cat", "/workspace/POLICY.md"] });
    expect(copied.stdout).toBe("Be kind to the network.\n");
    await shot("shell-fork");
    await outcome.getByRole("button", { name: `Open ${FORK}` }).click();
    await sheet.getByRole("heading", { name: FORK }).waitFor();
    expect(page.url()).toContain(`/shells/${forked.id}`);
    await sheet.getByRole("button", { name: "Close details" }).click();
  }, 240_000);

  it("adds a webhook endpoint, shows its secret only once, lists its deliveries and deletes it", async () => {
    // Every response the page receives from here on, bodies and headers.
    const received: Promise<string>[] = [];
    page.on("response", (response) => {
      received.push(
        response
          .body()
          .then((body) => `${JSON.stringify(response.headers())}\n${body.toString("utf8")}`)
          .catch(() => ""),
      );
    });
    const pageText = () =>
      page.evaluate<string>(`[
        document.documentElement.outerHTML,
        ...Array.from(document.querySelectorAll("input, textarea"), (field) => field.value),
        JSON.stringify({ ...localStorage }),
        JSON.stringify({ ...sessionStorage }),
      ].join("\\n")`);

    await page.getByRole("link", { name: "Webhooks" }).click();
    await page.getByText("No webhook endpoints yet.").waitFor();
    await page.getByRole("button", { name: "+ New endpoint" }).click();
    const create = page.getByRole("dialog", { name: "New webhook endpoint" });
    await create.getByLabel("URL").fill(receiver.url);
    await create.getByRole("button", { name: "Add endpoint" }).click();
    await create.getByText(/events: /).waitFor();
    await create.getByLabel("shell.*").check();
    expect(await create.getByLabel("shell.stopped").isDisabled()).toBe(true);
    // Loopback is refused until the org's policy allows it.
    await create.getByRole("button", { name: "Add endpoint" }).click();
    await create.getByText(/\(destination_not_allowed\)/).waitFor();
    await owner.policy.update({ webhooks: { allowCidrs: ["127.0.0.1/32"] } });
    await create.getByRole("button", { name: "Add endpoint" }).click();

    const once = page.getByRole("dialog", { name: "Signing secret" });
    const secret = (await once.getByTestId("webhook-secret").textContent()) ?? "";
    expect(secret).toMatch(/^whsec_/);
    await shot("webhook-secret");
    await once.getByRole("button", { name: "I have stored it" }).click();
    const table = page.getByRole("table", { name: "Webhooks" });
    await table.getByText(receiver.url).waitFor();
    expect(await pageText()).not.toContain(secret);
    const [listed] = await owner.webhooks.list();
    expect(listed).toMatchObject({ url: receiver.url, events: ["shell.*"] });

    // A shell event is delivered, signed with the secret the page showed.
    await owner.action(FORK, "stop");
    await table.getByRole("button", { name: `Deliveries of ${receiver.url}` }).click();
    const deliveries = page.getByRole("region", { name: "Deliveries" });
    const row = deliveries.locator("tr", { hasText: "shell.stopped" }).first();
    await row.locator('[data-status="delivered"]').waitFor({ timeout: 30_000 });
    expect(await row.getByTestId("delivery-attempts").textContent()).toBe("1");
    expect(await row.textContent()).toContain("200");
    const payloads = receiver.seen.map((r) => verifyWebhook(r.body, r.headers, secret));
    expect(payloads.map((p) => p.type)).toContain("shell.stopped");

    // Sent again: a second delivery of the same message.
    await row.getByRole("button", { name: /^Redeliver / }).click();
    await deliveries.getByText("redelivery").waitFor({ timeout: 30_000 });
    await expect.poll(() => receiver.seen.length).toBe(2);
    expect(receiver.seen[1]?.headers["webhook-id"]).toBe(receiver.seen[0]?.headers["webhook-id"]);

    // A test message, signed like the rest, lands in the log.
    await deliveries.getByRole("button", { name: "Send test" }).click();
    const test = deliveries.locator("tr", { hasText: "webhook.test" }).first();
    await test.locator('[data-status="delivered"]').waitFor({ timeout: 30_000 });
    expect(verifyWebhook(receiver.seen[2]!.body, receiver.seen[2]!.headers, secret).type).toBe(
      "webhook.test",
    );
    await shot("webhook-deliveries");

    await table.getByRole("button", { name: `Delete ${receiver.url}` }).click();
    const remove = page.getByRole("dialog", { name: "Delete the endpoint" });
    await remove.getByRole("button", { name: "Delete endpoint" }).click();
    await page.getByText("No webhook endpoints yet.").waitFor();
    expect(await owner.webhooks.list()).toEqual([]);

    // The secret reached the page in one answer: the create's.
    page.removeAllListeners("response");
    const withSecret = (await Promise.all(received)).filter((r) => r.includes(secret));
    expect(withSecret).toHaveLength(1);
  }, 120_000);

  it("downloads a signed checkpoint from the activity page and a run's evidence bundle, both verifying offline", async () => {
    const keys = await owner.audit.keys();
    await page.getByRole("link", { name: "Activity" }).click();
    const checkpoints = page.getByRole("table", { name: "Checkpoints" });
    await checkpoints.getByText("No checkpoint signed yet.").waitFor();
    const saved = JSON.parse(
      await downloadBy(() =>
        page.getByRole("button", { name: "Sign & download checkpoint" }).click(),
      ),
    ) as Checkpoint;
    expect(await checkpointSignatureProblem(sha256, saved, keys)).toBeNull();
    expect(saved.treeSize).toBeGreaterThan(10);
    await checkpoints.getByRole("button", { name: `Download checkpoint ${saved.id}` }).waitFor();
    await shot("activity-checkpoints");

    const run = await owner.run({ language: "bash", command: ["sh", "-c", "echo evidence"] });
    await run.result();
    await page.getByRole("link", { name: "Runs" }).click();
    await page.getByRole("button", { name: `Open ${run.id}` }).click();
    const view = page.getByRole("region", { name: `Run ${run.id}` });
    const bundle = JSON.parse(
      await downloadBy(() => view.getByRole("button", { name: "Evidence bundle" }).click()),
    ) as EvidenceBundle;
    expect(bundle.run.id).toBe(run.id);
    const verified = await verifyEvidenceBundle(sha256, bundle, { trustedKeys: keys });
    expect(verified.problem).toBeNull();
    expect(verified.ok).toBe(true);
  }, 120_000);
});
