import type {
  V1Container,
  V1EnvVar,
  V1NetworkPolicy,
  V1PersistentVolumeClaim,
  V1Pod,
  V1PodSecurityContext,
  V1Secret,
  V1SecurityContext,
} from "@kubernetes/client-node";
import type { Language } from "@shells/contract";
import { SANDBOX_EGRESS_PORT, type SandboxSpec } from "@shells/sandbox";

/**
 * The objects one shell is made of, as pure functions of its spec: the security boundary of the
 * Kubernetes backend in one file. Nothing here calls the API; `kubernetes-backend.ts` sends what
 * these build, and the tests validate every object against the Kubernetes OpenAPI schemas and
 * assert its security fields one by one.
 *
 * Per shell: a Secret (its spec, its environment, the egress credential), two PVCs (`state`: the
 * shell's `/workspace`; `snapshots`: its restore points, never mounted into the shell's container),
 * a default-deny NetworkPolicy, and a Pod (while running). A stopped shell keeps everything but the
 * Pod; a maintenance Pod (the agent container alone) does snapshot and restore work on a stopped
 * shell's volumes.
 */

/** Label every object the backend makes carries, so it can list (adopt) and reap them. */
export const MANAGED_BY = { "app.kubernetes.io/managed-by": "shells" } as const;
/** Label carrying the shell id on every per-shell object. */
export const SHELL_ID_LABEL = "shells.dev/shell-id";
/** Label naming which control plane owns the object (several may share a namespace). */
export const INSTANCE_LABEL = "shells.dev/instance";
/** Label telling a shell's Pod from a maintenance Pod. */
export const COMPONENT_LABEL = "app.kubernetes.io/component";

/** Shell ids the backend accepts: they become object names and label values (DNS-1123, ≤ 52). */
export const KUBERNETES_SHELL_ID = /^[a-z0-9]([a-z0-9-]{0,50}[a-z0-9])?$/;

/** The uid and gid every process of a shell runs as: never root (Pod Security `restricted`). */
export const SANDBOX_UID = 1000;

/** Where the shell's state volume is mounted in its container, and where execs start. */
export const WORKSPACE = "/workspace";

/** The images each language runs in by default (Debian-based: sh, coreutils, tar, find). */
export const DEFAULT_IMAGES: Record<Language, string> = {
  bash: "docker.io/library/debian:bookworm-slim",
  python: "docker.io/library/python:3.12-slim-bookworm",
  node: "docker.io/library/node:20-bookworm-slim",
  rust: "docker.io/library/rust:1-slim-bookworm",
  go: "docker.io/library/golang:1.22-bookworm",
};

/** Environment every process of a shell starts from; the shell's env and the exec's override it. */
export const BASE_ENV: Record<string, string> = {
  PATH: "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
  // The root filesystem is read-only: home is the shell's own volume.
  HOME: WORKSPACE,
  LANG: "C.UTF-8",
};

const EGRESS_PROXY_URL = `http://127.0.0.1:${SANDBOX_EGRESS_PORT}`;
/** `internet` shells: the variables that point ordinary clients at the egress forwarder. */
export const EGRESS_ENV: Record<string, string> = {
  HTTP_PROXY: EGRESS_PROXY_URL,
  HTTPS_PROXY: EGRESS_PROXY_URL,
  http_proxy: EGRESS_PROXY_URL,
  https_proxy: EGRESS_PROXY_URL,
  NO_PROXY: "localhost,127.0.0.1,::1",
  no_proxy: "localhost,127.0.0.1,::1",
};

/**
 * The keep-alive process of both containers (PID 1). `sleep` runs as a child so that `wait` reaps
 * the orphans execs leave behind (a bare `sleep` as PID 1 would collect zombies), and TERM ends it
 * at once.
 */
export const KEEPALIVE = [
  "/bin/sh",
  "-c",
  "trap 'exit 0' TERM; while :; do sleep 3600 & wait $!; done",
];

/** How the agent container finds the forwarder script in the control plane's image. */
export const AGENT_FORWARDER = "/app/packages/backend-kubernetes/dist/agent/egress-forwarder.js";

