/**
 * Builds every base image the container tests use, once, before any test runs.
 *
 * A first image build takes a minute or more (several on a busy machine). Inside a test or a hook
 * it races that test's timeout, so a fresh, loaded machine failed tests that were correct. Here it
 * runs before any timeout starts, with its progress printed; the tests then find every image in the
 * shared cache. Builds are locked across processes, so runs that start together build each image
 * once between them. The microvm templates (a saved VM state per language) are made here too.
 */
import {
  customImageId,
  normalizeImageRecipe,
  type ImageRecipe,
  type Language,
} from "@shells/contract";
import { createHash } from "node:crypto";
import type { TestProject } from "vitest/node";
import {
  ensureCustomImage,
  ensureImage,
  IMAGE_RECIPES,
} from "../packages/backend-container/src/internal/images.js";
import {
  TEMPLATE_IMAGE_LANGUAGE,
  TEMPLATE_IMAGE_RECIPE,
  TOOLCHAIN_IMAGE_RECIPE,
  TOOLCHAIN_TEST_ENABLED,
} from "./e2e/template-image-recipe.js";

/** Every language preset has an image recipe; a container test may create a shell of any of them. */
const LANGUAGES = Object.keys(IMAGE_RECIPES) as Language[];

/** Test files that make container sandboxes whatever `SHELLS_TEST_BACKEND` says. */
const ALWAYS_ON_CONTAINERS = [
  "/packages/backend-container/",
  "/test/e2e/container.e2e.test.ts",
  "/test/e2e/crash.e2e.test.ts",
  "/test/e2e/metering.e2e.test.ts",
  "/test/e2e/evidence",
  "/test/e2e/console",
  "/test/e2e/egress",
  "/test/e2e/seed-004",
  "/test/e2e/demo",
  "/test/e2e/bindings",
  "/test/e2e/replicas",
  "/test/e2e/template-images",
  "/test/e2e/template-toolchains",
];

/** Test files that run shells on the custom image of `TEMPLATE_IMAGE_RECIPE`. */
const CUSTOM_IMAGE_TESTS = ["/test/e2e/template-images"];

/** Test files that run shells on the custom image of `TOOLCHAIN_IMAGE_RECIPE` (opt-in). */
const TOOLCHAIN_IMAGE_TESTS = ["/test/e2e/template-toolchains"];

/** Test files that restore microvm templates, with the templates each needs (language, memory). */
const MICROVM_TEMPLATES: [file: string, templates: [Language, number][]][] = [
  // The backend's own suite: bash at the tests' memory size.
  ["/packages/backend-microvm/", [["bash", 128]]],
  // The seed's SDK snippet (rust) and MCP flow (go), at the server's default memory size
  // (DEFAULT_RESOURCES.memoryMb in apps/server/src/orchestrator/admission.ts).
  [
    "/test/e2e/microvm.e2e.test.ts",
    [
      ["rust", 512],
      ["go", 512],
    ],
  ],
  // Egress and service bindings of microvm shells, at the backend suite's memory size.
  ["/test/e2e/microvm-egress.e2e.test.ts", [["bash", 128]]],
  // `shells demo` runs its python workloads on every class the server runs, microvm included.
  ["/test/e2e/demo.e2e.test.ts", [["python", 512]]],
  // A terminal and interpreter turns (a Python REPL) in a microvm.
  ["/test/e2e/microvm-term.e2e.test.ts", [["python", 512]]],
  // Metering of each class the host runs, microvm included, at the backend suite's memory size.
  ["/test/e2e/metering.e2e.test.ts", [["bash", 128]]],
];

/** The test files of this run (its file filters, `vitest run packages/sandbox`; none means all). */
async function testFilesOf(project: TestProject): Promise<string[]> {
  const filters = (project.vitest as unknown as { filenamePattern?: string[] }).filenamePattern;
  return (await project.globTestFiles(filters)).testFiles;
}

/** Whether any test file of this run makes container sandboxes. */
function runUsesContainers(testFiles: string[]): boolean {
  const liveOnContainers = process.env["SHELLS_TEST_BACKEND"] === "container";
  return testFiles.some(
    (file) =>
      ALWAYS_ON_CONTAINERS.some((part) => file.includes(part)) ||
      (liveOnContainers && file.includes("/test/e2e/")),
  );
}

