import type { V1ContainerStateTerminated, V1Pod } from "@kubernetes/client-node";
import type { KillReason } from "@shells/contract";

/** How the backend sees a shell's Pod. */
export type PodPhaseView =
  /** Scheduled or pulling images: not yet usable. */
  | "starting"
  /** The shell container runs: execs work. */
  | "running"
  /** The Pod ended (or is being deleted): its processes are gone. */
  | "ended";

/** Where a Pod is, as far as execs in `container` (the shell's, or a maintenance Pod's agent) go. */
export function podPhaseOf(pod: V1Pod, container: "shell" | "agent" = "shell"): PodPhaseView {
  if (pod.metadata?.deletionTimestamp) return "ended";
  const phase = pod.status?.phase;
  if (phase === "Succeeded" || phase === "Failed") return "ended";
  const status = pod.status?.containerStatuses?.find((c) => c.name === container);
  if (phase === "Running" && status?.state?.running) return "running";
  if (status?.state?.terminated) return "ended";
  return "starting";
}

/**
 * Why a Pod's processes ended, in the contract's kill reasons, from what the kubelet reported:
 *
 * - a container terminated with reason `OOMKilled` → `oom` (the memory limit is the shell's);
 * - the Pod failed with reason `DeadlineExceeded` (its `activeDeadlineSeconds` passed) → `wall_clock`;
 * - the Pod was `Evicted` for ephemeral storage (its message names it) → `disk`;
 * - the Pod is being deleted → `stopped` (the caller knows better when it deleted it itself);
 * - anything else (exit codes, `Error`, `Completed`): no kill reason — an exit status is a result,
 *   not a kill, and `undefined` lets the caller say what it knows.
 */
export function killReasonOf(pod: V1Pod): KillReason | undefined {
  const statuses = [
    ...(pod.status?.containerStatuses ?? []),
    ...(pod.status?.initContainerStatuses ?? []),
  ];
  const terminated = statuses
    .map((s) => s.state?.terminated ?? s.lastState?.terminated)
    .filter((t): t is V1ContainerStateTerminated => t !== undefined);
  if (terminated.some((t) => t.reason === "OOMKilled")) return "oom";
  const reason = pod.status?.reason;
  if (reason === "DeadlineExceeded") return "wall_clock";
  if (reason === "Evicted") {
    const message = pod.status?.message ?? "";
    if (/ephemeral|disk|storage/i.test(message)) return "disk";
    if (/memory/i.test(message)) return "oom";
    return "stopped";
  }
  if (pod.metadata?.deletionTimestamp) return "stopped";
  return undefined;
}

/** Waiting reasons that no amount of waiting fixes. */
const FATAL_WAITING =
  /^(InvalidImageName|CreateContainerConfigError|CreateContainerError|RunContainerError)$/;
/** Waiting reasons that may pass (a registry that answers later) but are worth reporting. */
const SLOW_WAITING = /^(ErrImagePull|ImagePullBackOff)$/;

/**
 * Why a Pod does not run yet, in words, and whether waiting could still help (an image pull that
 * backs off may succeed; an invalid image name or a failed Pod never will). Null: nothing wrong seen.
 */
export function podProblemOf(pod: V1Pod): { message: string; fatal: boolean } | null {
  for (const status of [
    ...(pod.status?.initContainerStatuses ?? []),
    ...(pod.status?.containerStatuses ?? []),
  ]) {
    const waiting = status.state?.waiting;
    const reason = waiting?.reason ?? "";
    if (FATAL_WAITING.test(reason) || SLOW_WAITING.test(reason))
      return {
        message: `container ${status.name}: ${reason}${waiting?.message ? ` (${waiting.message})` : ""}`,
        fatal: FATAL_WAITING.test(reason),
      };
    const terminated = status.state?.terminated;
    if (terminated && status.name === "prepare" && terminated.exitCode !== 0)
      return {
        message: `preparing the shell's volume failed (exit ${terminated.exitCode})`,
        fatal: true,
      };
  }
  if (pod.status?.phase === "Failed" || pod.status?.phase === "Succeeded")
    return {
      message: `the Pod ended${pod.status.reason ? `: ${pod.status.reason}` : ""}${pod.status.message ? ` (${pod.status.message})` : ""}`,
      fatal: true,
    };
  const unschedulable = pod.status?.conditions?.find(
    (c) => c.type === "PodScheduled" && c.status === "False" && c.reason === "Unschedulable",
  );
  if (unschedulable)
    return {
      message: `the Pod cannot be scheduled: ${unschedulable.message ?? "no node fits"}`,
      fatal: false,
    };
  return null;
}

/** The image a running shell container really runs (digest), else the image it was given. */
export function imageVersionOf(pod: V1Pod): string | null {
  const shell = pod.status?.containerStatuses?.find((c) => c.name === "shell");
  return shell?.imageID || pod.spec?.containers.find((c) => c.name === "shell")?.image || null;
}
