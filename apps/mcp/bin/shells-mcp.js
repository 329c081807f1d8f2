#!/usr/bin/env node
// The `shells-mcp` executable. It is a committed launcher rather than dist/bin.js itself because npm
// links (and marks executable) only bin files that exist at install time, which is before the
// first build produces dist/. It writes nothing to stdout: that is the MCP channel.
import { fileURLToPath } from "node:url";

const entry = fileURLToPath(new URL("../dist/bin.js", import.meta.url));
try {
  await import("../dist/bin.js");
} catch (error) {
  if (error?.code === "ERR_MODULE_NOT_FOUND" && String(error.message).includes(entry)) {
    process.stderr.write(
      `shells-mcp: error: mcp_not_built: ${entry} does not exist\nhint: build it first: npm run build (from the repository root)\n`,
    );
    process.exit(1);
  }
  throw error;
}