/** The microvm templates this run's test files restore. */
function microvmTemplatesOf(testFiles: string[]): [Language, number][] {
  return MICROVM_TEMPLATES.filter(([part]) =>
    testFiles.some((file) => file.includes(part)),
  ).flatMap(([, templates]) => templates);
}

/**
 * Makes the microvm templates the microvm tests restore from (a guest kernel fetched with apt, a
 * base disk from the language's image, one cold boot, a saved VM state), before any test timeout
 * runs. Slow the first time on an emulated host: a minute or more per template.
 */
async function prepareMicrovmTemplates(templates: [Language, number][]): Promise<void> {
  const support = await import("../packages/backend-microvm/src/internal/test-support.js");
  if (support.missingTools.length) return;
  const log = (line: string) => process.stdout.write(`[microvm] ${line}\n`);
  const { MicrovmBackend } = await import("../packages/backend-microvm/src/index.js");
  const backend = new MicrovmBackend({
    stateDir: support.TEST_MICROVM_DIR,
    cacheDir: support.TEST_MICROVM_DIR,
    images: support.testImages,
    onProgress: (event) => log(event.message),
    // The states grown for the backend suite's disks and the server's default disk
    // (DEFAULT_RESOURCES.diskMb), so no test's create grows one.
    grownDiskMb: [support.TEST_GROWN_DISK_MB, 1024],
  });
  for (const [language, memoryMb] of templates) {
    const started = Date.now();
    const template = await backend.prepare(language, memoryMb);
    const seconds = Math.round((Date.now() - started) / 1000);
    log(`${language} ${memoryMb} MB template ready in ${seconds}s (${template.accel})`);
  }
}

/** Vitest global setup: makes sure the image cache holds every image before the tests start. */
export default async function setup(project: TestProject): Promise<void> {
  const testFiles = await testFilesOf(project);
  const templates = microvmTemplatesOf(testFiles);
  const containers = runUsesContainers(testFiles);
  if (!containers && templates.length === 0) return;
  // Loaded only now: it checks the host (and says so when container tests will be skipped).
  const { hostReport, TEST_IMAGES_DIR } =
    await import("../packages/backend-container/src/internal/test-support.js");
  if (hostReport.available) {
    // Microvm disks are made from the same images: build the ones they need even when no
    // container test runs.
    const languages = containers ? LANGUAGES : [...new Set(templates.map(([l]) => l))];
    await buildImages(TEST_IMAGES_DIR, languages);
    if (testFiles.some((file) => CUSTOM_IMAGE_TESTS.some((part) => file.includes(part))))
      await buildTemplateImage(TEST_IMAGES_DIR, TEMPLATE_IMAGE_RECIPE);
    if (
      TOOLCHAIN_TEST_ENABLED &&
      testFiles.some((file) => TOOLCHAIN_IMAGE_TESTS.some((part) => file.includes(part)))
    )
      await buildTemplateImage(TEST_IMAGES_DIR, TOOLCHAIN_IMAGE_RECIPE);
  }
  if (templates.length) await prepareMicrovmTemplates(templates);
}

/**
 * Builds (or finds) the custom image of a template image test's recipe (on the bash preset) in
 * the shared cache, under the id the server gives it, so the test's shells find it built.
 */
async function buildTemplateImage(imagesDir: string, recipe: ImageRecipe): Promise<void> {
  const log = (line: string) => process.stdout.write(`[images] ${line}\n`);
  const sha256 = (data: Uint8Array) => createHash("sha256").update(data).digest();
  const id = customImageId(sha256, TEMPLATE_IMAGE_LANGUAGE, recipe);
  const started = Date.now();
  await ensureCustomImage(
    imagesDir,
    TEMPLATE_IMAGE_LANGUAGE,
    { id, ...normalizeImageRecipe(recipe) },
    {
      onProgress: (event) =>
        log(`${id}: ${event.message}${event.percent === undefined ? "" : ` (${event.percent}%)`}`),
    },
  );
  log(`${id} ready after ${Math.round((Date.now() - started) / 1000)}s`);
}

/** Builds (or finds) the images of `languages` in the shared cache, with progress. */
async function buildImages(imagesDir: string, languages: Language[]): Promise<void> {
  const log = (line: string) => process.stdout.write(`[images] ${line}\n`);
  log(`making sure ${languages.join(", ")} are built in ${imagesDir}`);
  for (const language of languages) {
    const started = Date.now();
    let lastPercent = -10;
    const image = await ensureImage(imagesDir, language, {
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
