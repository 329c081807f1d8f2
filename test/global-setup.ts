/**
 * Builds every base image the container tests use, once, before any test runs.
 *
 * A first image build takes a minute or more (several on a busy machine). Inside a test or a hook
 * it races that test's timeout, so a fresh, loaded machine failed tests that were correct. Here it
 * runs before any timeout starts, with its progress printed; the tests then find every image in the
 * shared cache. Builds are locked across processes, so runs that start together build each image
 * once between them.
 */
import type { Language } from "@shells/contract";
import type { TestProject } from "vitest/node";
import { ensureImage, IMAGE_RECIPES } from "../packages/backend-container/src/internal/images.js";

/** Every language preset has an image recipe; a container test may create a shell of any of them. */
const LANGUAGES = Object.keys(IMAGE_RECIPES) as Language[];

/** Test files that make container sandboxes whatever `SHELLS_TEST_BACKEND` says. */
const ALWAYS_ON_CONTAINERS = [
  "/packages/backend-container/",
  "/test/e2e/container.e2e.test.ts",
  "/test/e2e/evidence",
  "/test/e2e/console.e2e.test.ts",
  "/test/e2e/egress",
  "/test/e2e/seed-004",
  "/test/e2e/demo",
];

/** Whether any test file of this run makes container sandboxes. */
async function runUsesContainers(project: TestProject): Promise<boolean> {
  // The run's file filters (`vitest run packages/sandbox`); none means every file.
  const filters = (project.vitest as unknown as { filenamePattern?: string[] }).filenamePattern;
  const { testFiles } = await project.globTestFiles(filters);
  const liveOnContainers = process.env["SHELLS_TEST_BACKEND"] === "container";
  return testFiles.some(
    (file) =>
      ALWAYS_ON_CONTAINERS.some((part) => file.includes(part)) ||
      (liveOnContainers && file.includes("/test/e2e/")),
  );
}

/** Whether any test file of this run restores microvm templates. */
async function runUsesMicrovms(project: TestProject): Promise<boolean> {
  const filters = (project.vitest as unknown as { filenamePattern?: string[] }).filenamePattern;
  const { testFiles } = await project.globTestFiles(filters);
  return (
    process.env["SHELLS_TEST_MICROVM"] === "1" &&
    testFiles.some((file) => file.includes("/packages/backend-microvm/"))
  );
}

/**
 * Makes the microvm template the microvm tests restore from (a guest kernel fetched with apt, a
 * base disk from the bash image, one cold boot, a saved VM state), before any test timeout runs.
 */
async function prepareMicrovmTemplate(): Promise<void> {
  const support = await import("../packages/backend-microvm/src/internal/test-support.js");
  if (support.missingTools.length) return;
  const log = (line: string) => process.stdout.write(`[microvm] ${line}\n`);
  const { MicrovmBackend } = await import("../packages/backend-microvm/src/index.js");
  const backend = new MicrovmBackend({
    stateDir: support.TEST_MICROVM_DIR,
    cacheDir: support.TEST_MICROVM_DIR,
    images: support.testImages,
    onProgress: (event) => log(event.message),
  });
  const started = Date.now();
  const template = await backend.prepare("bash", support.TEST_MEMORY_MB);
  log(`bash template ready in ${Math.round((Date.now() - started) / 1000)}s (${template.accel})`);
}

/** Vitest global setup: makes sure the image cache holds every image before the tests start. */
export default async function setup(project: TestProject): Promise<void> {
  const microvms = await runUsesMicrovms(project);
  if (microvms) await prepareMicrovmTemplate();
  if (!(await runUsesContainers(project))) return;
  // Loaded only now: it checks the host (and says so when container tests will be skipped).
  const { hostReport, TEST_IMAGES_DIR } =
    await import("../packages/backend-container/src/internal/test-support.js");
  if (!hostReport.available) return;
  const log = (line: string) => process.stdout.write(`[images] ${line}\n`);
  log(`making sure ${LANGUAGES.join(", ")} are built in ${TEST_IMAGES_DIR}`);
  for (const language of LANGUAGES) {
    const started = Date.now();
    let lastPercent = -10;
    const image = await ensureImage(TEST_IMAGES_DIR, language, {
      onProgress: (event) => {
        const percent = event.percent ?? -1;
        if (percent >= 0 && percent < 100 && percent - lastPercent < 10) return;
        lastPercent = percent;
        log(`${language}: ${event.message}${percent >= 0 ? ` (${Math.round(percent)}%)` : ""}`);
      },
    });
    const seconds = Math.round((Date.now() - started) / 1000);
    log(`${language}: ${image.version} ready${seconds > 0 ? ` after ${seconds}s` : ""}`);
  }
}
