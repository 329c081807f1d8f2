import { ContainerBackend, ensureImage, imagesDirOf } from "@shells/backend-container";
import type { KubernetesBackend } from "@shells/backend-kubernetes";
import { MicrovmBackend, type BuildProgress } from "@shells/backend-microvm";
import { WasmBackend } from "@shells/backend-wasm";
import { SimulatorBackend, type SandboxBackend } from "@shells/sandbox";
import type { FastifyBaseLogger as Logger } from "fastify";
import { join } from "node:path";
import type { ServerConfig } from "./config.js";
import { DEFAULT_RESOURCES } from "./orchestrator/admission.js";

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
  // JavaScript interpreters load in milliseconds: their pool fills at boot. A Python interpreter
  // takes seconds of CPU and ~160 MB, so its pool fills after the first wasm python shell.
  const wasm = new WasmBackend({ stateDir: join(config.dataDir, "wasm") });
  void wasm.availability().then(([offered]) => {
    if (offered?.available)
      wasm
        .warm((line) => logger.info(`wasm pool: ${line}`), ["node"])
        .catch((error: unknown) => logger.warn({ err: error }, "wasm pool warm-up failed"));
  });
  const containerDir = join(config.dataDir, "container");
  const imagesDir = config.imagesDir ?? imagesDirOf(containerDir);
  const onProgress = buildProgressLogger(logger);
  const container = new ContainerBackend({
    stateDir: containerDir,
    ...(config.imagesDir ? { imagesDir: config.imagesDir } : {}),
    rootCapabilities: config.rootCapabilities,
    logger,
    onProgress,
    warmDisks: config.containerWarmDisks,
    warmDiskMb: DEFAULT_RESOURCES.diskMb,
    pool: config.containerPool,
  });
  const warm =
    config.containerWarmDisks > 0 || Object.values(config.containerPool).some((n) => n > 0);
  if (warm || config.containerFavorDynmods === "on")
    void container.availability().then(async ([offered]) => {
      if (!offered?.available) return;
      // First: the pool's sandbox starts move processes into cgroups too.
      if (config.containerFavorDynmods === "on")
        await container
          .favorDynamicCgroups()
          .catch((error: unknown) => logger.warn({ err: error }, "cgroup favordynmods failed"));
      if (warm) void container.warm();
    });
  return [
    // Listed first: where it is configured, it serves its class ahead of this host's backends.
    ...(config.kubernetes ? [await createKubernetesBackend(config, logger)] : []),
    wasm,
    container,
    // Its disks are made from the container backend's images (one recipe, two formats). The first
    // create of a language makes its template (minutes under emulation, progress in this log);
    // `shells images build --runtime microvm <language>` makes it ahead of time.
    new MicrovmBackend({
      stateDir: join(config.dataDir, "microvm"),
      cacheDir: config.microvmCacheDir ?? join(config.dataDir, "microvm", "cache"),
      images: (language, onImageProgress) =>
        ensureImage(imagesDir, language, onImageProgress ? { onProgress: onImageProgress } : {}),
      onProgress,
      logger,
      // Shells of the default disk size restore a state whose root filesystem already fills it.
      grownDiskMb: [DEFAULT_RESOURCES.diskMb],
    }),
  ];
}

/**
 * The Kubernetes backend the configuration describes (`SHELLS_KUBERNETES_*`). Its egress bridge
 * listens from the start when shells get egress, so shells adopted after a restart reach it. The
 * package is loaded only here, when configured: the Kubernetes client takes about a second and
 * 70 MB to load, which no other server should pay.
 */
export async function createKubernetesBackend(
  config: ServerConfig,
  logger: Logger,
): Promise<KubernetesBackend> {
  const { KubernetesBackend, loadKubeConfig } = await import("@shells/backend-kubernetes");
  const backend = new KubernetesBackend({
    kubeConfig: loadKubeConfig(
      config.kubernetesKubeconfig ? { kubeconfigPath: config.kubernetesKubeconfig } : {},
    ),
    namespace: config.kubernetesNamespace,
    instance: config.kubernetesInstance,
    runtimeClassName:
      config.kubernetesRuntimeClass === "none" ? null : config.kubernetesRuntimeClass,
    ...(config.kubernetesImages ? { images: config.kubernetesImages } : {}),
    agentImage: config.kubernetesAgentImage,
    storageClassName: config.kubernetesStorageClass ?? null,
    snapshotsDiskMb: config.kubernetesSnapshotsDiskMb,
    ...(config.kubernetesEgressHost
      ? {
          egress: {
            port: config.kubernetesEgressPort,
            advertiseHost: config.kubernetesEgressHost,
            controlPlaneNamespace: config.kubernetesControlPlaneNamespace,
            controlPlaneLabels: config.kubernetesControlPlaneLabels,
          },
        }
      : {}),
  });
  logger.warn(
    { namespace: config.kubernetesNamespace, runtimeClass: config.kubernetesRuntimeClass },
    "backend: kubernetes — unverified against a live cluster (its objects and API handling are tested without one)",
  );
  if (config.kubernetesEgressHost)
    backend
      .listenEgress()
      .then((port) => logger.info(`kubernetes egress bridge: listening on port ${port}`))
      .catch((error: unknown) =>
        logger.error({ err: error }, "kubernetes egress bridge: could not listen"),
      );
  return backend;
}

/**
 * Logs image and template builds as they go (they take a minute or more on first need), at most
 * one line per 10% of a step that reports percentages.
 */
function buildProgressLogger(logger: Logger): (event: BuildProgress) => void {
  let lastPercent = -10;
  return (event) => {
    const percent = event.percent ?? -1;
    if (percent >= 0 && percent < 100 && percent - lastPercent < 10) return;
    lastPercent = percent;
    logger.info(
      { image: event },
      `${event.phase === "microvm" ? "microvm" : "image build"}: ${event.message}${percent >= 0 ? ` (${Math.round(percent)}%)` : ""}`,
    );
  };
}
