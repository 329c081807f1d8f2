import { SimulatorBackend, type SandboxBackend } from "@shells/sandbox";
import { join } from "node:path";
import type { FastifyBaseLogger as Logger } from "fastify";
import type { ServerConfig } from "./config.js";

/** The backends the configuration asks for. The simulator only ever runs when named explicitly. */
export async function createBackends(
  config: ServerConfig,
  logger: Logger,
): Promise<SandboxBackend[]> {
  if (config.backend === "simulator") {
    logger.warn(
      "backend: simulator — a model that runs no code and isolates nothing; for tests and demos only",
    );
    return [new SimulatorBackend()];
  }
  const { ContainerBackend } = (await import("@shells/backend-container")) as unknown as {
    ContainerBackend?: new (options: { stateDir: string; logger: Logger }) => SandboxBackend;
  };
  if (!ContainerBackend)
    throw new Error(
      "the container backend is not built into this server yet; start with --backend simulator",
    );
  return [new ContainerBackend({ stateDir: join(config.dataDir, "container"), logger })];
}
