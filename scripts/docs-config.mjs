#!/usr/bin/env node
// Writes docs/configuration.md from the server's configuration schema (apps/server/src/config.ts).
// Run through `npm run docs:config`, which builds the server first; a test fails when the
// committed file differs from what this writes.
import { writeFileSync } from "node:fs";
import { renderConfigReference } from "../apps/server/dist/config-reference.js";

const target = new URL("../docs/configuration.md", import.meta.url);
writeFileSync(target, renderConfigReference());
console.log(`wrote ${target.pathname}`);