/** What the builders need to know about the cluster, from the backend's options. */
export interface ManifestSettings {
  namespace: string;
  /** Names the owning control plane (label `shells.dev/instance`). */
  instance: string;
  /** RuntimeClass of shell Pods (`gvisor`, `kata`); null: the cluster's default runtime. */
  runtimeClassName: string | null;
  /** Image of each language. */
  images: Record<Language, string>;
  /** Image of the agent container: the control plane's own image (node, sh, tar). */
  agentImage: string;
  /** StorageClass of the PVCs; null: the cluster's default. */
  storageClassName: string | null;
  /** Size of a shell's snapshots volume, MiB. */
  snapshotsDiskMb: number;
  /**
   * Where a shell given an egress proxy sends its traffic: the control plane's egress bridge
   * (`egress-bridge.ts`), and the Pods the NetworkPolicy lets shells reach. Null: no shell gets
   * egress (`internet` is refused).
   */
  egress: {
    /** Address and port the agent container dials (the control plane Pod's IP, or a Service). */
    host: string;
    port: number;
    /** Namespace and labels of the control plane's Pods, for the NetworkPolicy's only rule. */
    controlPlaneNamespace: string;
    controlPlaneLabels: Record<string, string>;
  } | null;
}

/** Object names of one shell (all in the backend's namespace). */
export function namesOf(shellId: string) {
  const base = `shells-${shellId}`;
  return {
    pod: base,
    maintenancePod: `${base}-maint`,
    secret: base,
    networkPolicy: base,
    statePvc: `${base}-state`,
    snapshotsPvc: `${base}-snapshots`,
  };
}

/** Labels of every per-shell object. */
export function labelsOf(settings: ManifestSettings, shellId: string): Record<string, string> {
  return { ...MANAGED_BY, [INSTANCE_LABEL]: settings.instance, [SHELL_ID_LABEL]: shellId };
}

/** The label selector matching every object of one shell, or (no id) of the whole instance. */
export function selectorOf(settings: ManifestSettings, shellId?: string): string {
  const labels: Record<string, string> = { ...MANAGED_BY, [INSTANCE_LABEL]: settings.instance };
  if (shellId) labels[SHELL_ID_LABEL] = shellId;
  return Object.entries(labels)
    .map(([k, v]) => `${k}=${v}`)
    .join(",");
}

/** Secret keys: environment variables live under `env.<NAME>` (a valid Secret key for any name). */
const ENV_KEY_PREFIX = "env.";
export const SPEC_KEY = "spec.json";
export const EGRESS_TOKEN_KEY = "egress-token";

/** What the Secret records of a spec (everything but the env values, which have their own keys). */
export type StoredSpec = Omit<SandboxSpec, "env"> & { envNames: string[] };

/**
 * The per-shell Secret: the spec (so a restarted control plane can make the Pod again), the shell's
 * environment (the shell container reads each variable by reference; callers put credentials
 * there), and the egress credential the agent container presents to the egress bridge. The shell
 * container never gets the credential: only the agent container references it.
 */
export function buildSecret(
  settings: ManifestSettings,
  spec: SandboxSpec,
  egressToken: string | null,
): V1Secret {
  const { env, ...rest } = spec;
  const stored: StoredSpec = { ...rest, envNames: Object.keys(env).sort() };
  const data: Record<string, string> = { [SPEC_KEY]: JSON.stringify(stored) };
  for (const [name, value] of Object.entries(env)) data[`${ENV_KEY_PREFIX}${name}`] = value;
  if (egressToken) data[EGRESS_TOKEN_KEY] = egressToken;
  return {
    apiVersion: "v1",
    kind: "Secret",
    metadata: {
      name: namesOf(spec.shellId).secret,
      namespace: settings.namespace,
      labels: labelsOf(settings, spec.shellId),
    },
    type: "Opaque",
    immutable: true,
    stringData: data,
  };
}

/** A shell's volume: `state` (its `/workspace`, `diskMb`) or `snapshots`. */
export function buildPvc(
  settings: ManifestSettings,
  spec: Pick<SandboxSpec, "shellId" | "resources">,
  volume: "state" | "snapshots",
): V1PersistentVolumeClaim {
  const names = namesOf(spec.shellId);
  const sizeMb = volume === "state" ? spec.resources.diskMb : settings.snapshotsDiskMb;
  return {
    apiVersion: "v1",
    kind: "PersistentVolumeClaim",
    metadata: {
      name: volume === "state" ? names.statePvc : names.snapshotsPvc,
      namespace: settings.namespace,
      labels: { ...labelsOf(settings, spec.shellId), "shells.dev/volume": volume },
    },
    spec: {
      accessModes: ["ReadWriteOnce"],
      resources: { requests: { storage: `${sizeMb}Mi` } },
      ...(settings.storageClassName ? { storageClassName: settings.storageClassName } : {}),
    },
  };
}

/**
 * Default deny, both ways. A shell given an egress proxy may open TCP connections to the control
 * plane's egress bridge and nothing else: no DNS, no other Pod, no node, no cloud metadata address
 * (169.254.169.254), no internet. Nothing may connect to a shell.
 */
