#!/usr/bin/env node
// `npm start`: installs dependencies when missing, makes sure the host has what the container and
// microvm backends need (installing it when run as root), builds, and serves the control plane on
// 127.0.0.1:8080 with the embedded defaults (SQLite under ./.shells, container sandboxes).
// Extra arguments pass through to the server: `npm start -- --backend simulator --port 9000`.
// `SHELLS_PREBUILD_IMAGES=python,node npm start` (or `all`) builds those languages' base images
// first, when not built yet, so no first create of them waits a minute for one.
// `npm start -- issue-key --email <member>` builds the server and runs the operator's command
// instead of listening: no host packages or console needed, and stdout carries only the token.
import { spawn, spawnSync } from "node:child_process";
import { existsSync, readdirSync } from "node:fs";
import { join, resolve } from "node:path";
import { prepareHost } from "./prepare-host.mjs";

const args = process.argv.slice(2);
const operatorCommand = args[0] === "issue-key";
const step = (message) =>
  (operatorCommand ? console.error : console.log)(`\u001b[1m▸ ${message}\u001b[0m`);
const sh = (cmd, args) => spawnSync(cmd, args, { stdio: "inherit" }).status === 0;

const wantsSimulator =
  args.join(" ").includes("simulator") || process.env.SHELLS_BACKEND === "simulator";

if (!prepareHost({ step, hostPackages: !operatorCommand && !wantsSimulator })) process.exit(1);

// What the microvm class needs (QEMU, qcow2 tools, and the tools that build its guest kernel
// module and initramfs). Optional: without them the server offers the other classes and answers
// microvm creates with runtime_unavailable naming this same command.
const MICROVM_PACKAGES = {
  "qemu-system-x86_64": "qemu-system-x86",
  "qemu-img": "qemu-utils",
  cpio: "cpio",
  make: "make",
  strip: "binutils",
};
const microvmMissing = Object.entries(MICROVM_PACKAGES)
  .filter(([bin]) => !has(bin))
  .map(([, pkg]) => pkg);
if (!operatorCommand && !wantsSimulator && microvmMissing.length > 0) {
  const command = `apt-get install -y --no-install-recommends ${microvmMissing.join(" ")}`;
  if (process.getuid?.() === 0) {
    step(`installing what microvm sandboxes need: ${microvmMissing.join(", ")}`);
    if (!sh("sh", ["-c", `apt-get update -qq && DEBIAN_FRONTEND=noninteractive ${command}`]))
      console.error("Installing them failed; microvm shells stay unavailable until they are.");
  } else {
    console.error(
      `Microvm sandboxes also need: ${microvmMissing.join(", ")} (as root: ${command}).`,
    );
  }
} else if (
  !operatorCommand &&
  !wantsSimulator &&
  process.getuid?.() === 0 &&
  !sh("sh", ["-c", "apt-cache show linux-image-cloud-amd64 >/dev/null 2>&1"])
) {
  // The first microvm template fetches the guest kernel with apt-get download: apt must know it.
  step("refreshing apt's lists (the microvm guest kernel comes from them)");
  sh("apt-get", ["update", "-qq"]);
}

step("building (tsc -b)");
if (!sh("npx", ["tsc", "-b"])) process.exit(1);
if (!operatorCommand) {
  step("building the web console (vite)");
  if (!sh("npm", ["run", "build", "-w", "@shells/console"])) {
    console.error(
      "The console did not build; the API still starts (http://…/ explains how to build it).",
    );
  }
  prebuildImages();
  step("starting the control plane");
}
/** Builds the base images `SHELLS_PREBUILD_IMAGES` names that the images dir does not hold yet. */
function prebuildImages() {
  const wanted = process.env.SHELLS_PREBUILD_IMAGES?.trim();
  if (!wanted || wantsSimulator) return;
  const at = args.indexOf("--data-dir");
  const dataDir = resolve(at >= 0 ? args[at + 1] : process.env.SHELLS_DATA_DIR || ".shells");
  const imagesDir = process.env.SHELLS_IMAGES_DIR || join(dataDir, "container", "images");
  const languages = wanted === "all" ? ["bash", "python", "node", "go", "rust"] : wanted.split(",");
  const built = (language) =>
    existsSync(join(imagesDir, language)) &&
    readdirSync(join(imagesDir, language)).some((entry) =>
      existsSync(join(imagesDir, language, entry, "image.json")),
    );
  const missing = languages.map((l) => l.trim()).filter((l) => l && !built(l));
  if (missing.length === 0) return;
  step(`building base images first (SHELLS_PREBUILD_IMAGES): ${missing.join(", ")}`);
  if (
    !sh(process.execPath, [
      "apps/cli/dist/bin.js",
      "--data-dir",
      dataDir,
      "images",
      "build",
      ...missing,
    ])
  )
    console.error("Building them failed; a first create of each builds its image instead.");
}

const server = spawn(process.execPath, ["apps/server/dist/server.js", ...args], {
  stdio: "inherit",
});
for (const signal of ["SIGINT", "SIGTERM"]) process.on(signal, () => server.kill(signal));
server.on("exit", (code, signal) => process.exit(code ?? (signal ? 1 : 0)));
