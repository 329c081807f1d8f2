import { execFileSync } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium, type BrowserContext, type Page } from "playwright-core";
import { startTestServer, type TestServer } from "./harness.js";

// The console in a real browser: Debian's chromium driven by playwright-core, never a downloaded
// browser, against a real control plane.
const CHROMIUM = process.env.SHELLS_TEST_CHROMIUM ?? "/usr/bin/chromium";
const CHROMIUM_FLAGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];
const repoRoot = fileURLToPath(new URL("../..", import.meta.url));

/** A control plane serving the freshly built console, and a browser on it. */
export interface ConsoleBrowser {
  server: TestServer;
  context: BrowserContext;
  page: Page;
  repoRoot: string;
  /** Signs the page in with the owner's key. */
  signIn(): Promise<void>;
  close(): Promise<void>;
}

/**
 * Builds the console from the current sources (~3 s) and the server, starts a server on loopback
 * and a headless chromium with its own profile.
 */
export async function startConsoleBrowser(
  options: Parameters<typeof startTestServer>[0] = {},
): Promise<ConsoleBrowser> {
  if (!existsSync(CHROMIUM)) {
    throw new Error(
      `Chromium is not installed at ${CHROMIUM}: run \`apt-get install -y chromium\` (CI installs it; never download a browser).`,
    );
  }
  execFileSync("npm", ["run", "build", "-w", "@shells/console"], { stdio: "ignore" });
  execFileSync(
    process.execPath,
    [join(repoRoot, "node_modules/typescript/bin/tsc"), "-b", "apps/server"],
    { cwd: repoRoot, stdio: "inherit" },
  );
  const server = await startTestServer(options);
  const profileDir = mkdtempSync(join(tmpdir(), "shells-chromium-"));
  const context = await chromium.launchPersistentContext(profileDir, {
    executablePath: CHROMIUM,
    args: CHROMIUM_FLAGS,
    headless: true,
    viewport: { width: 1440, height: 900 },
    colorScheme: "light",
  });
  const page = context.pages()[0] ?? (await context.newPage());
  return {
    server,
    context,
    page,
    repoRoot,
    signIn: async () => {
      await page.goto(server.url);
      await page.getByLabel("API token").fill(server.token);
      await page.getByRole("button", { name: "Sign in" }).click();
      await page.getByRole("navigation", { name: "Main" }).waitFor();
    },
    close: async () => {
      await context.close();
      await server.close();
      rmSync(profileDir, { recursive: true, force: true });
    },
  };
}
