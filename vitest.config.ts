import { defineConfig } from "vitest/config";

// Workspace packages resolve to their TypeScript sources through the `source` export condition,
// so tests never need a prior build.
// Vitest also hands these to Node as `--conditions`, so they must not include `import` (that makes
// CommonJS `require()` calls, e.g. of `ws`, pick ESM entry points).
const conditions = ["source", "node"];

export default defineConfig({
  resolve: { conditions },
  ssr: { resolve: { conditions, externalConditions: conditions } },
  test: {
    globals: false,
    environment: "node",
    include: ["packages/*/src/**/*.test.ts", "apps/*/src/**/*.test.ts", "test/**/*.test.ts"],
    // Builds the base images container tests use before any test (and its timeout) starts.
    globalSetup: ["test/global-setup.ts"],
    testTimeout: 30_000,
    hookTimeout: 120_000,
    pool: "forks",
    // The workers run with `--conditions source`; eventsource-parser (imported by the MCP SDK's
    // streamable HTTP client) publishes TypeScript under that condition, which Node cannot load, so
    // it and its importer go through Vite's transform instead.
    server: {
      deps: {
        inline: [
          /@modelcontextprotocol\/sdk\/dist\/esm\/client\/streamableHttp\.js$/,
          "eventsource-parser",
        ],
      },
    },
    reporters: ["default"],
  },
});
