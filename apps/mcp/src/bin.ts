#!/usr/bin/env node
/**
 * The `shells-mcp` executable: an MCP server on stdin/stdout, configured by `SHELLS_URL` and
 * `SHELLS_API_TOKEN`. stdout carries only the protocol; everything else goes to stderr.
 */
import { startStdioServer } from "./stdio-server.js";

try {
  await startStdioServer({
    env: process.env,
    stdin: process.stdin,
    stdout: process.stdout,
    stderr: process.stderr,
  });
} catch (error) {
  const code = (error as { code?: unknown }).code;
  process.stderr.write(
    `shells-mcp: error: ${typeof code === "string" ? `${code}: ` : ""}${error instanceof Error ? error.message : String(error)}\n` +
      "hint: set SHELLS_URL (e.g. http://127.0.0.1:8080) and SHELLS_API_TOKEN (an agent's API key)\n",
  );
  process.exitCode = 1;
}