export function buildNetworkPolicy(settings: ManifestSettings, spec: SandboxSpec): V1NetworkPolicy {
  const egress =
    spec.egress && settings.egress
      ? [
          {
            to: [
              {
                namespaceSelector: {
                  matchLabels: {
                    "kubernetes.io/metadata.name": settings.egress.controlPlaneNamespace,
                  },
                },
                podSelector: { matchLabels: settings.egress.controlPlaneLabels },
              },
            ],
            ports: [{ protocol: "TCP", port: settings.egress.port }],
          },
        ]
      : [];
  return {
    apiVersion: "networking.k8s.io/v1",
    kind: "NetworkPolicy",
    metadata: {
      name: namesOf(spec.shellId).networkPolicy,
      namespace: settings.namespace,
      labels: labelsOf(settings, spec.shellId),
    },
    spec: {
      podSelector: { matchLabels: labelsOf(settings, spec.shellId) },
      policyTypes: ["Ingress", "Egress"],
      ingress: [],
      egress,
    },
  };
}

/** Pod Security `restricted`, for every container: nothing a process could use to leave. */
export function restrictedContainerSecurity(): V1SecurityContext {
  return {
    runAsNonRoot: true,
    runAsUser: SANDBOX_UID,
    runAsGroup: SANDBOX_UID,
    privileged: false,
    allowPrivilegeEscalation: false,
    readOnlyRootFilesystem: true,
    capabilities: { drop: ["ALL"] },
    seccompProfile: { type: "RuntimeDefault" },
  };
}

function podSecurity(): V1PodSecurityContext {
  return {
    runAsNonRoot: true,
    runAsUser: SANDBOX_UID,
    runAsGroup: SANDBOX_UID,
    // Volumes are made writable for the shell's group (on first mount only, not on every start).
    fsGroup: SANDBOX_UID,
    fsGroupChangePolicy: "OnRootMismatch",
    seccompProfile: { type: "RuntimeDefault" },
  };
}

/** CPU cores as a Kubernetes quantity (millicores, at least 1m). */
export function cpuQuantity(cores: number): string {
  return `${Math.max(1, Math.round(cores * 1000))}m`;
}

/**
 * Run by the init container before either container starts: finishes or undoes a restore a crash
 * cut (see `RESTORE_SCRIPT` in `state-scripts.ts`: either the old or the new workspace survives),
 * and makes the workspace directory as the shell's user (a directory the kubelet made for the
 * `subPath` would be root's).
 */
export const PREPARE_STATE_SCRIPT = [
  "cd /state",
  "if [ ! -d workspace ] && [ -d workspace.old ] && [ -d workspace.restore ]; then mv workspace.restore workspace; fi",
  "rm -rf workspace.old workspace.restore",
  "mkdir -p workspace",
].join("\n");

const AGENT_RESOURCES = {
  limits: { cpu: "200m", memory: "128Mi", "ephemeral-storage": "64Mi" },
  requests: { cpu: "20m", memory: "64Mi", "ephemeral-storage": "16Mi" },
};

/** The init container: prepares the state volume (see `PREPARE_STATE_SCRIPT`). */
function prepareContainer(settings: ManifestSettings): V1Container {
  return {
    name: "prepare",
    image: settings.agentImage,
    imagePullPolicy: "IfNotPresent",
    command: ["/bin/sh", "-ec", PREPARE_STATE_SCRIPT],
    resources: AGENT_RESOURCES,
    securityContext: restrictedContainerSecurity(),
    volumeMounts: [{ name: "state", mountPath: "/state" }],
  };
}

/**
 * The agent container: the egress forwarder (when the shell has egress) and the state tooling
 * (tar) snapshots and restores run in. It alone sees the snapshots volume and the egress
 * credential; the shell's processes run in the other container and can reach neither.
 */
function agentContainer(
  settings: ManifestSettings,
  spec: SandboxSpec,
  egress: ManifestSettings["egress"],
): V1Container {
  const env: V1EnvVar[] = egress
    ? [
        { name: "SHELLS_SHELL_ID", value: spec.shellId },
        { name: "SHELLS_EGRESS_BRIDGE", value: `${egress.host}:${egress.port}` },
        { name: "SHELLS_EGRESS_LISTEN_PORT", value: String(SANDBOX_EGRESS_PORT) },
        {
          name: "SHELLS_EGRESS_TOKEN",
          valueFrom: {
            secretKeyRef: { name: namesOf(spec.shellId).secret, key: EGRESS_TOKEN_KEY },
          },
        },
      ]
    : [];
  return {
    name: "agent",
    image: settings.agentImage,
    imagePullPolicy: "IfNotPresent",
    command: egress ? ["node", AGENT_FORWARDER] : KEEPALIVE,
    env,
    resources: AGENT_RESOURCES,
    securityContext: restrictedContainerSecurity(),
    volumeMounts: [
      { name: "state", mountPath: "/state" },
      { name: "snapshots", mountPath: "/snapshots" },
      { name: "agent-tmp", mountPath: "/tmp" },
    ],
  };
}

