/**
 * The Kubernetes backend: one Pod per shell under a RuntimeClass (gVisor or Kata), Pod Security
 * `restricted`, a default-deny NetworkPolicy, a Secret and PVCs per shell. Unverified against a live
 * cluster: see the package README for what is and is not checked.
 */
export {
  KUBERNETES_API_PERMISSIONS,
  KubernetesBackend,
  type KubernetesBackendOptions,
} from "./kubernetes-backend.js";
export { loadKubeConfig, type KubeConfigSource } from "./kube-config.js";
