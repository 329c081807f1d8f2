import type { ShellEgress } from "@l1fe/shells";
import { EgressCidr, EgressHostRule } from "@shells/contract";
import { useState, type KeyboardEvent } from "react";
import { Button, fieldClass } from "./ui.js";

/**
 * Why an allowlist entry is refused, or null: the contract's own rules (a host name, `*.suffix`
 * or a CIDR), so the editor refuses exactly what the server would.
 */
export function allowEntryProblem(entry: string, current: readonly string[]): string | null {
  if (current.includes(entry)) return `${entry} is already on the list`;
  if (EgressHostRule.safeParse(entry).success || EgressCidr.safeParse(entry).success) return null;
  return `${entry} is not a host name, *.suffix or CIDR (e.g. api.example.com, *.example.com, 10.0.0.0/8)`;
}

/**
 * The `egress` body for an allowlist: an `allowlist` naming the entries, or `deny_all` for an
 * empty list (the server refuses an empty `allowlist`).
 */
export function egressOf(allow: readonly string[]): ShellEgress {
  return allow.length > 0
    ? { mode: "allowlist", allow: [...allow] }
    : { mode: "deny_all", allow: [] };
}

/**
 * An editable egress allowlist: one entry typed at a time (Enter or Add), checked as it is added,
 * each entry removable. The org's egress policy still applies on top of whatever it says.
 */
export function AllowlistEditor({
  value,
  onChange,
  disabled = false,
  label = "Egress allowlist",
}: {
  value: readonly string[];
  onChange: (next: string[]) => void;
  disabled?: boolean;
  label?: string;
}) {
  const [draft, setDraft] = useState("");
  const [problem, setProblem] = useState<string | null>(null);
  const add = () => {
    const entry = draft.trim();
    if (!entry) return;
    const refused = allowEntryProblem(entry, value);
    setProblem(refused);
    if (refused) return;
    onChange([...value, entry]);
    setDraft("");
  };
  const onKey = (event: KeyboardEvent<HTMLInputElement>) => {
    if (event.key !== "Enter") return;
    // Enter adds the entry instead of submitting the form around the editor.
    event.preventDefault();
    add();
  };
  return (
    <div className="space-y-2" role="group" aria-label={label}>
      <ul className="flex flex-wrap gap-1.5" aria-label="Allowed destinations">
        {value.map((entry) => (
          <li
            key={entry}
            className="inline-flex items-center gap-1 rounded bg-zinc-100 py-0.5 pr-1 pl-1.5 font-mono text-xs text-zinc-700 dark:bg-zinc-800 dark:text-zinc-300"
          >
            {entry}
            {!disabled && (
              <button
                type="button"
                aria-label={`Remove ${entry}`}
                onClick={() => onChange(value.filter((e) => e !== entry))}
                className="rounded px-1 text-zinc-500 hover:bg-zinc-200 hover:text-zinc-900 dark:hover:bg-zinc-700 dark:hover:text-zinc-100"
              >
                ✕
              </button>
            )}
          </li>
        ))}
        {value.length === 0 && (
          <li className="text-xs text-zinc-500 dark:text-zinc-400">Nothing listed yet.</li>
        )}
      </ul>
      {!disabled && (
        <div className="flex gap-2">
          <input
            aria-label="Allow host or CIDR"
            value={draft}
            onChange={(event) => {
              setDraft(event.target.value);
              setProblem(null);
            }}
            onKeyDown={onKey}
            placeholder="api.example.com, *.example.com, 10.0.0.0/8"
            autoComplete="off"
            className={`${fieldClass} flex-1 font-mono`}
          />
          <Button onClick={add} disabled={!draft.trim()}>
            Add
          </Button>
        </div>
      )}
      {problem && (
        <p role="alert" className="text-xs text-red-600 dark:text-red-400">
          {problem}
        </p>
      )}
    </div>
  );
}