/** The shell's own container: its language image, the shell's limits, its volume at /workspace. */
function shellContainer(settings: ManifestSettings, spec: SandboxSpec): V1Container {
  const names = namesOf(spec.shellId);
  const env: V1EnvVar[] = [
    ...Object.entries({ ...BASE_ENV, ...(spec.network === "internet" ? EGRESS_ENV : {}) }).map(
      ([name, value]) => ({ name, value }),
    ),
    ...Object.keys(spec.env)
      .sort()
      .map((name) => ({
        name,
        valueFrom: { secretKeyRef: { name: names.secret, key: `${ENV_KEY_PREFIX}${name}` } },
      })),
  ];
  const limits = {
    cpu: cpuQuantity(spec.resources.cpu),
    memory: `${spec.resources.memoryMb}Mi`,
    "ephemeral-storage": "256Mi",
  };
  return {
    name: "shell",
    image: settings.images[spec.language],
    // `reinstall_os` means a new Pod on the newest image of the tag.
    imagePullPolicy: "Always",
    command: KEEPALIVE,
    workingDir: WORKSPACE,
    env,
    // Requests equal limits: the shell gets what it was promised (QoS Guaranteed), and memory past
    // the limit is an OOM kill of the shell, never another tenant's eviction.
    resources: { limits, requests: limits },
    securityContext: restrictedContainerSecurity(),
    volumeMounts: [
      { name: "state", mountPath: WORKSPACE, subPath: "workspace" },
      { name: "tmp", mountPath: "/tmp" },
    ],
  };
}

/**
 * A shell's Pod, or (`maintenance`) the agent container alone on the shell's volumes, for state work
 * on a stopped shell; a maintenance Pod ends itself after `maintenanceDeadlineSeconds` even when the
 * control plane that made it is gone.
 */
export function buildPod(
  settings: ManifestSettings,
  spec: SandboxSpec,
  kind: "shell" | "maintenance" = "shell",
  maintenanceDeadlineSeconds = 900,
): V1Pod {
  const names = namesOf(spec.shellId);
  const maintenance = kind === "maintenance";
  // Only a shell's own Pod forwards egress; a maintenance Pod has no network at all.
  const egress = !maintenance && spec.egress ? settings.egress : null;
  const containers = maintenance
    ? [agentContainer(settings, spec, null)]
    : [shellContainer(settings, spec), agentContainer(settings, spec, egress)];
  return {
    apiVersion: "v1",
    kind: "Pod",
    metadata: {
      name: maintenance ? names.maintenancePod : names.pod,
      namespace: settings.namespace,
      labels: { ...labelsOf(settings, spec.shellId), [COMPONENT_LABEL]: kind },
    },
    spec: {
      ...(settings.runtimeClassName ? { runtimeClassName: settings.runtimeClassName } : {}),
      // No credentials of the cluster inside a shell, no host namespaces, no service links.
      automountServiceAccountToken: false,
      enableServiceLinks: false,
      hostNetwork: false,
      hostPID: false,
      hostIPC: false,
      shareProcessNamespace: false,
      // No resolver: a sealed shell has nowhere to ask, and an internet shell's proxy resolves.
      dnsPolicy: "None",
      dnsConfig: { nameservers: ["127.0.0.1"] },
      // A Pod that ended stays ended, so its container status says why (OOMKilled, Error).
      restartPolicy: "Never",
      terminationGracePeriodSeconds: 2,
      ...(maintenance ? { activeDeadlineSeconds: maintenanceDeadlineSeconds } : {}),
      securityContext: podSecurity(),
      initContainers: [prepareContainer(settings)],
      containers,
      volumes: [
        { name: "state", persistentVolumeClaim: { claimName: names.statePvc } },
        { name: "snapshots", persistentVolumeClaim: { claimName: names.snapshotsPvc } },
        { name: "tmp", emptyDir: { sizeLimit: "64Mi" } },
        { name: "agent-tmp", emptyDir: { sizeLimit: "16Mi" } },
      ],
    },
  };
}

/** Every object `create` sends for a shell, in the order it sends them. */
export function buildShellObjects(
  settings: ManifestSettings,
  spec: SandboxSpec,
  egressToken: string | null,
) {
  return {
    secret: buildSecret(settings, spec, egressToken),
    statePvc: buildPvc(settings, spec, "state"),
    snapshotsPvc: buildPvc(settings, spec, "snapshots"),
    networkPolicy: buildNetworkPolicy(settings, spec),
    pod: buildPod(settings, spec),
  };
}
