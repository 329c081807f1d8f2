import { ContainerBackend } from "@shells/backend-container";
import { WasmBackend } from "@shells/backend-wasm";
import { SimulatorBackend, type SandboxBackend } from "@shells/sandbox";
import type { FastifyBaseLogger as Logger } from "fastify";
import { join } from "node:path";
import type { ServerConfig } from "./config.js";

/** The backends the configuration asks for. The simulator only ever runs when named explicitly. */
export function createBackends(config: ServerConfig, logger: Logger): SandboxBackend[] {
  if (config.backend === "simulator") {
    logger.warn(
      "backend: simulator — a model that runs no code and isolates nothing; for tests and demos only",
    );
    return [new SimulatorBackend()];
  }
  let lastPercent = -10;
  // JavaScript interpreters load in milliseconds: their pool fills at boot. A Python interpreter
  // takes seconds of CPU and ~160 MB, so its pool fills after the first wasm python shell.
  const wasm = new WasmBackend({ stateDir: join(config.dataDir, "wasm") });
  void wasm.availability().then(([offered]) => {
    if (offered?.available)
      wasm
        .warm((line) => logger.info(`wasm pool: ${line}`), ["node"])
        .catch((error: unknown) => logger.warn({ err: error }, "wasm pool warm-up failed"));
  });
  return [
    wasm,
    new ContainerBackend({
      stateDir: join(config.dataDir, "container"),
      ...(config.imagesDir ? { imagesDir: config.imagesDir } : {}),
      rootCapabilities: config.rootCapabilities,
      logger,
      // Image builds take about a minute on first need: show where they are.
      onProgress: (event) => {
        const percent = event.percent ?? -1;
        if (percent >= 0 && percent < 100 && percent - lastPercent < 10) return;
        lastPercent = percent;
        logger.info(
          { image: event },
          `image build: ${event.message}${percent >= 0 ? ` (${Math.round(percent)}%)` : ""}`,
        );
      },
    }),
  ];
}
