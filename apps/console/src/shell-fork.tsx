import type { Shell, ShellForkResult } from "@l1fe/shells";
import { ShellFork } from "@shells/contract";
import { useState } from "react";
import { Field, FormDialog, parseForm } from "./form-dialog.js";
import type { Session } from "./session.js";
import { Button, ErrorNote, fieldClass } from "./ui.js";

/**
 * Fork: one new shell, named, starting from this shell's filesystem at one instant (the parent is
 * frozen for the capture). Its processes and memory are not copied.
 */
export function ForkDialog({
  session,
  shell,
  onClose,
  onForked,
}: {
  session: Session;
  shell: Shell;
  onClose: () => void;
  onForked: (result: ShellForkResult) => void;
}) {
  const [name, setName] = useState(`${shell.name}-fork`);
  const submit = async () => {
    const body = parseForm(ShellFork, { count: 1, names: [name.trim()] });
    onForked(await session.client.fork(shell.id, body));
  };
  return (
    <FormDialog
      title={`Fork ${shell.name}`}
      onClose={onClose}
      onSubmit={submit}
      submitLabel="Fork shell"
      busyLabel="Forking…"
      canSubmit={name.trim() !== ""}
    >
      <p className="text-sm text-zinc-600 dark:text-zinc-300">
        A new shell with this shell&apos;s language, runtime, network, egress, resources and files
        as they are now. Its processes are not copied: it starts fresh. The new shell is a create of
        its own, under the org&apos;s limits.
      </p>
      <Field label="Name of the new shell">
        <input
          value={name}
          onChange={(event) => setName(event.target.value)}
          autoComplete="off"
          autoFocus
          className={`${fieldClass} w-full font-mono`}
        />
      </Field>
    </FormDialog>
  );
}

/** How the parent's state reached the new shell, in words. */
const FILESYSTEM_WORDS: Record<ShellForkResult["state"]["filesystem"]["method"], string> = {
  layered: "shared copy-on-write layer, nothing copied",
  layered_reflink: "shared copy-on-write layer, reflinked, nothing copied",
  layered_copy_once: "shared copy-on-write layer, copied once",
  reflink: "blocks shared until written",
  copy: "state copied",
};

/** What a fork made (and what it could not), with a way to open the new shell. */
export function ForkOutcome({
  result,
  onOpenShell,
}: {
  result: ShellForkResult;
  onOpenShell: (shellId: string) => void;
}) {
  const { filesystem } = result.state;
  const megabytes = (filesystem.bytesPerShell / (1024 * 1024)).toFixed(1);
  return (
    <div
      role="status"
      aria-label="Fork result"
      className="space-y-2 rounded-lg border border-emerald-300 bg-emerald-50 px-4 py-3 text-sm text-emerald-900 dark:border-emerald-800/60 dark:bg-emerald-950/30 dark:text-emerald-200"
    >
      {result.shells.map((made) => (
        <div key={made.id} className="flex items-center justify-between gap-3">
          <p>
            Forked into <span className="font-mono font-semibold">{made.name}</span> ({made.status}
            ): {FILESYSTEM_WORDS[filesystem.method]}, {megabytes} MiB, parent frozen{" "}
            {filesystem.parentFrozenMs.toFixed(0)} ms.
          </p>
          <Button onClick={() => onOpenShell(made.id)}>Open {made.name}</Button>
        </div>
      ))}
      {result.failed.map((failure) => (
        <ErrorNote
          key={failure.index}
          error={new Error(`${failure.name ?? "shell"}: ${failure.message} (${failure.code})`)}
        />
      ))}
    </div>
  );
}
