import { KubeConfig } from "@kubernetes/client-node";

/** Where the backend finds the cluster and its credentials. */
export interface KubeConfigSource {
  /** A kubeconfig file (its current context). */
  kubeconfigPath?: string;
  /**
   * The service account a Pod runs as: `KUBERNETES_SERVICE_HOST`/`_PORT`, and the token and CA
   * under `/var/run/secrets/kubernetes.io/serviceaccount` (re-read as the kubelet rotates the
   * token). `rootDir` puts that directory under another root (tests).
   */
  inCluster?: boolean | { rootDir: string };
}

/**
 * The client configuration for a source: the kubeconfig file when one is named, else the Pod's
 * service account when asked for or when running in a Pod (`KUBERNETES_SERVICE_HOST` is set),
 * else the default kubeconfig (`KUBECONFIG`, `~/.kube/config`).
 */
export function loadKubeConfig(
  source: KubeConfigSource = {},
  env: NodeJS.ProcessEnv = process.env,
): KubeConfig {
  const config = new KubeConfig();
  if (source.kubeconfigPath) {
    config.loadFromFile(source.kubeconfigPath);
  } else if (source.inCluster || (source.inCluster === undefined && env.KUBERNETES_SERVICE_HOST)) {
    config.loadFromCluster(typeof source.inCluster === "object" ? source.inCluster.rootDir : "");
  } else {
    config.loadFromDefault();
  }
  if (!config.getCurrentCluster())
    throw new Error("the Kubernetes configuration names no cluster (no current context)");
  return config;
}
