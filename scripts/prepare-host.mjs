// What `npm start` and `npm run demo` need before they build: the npm dependencies, and the host
// packages the container backend uses (installed with apt when run as root; `shells doctor`
// explains each check).
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";

/** Host binaries the container backend runs, and the Debian package of each. */
const SYSTEM_PACKAGES = {
  mmdebstrap: "mmdebstrap",
  "mkfs.ext4": "e2fsprogs",
  gcc: "gcc",
  tar: "tar",
  ip: "iproute2",
  nft: "nftables",
  bwrap: "bubblewrap",
  setpriv: "util-linux",
};

const sh = (cmd, args) => spawnSync(cmd, args, { stdio: "inherit" }).status === 0;
const has = (bin) => spawnSync("sh", ["-c", `command -v ${bin}`], { stdio: "ignore" }).status === 0;

/**
 * Installs the npm dependencies when missing and, unless `hostPackages` is false, the host packages
 * the container backend needs. Prints each step with `step`; answers false (having said why) when
 * something could not be installed.
 */
export function prepareHost({ step, hostPackages = true }) {
  if (!existsSync("node_modules/.package-lock.json")) {
    step("installing npm dependencies (npm install; better-sqlite3 compiles from source, ~2 min)");
    if (!sh("npm", ["install", "--no-audit", "--no-fund"])) return false;
  }
  if (!hostPackages) return true;
  const missing = Object.entries(SYSTEM_PACKAGES)
    .filter(([bin]) => !has(bin))
    .map(([, pkg]) => pkg);
  if (!existsSync("/usr/include/seccomp.h")) missing.push("libseccomp-dev");
  if (missing.length === 0) return true;
  const command = `apt-get install -y ${missing.join(" ")}`;
  if (process.getuid?.() === 0) {
    step(`installing what container sandboxes need: ${missing.join(", ")}`);
    return sh("sh", ["-c", `apt-get update -qq && DEBIAN_FRONTEND=noninteractive ${command}`]);
  }
  console.error(
    `Container sandboxes need: ${missing.join(", ")}. Install them as root:\n  sudo ${command}\nor run without real sandboxes: npm start -- --backend simulator`,
  );
  return false;
}
