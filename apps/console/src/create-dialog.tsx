import type { Language, NetworkMode, RuntimeAvailability, RuntimeClass, Shell } from "@l1fe/shells";
import { ShellCreate } from "@shells/contract";
import { useEffect, useState, type FormEvent, type ReactNode } from "react";
import { AllowlistEditor, egressOf } from "./allowlist-editor.js";
import { Issues, issuesOf } from "./form-dialog.js";
import type { Session } from "./session.js";
import { Button, Dialog, ErrorNote, fieldClass } from "./ui.js";

const LANGUAGES: Language[] = ["bash", "node", "python", "rust", "go"];
const RUNTIMES: { value: RuntimeClass; blurb: string }[] = [
  { value: "wasm", blurb: "Capability-scoped WebAssembly" },
  { value: "container", blurb: "Namespaces, cgroups, overlay" },
  { value: "microvm", blurb: "Hardware-virtualized boundary" },
];
const NETWORKS: { value: NetworkMode; blurb: string }[] = [
  { value: "sealed", blurb: "No egress at all" },
  { value: "internet", blurb: "Through the egress proxy" },
  { value: "localhost", blurb: "Loopback only" },
];

/** One option of a radio group drawn as a card; disabled cards say why. */
function Choice({
  name,
  value,
  checked,
  disabled,
  onChange,
  title,
  detail,
}: {
  name: string;
  value: string;
  checked: boolean;
  disabled?: boolean;
  onChange: () => void;
  title: ReactNode;
  detail?: ReactNode;
}) {
  return (
    <label
      className={`flex cursor-pointer flex-col rounded-lg border px-3 py-2 text-sm transition-colors has-[:focus-visible]:ring-2 has-[:focus-visible]:ring-sky-500 ${
        checked
          ? "border-sky-500 bg-sky-50 dark:border-sky-400 dark:bg-sky-950/40"
          : "border-zinc-200 hover:border-zinc-300 dark:border-zinc-700 dark:hover:border-zinc-600"
      } ${disabled ? "cursor-not-allowed opacity-50" : ""}`}
    >
      <input
        type="radio"
        name={name}
        value={value}
        checked={checked}
        disabled={disabled}
        onChange={onChange}
        className="sr-only"
      />
      <span className="font-medium">{title}</span>
      {detail !== undefined && (
        <span className="text-xs text-zinc-500 dark:text-zinc-400">{detail}</span>
      )}
    </label>
  );
}

/**
 * The create dialog: language preset, isolation class (classes the server cannot run are disabled
 * with the server's reason), network (sealed by default; modes the class does not offer here are
 * disabled) and, for `internet`, an egress allowlist; validated with the contract's schema.
 * It closes on submit; the fleet table shows the shell going from provisioning to running.
 */
export function CreateShellDialog({
  open,
  session,
  onClose,
  onSubmitted,
}: {
  open: boolean;
  session: Session;
  onClose: () => void;
  onSubmitted: (creation: Promise<Shell>, label: string) => void;
}) {
  const { client } = session;
  const [runtimes, setRuntimes] = useState<RuntimeAvailability[] | null>(null);
  const [runtimesError, setRuntimesError] = useState<unknown>(null);
  const [name, setName] = useState("");
  const [language, setLanguage] = useState<Language>("python");
  const [runtime, setRuntime] = useState<RuntimeClass>("container");
  const [network, setNetwork] = useState<NetworkMode>("sealed");
  const [allow, setAllow] = useState<string[]>([]);
  const [issues, setIssues] = useState<string[]>([]);

  useEffect(() => {
    if (!open) return;
    setName("");
    setAllow([]);
    setIssues([]);
    client.runtimes().then(
      (items) => {
        setRuntimes(items);
        setRuntimesError(null);
        // Start on an available class: container when it runs, else the first that does.
        const usable = items.filter((r) => r.available).map((r) => r.runtime);
        setRuntime((current) => (usable.includes(current) ? current : (usable[0] ?? "container")));
      },
      (error: unknown) => setRuntimesError(error),
    );
  }, [open, client]);

  const availability = (value: RuntimeClass) => runtimes?.find((r) => r.runtime === value);
  /** The modes the chosen class offers here (all of them until the server has said). */
  const offered = (value: NetworkMode) => availability(runtime)?.networks?.includes(value) ?? true;
  // A class that does not offer the chosen mode falls back to sealed, which every class runs.
  useEffect(() => {
    if (!offered(network)) setNetwork("sealed");
  });

  const submit = (event: FormEvent) => {
    event.preventDefault();
    // An internet shell with a list is narrowed to it; with none it reaches what the org allows.
    const egress = network === "internet" && allow.length > 0 ? { egress: egressOf(allow) } : {};
    const body = {
      language,
      runtime,
      network,
      ...egress,
      ...(name.trim() ? { name: name.trim() } : {}),
    };
    const parsed = ShellCreate.safeParse(body);
    if (!parsed.success) {
      setIssues(issuesOf(parsed.error));
      return;
    }
    onSubmitted(client.create(body), name.trim() || `${language} shell`);
    onClose();
  };

  return (
    <Dialog open={open} onClose={onClose} title="New shell">
      <form onSubmit={submit} className="space-y-5" aria-label="Create shell">
        <div className="space-y-1.5">
          <label htmlFor="shell-name" className="text-sm font-medium">
            Name <span className="font-normal text-zinc-500">(optional)</span>
          </label>
          <input
            id="shell-name"
            value={name}
            onChange={(event) => setName(event.target.value)}
            placeholder="e.g. data-cleanup"
            autoComplete="off"
            className={`${fieldClass} w-full`}
          />
        </div>
        <fieldset className="space-y-1.5">
          <legend className="mb-1.5 text-sm font-medium">Language</legend>
          <div className="grid grid-cols-5 gap-2">
            {LANGUAGES.map((value) => (
              <Choice
                key={value}
                name="language"
                value={value}
                checked={language === value}
                onChange={() => setLanguage(value)}
                title={<span className="font-mono">{value}</span>}
              />
            ))}
          </div>
        </fieldset>
        <fieldset>
          <legend className="mb-1.5 text-sm font-medium">Isolation class</legend>
          <div className="grid grid-cols-3 gap-2">
            {RUNTIMES.map(({ value, blurb }) => {
              const info = availability(value);
              const unavailable = info !== undefined && !info.available;
              return (
                <Choice
                  key={value}
                  name="runtime"
                  value={value}
                  checked={runtime === value}
                  disabled={unavailable}
                  onChange={() => setRuntime(value)}
                  title={value}
                  detail={
                    unavailable ? (
                      <span title={info.reason ?? undefined}>Unavailable on this server</span>
                    ) : (
                      blurb
                    )
                  }
                />
              );
            })}
          </div>
          {runtimes
            ?.filter((r) => !r.available && r.reason)
            .map((r) => (
              <p key={r.runtime} className="mt-1.5 text-xs text-zinc-500 dark:text-zinc-400">
                <span className="font-mono">{r.runtime}</span>: {r.reason}
              </p>
            ))}
          {runtimesError !== null && <ErrorNote error={runtimesError} />}
        </fieldset>
        <fieldset>
          <legend className="mb-1.5 text-sm font-medium">Network</legend>
          <div className="grid grid-cols-3 gap-2">
            {NETWORKS.map(({ value, blurb }) => (
              <Choice
                key={value}
                name="network"
                value={value}
                checked={network === value}
                disabled={!offered(value)}
                onChange={() => setNetwork(value)}
                title={value}
                detail={offered(value) ? blurb : `Not offered by ${runtime} here`}
              />
            ))}
          </div>
          {network === "internet" && (
            <div className="mt-3 space-y-1.5">
              <p className="text-sm font-medium">Allowed destinations</p>
              <p className="text-xs text-zinc-500 dark:text-zinc-400">
                Host names, <span className="font-mono">*.suffix</span> or CIDRs. Empty: whatever
                the org&apos;s egress policy allows. The org&apos;s policy applies on top either
                way.
              </p>
              <AllowlistEditor value={allow} onChange={setAllow} />
            </div>
          )}
        </fieldset>
        <Issues issues={issues} />
        <div className="flex justify-end gap-2 border-t border-zinc-200 pt-4 dark:border-zinc-800">
          <Button onClick={onClose}>Cancel</Button>
          <Button type="submit" variant="primary">
            Create shell
          </Button>
        </div>
      </form>
    </Dialog>
  );
}
