import {
  isPendingApproval,
  type PendingApproval,
  type Project,
  type ProjectEgress,
} from "@l1fe/shells";
import { ProjectCreate, ProjectEgressUpdate, type EgressRules } from "@shells/contract";
import { useState } from "react";
import { Field, FormDialog, parseForm } from "./form-dialog.js";
import { canControl, isAdmin, type Session } from "./session.js";
import { usePoll } from "./use-poll.js";
import { Button, ErrorNote, Notice, Panel, Table, Tag, fieldClass, when } from "./ui.js";

type RuleList = keyof Required<EgressRules>;

/** The rule lists of a level, in the order the org policy lists them, with what each does. */
const RULE_LISTS: { list: RuleList; label: string; hint: string }[] = [
  { list: "allowHosts", label: "Allow hosts", hint: "Only these hosts (exact or *.suffix)." },
  { list: "denyHosts", label: "Deny hosts", hint: "Never these hosts." },
  {
    list: "allowCidrs",
    label: "Allow CIDRs",
    hint: "Keeps open only those of the org's non-public ranges it names; set and empty closes them all.",
  },
  { list: "denyCidrs", label: "Deny CIDRs", hint: "Never these ranges, even public ones." },
  { list: "allowPorts", label: "Allow ports", hint: "Only these destination ports." },
  { list: "denyPorts", label: "Deny ports", hint: "Never these destination ports." },
];

const isPortList = (list: RuleList) => list === "allowPorts" || list === "denyPorts";

/**
 * The org's projects with their egress rules, which narrow the org's egress policy for every
 * `internet` shell of the project (they can never widen it). Admins create projects and replace a
 * project's rules; everyone else reads them.
 */
export function ProjectsPage({ session }: { session: Session }) {
  const { client } = session;
  const manage = isAdmin(session.principal) && canControl(session.principal);
  const projects = usePoll(async () => {
    const list = await client.projects.list();
    const egress = await Promise.all(
      list.map((project) => client.projects.getEgress(project.name)),
    );
    return list.map((project, index) => ({ project, egress: egress[index] }));
  }, 10_000);
  const [creating, setCreating] = useState(false);
  const [editing, setEditing] = useState<{ project: Project; egress: ProjectEgress } | null>(null);
  const [notice, setNotice] = useState<string | null>(null);

  return (
    <Panel title="Projects">
      <div className="flex items-center justify-between gap-4 px-4 py-3">
        <p className="text-sm text-zinc-500 dark:text-zinc-400">
          A project&apos;s egress rules apply to every <span className="font-mono">internet</span>{" "}
          shell in it, below the org&apos;s policy and above a template&apos;s rules and the
          shell&apos;s own allowlist: they narrow what the org allows and never widen it.
        </p>
        {manage && (
          <Button variant="primary" onClick={() => setCreating(true)}>
            + New project
          </Button>
        )}
      </div>
      <Notice text={notice} />
      <ErrorNote error={projects.error} />
      <Table
        label="Projects"
        headers={["Name", "Egress rules", "Rules changed", "Created", ""]}
        empty="No projects."
        rows={projects.data?.map(({ project, egress }) => [
          <span className="font-mono">{project.name}</span>,
          <RulesSummary rules={egress?.rules ?? {}} />,
          <span className="text-xs">
            {when(egress?.updatedAt ?? null)}
            {egress?.updatedBy && (
              <span className="block text-zinc-500">
                by {egress.updatedBy.type}:{egress.updatedBy.id}
              </span>
            )}
          </span>,
          when(project.createdAt),
          manage && egress ? (
            <Button
              aria-label={`Edit the egress rules of ${project.name}`}
              onClick={() => setEditing({ project, egress })}
            >
              Egress rules…
            </Button>
          ) : null,
        ])}
      />
      {creating && (
        <CreateProjectDialog
          session={session}
          onClose={() => setCreating(false)}
          onCreated={(project) => {
            setCreating(false);
            setNotice(`Created the project ${project.name}.`);
            projects.refresh();
          }}
        />
      )}
      {editing && (
        <EgressRulesDialog
          session={session}
          project={editing.project}
          rules={editing.egress.rules}
          onClose={() => setEditing(null)}
          onSaved={(saved) => {
            setEditing(null);
            setNotice(
              isPendingApproval(saved)
                ? `The change widens the rules of ${editing.project.name}: it waits for an approver (approval ${saved.approval.id}; widens ${saved.approval.context?.diff?.widens.join("; ") ?? "-"}).`
                : `Saved the egress rules of ${saved.project}.`,
            );
            projects.refresh();
          }}
        />
      )}
    </Panel>
  );
}

/** Each list a project sets, or a note that the org's policy alone decides. */
function RulesSummary({ rules }: { rules: EgressRules }) {
  const set = RULE_LISTS.filter(({ list }) => rules[list] !== undefined);
  if (set.length === 0) return <span className="text-zinc-500">the org&apos;s policy alone</span>;
  return (
    <dl className="space-y-0.5 text-xs" data-testid="egress-rules">
      {set.map(({ list, label }) => (
        <div key={list} className="flex flex-wrap items-center gap-1">
          <dt className="text-zinc-500">{label}:</dt>
          <dd className="flex flex-wrap gap-1">
            {(rules[list] ?? []).length === 0 ? (
              <Tag>none</Tag>
            ) : (
              (rules[list] ?? []).map((entry) => <Tag key={String(entry)}>{String(entry)}</Tag>)
            )}
          </dd>
        </div>
      ))}
    </dl>
  );
}

function CreateProjectDialog({
  session,
  onClose,
  onCreated,
}: {
  session: Session;
  onClose: () => void;
  onCreated: (project: Project) => void;
}) {
  const [name, setName] = useState("");
  return (
    <FormDialog
      title="New project"
      onClose={onClose}
      onSubmit={async () =>
        onCreated(
          await session.client.projects.create(parseForm(ProjectCreate, { name: name.trim() })),
        )
      }
      submitLabel="Create project"
      busyLabel="Creating…"
    >
      <Field label="Project name" hint="Lowercase letters, digits and inner dashes.">
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

/**
 * A project's rules, replaced whole. A list is either set at this level (possibly empty, which has
 * a meaning: `allowCidrs` set and empty closes every range the org opened) or left out, saying
 * nothing here; the checkbox tells which.
 */
function EgressRulesDialog({
  session,
  project,
  rules,
  onClose,
  onSaved,
}: {
  session: Session;
  project: Project;
  rules: EgressRules;
  onClose: () => void;
  onSaved: (saved: ProjectEgress | PendingApproval) => void;
}) {
  const [drafts, setDrafts] = useState(
    () =>
      Object.fromEntries(
        RULE_LISTS.map(({ list }) => [
          list,
          { set: rules[list] !== undefined, text: (rules[list] ?? []).join(", ") },
        ]),
      ) as Record<RuleList, { set: boolean; text: string }>,
  );
  const change = (list: RuleList, next: Partial<{ set: boolean; text: string }>) =>
    setDrafts((current) => ({ ...current, [list]: { ...current[list], ...next } }));
  // Under the org's `confirm` gate a widening needs the project's name typed; sent only when given.
  const [confirm, setConfirm] = useState("");
  const submit = async () => {
    const next: Record<string, (string | number)[]> = {};
    for (const { list } of RULE_LISTS) {
      const draft = drafts[list];
      if (!draft.set) continue;
      const entries = draft.text.split(/[\s,]+/).filter((entry) => entry !== "");
      // A port that is not a number stays a string, so the contract names it.
      next[list] = isPortList(list)
        ? entries.map((entry) => (/^\d+$/.test(entry) ? Number(entry) : entry))
        : entries;
    }
    const body = parseForm(ProjectEgressUpdate, { rules: next });
    onSaved(
      await session.client.projects.setEgress(
        project.name,
        body.rules,
        confirm.trim() === "" ? {} : { confirm: confirm.trim() },
      ),
    );
  };
  return (
    <FormDialog
      title={`Egress rules of ${project.name}`}
      onClose={onClose}
      onSubmit={submit}
      submitLabel="Save rules"
      busyLabel="Saving…"
      wide
    >
      <p className="text-sm text-zinc-600 dark:text-zinc-300">
        A list left unset says nothing at the project&apos;s level (the org decides). Entries are
        separated by commas or spaces. Shells keep the new rules from their next connection on.
      </p>
      <div className="grid gap-4 sm:grid-cols-2">
        {RULE_LISTS.map(({ list, label, hint }) => (
          <fieldset key={list} className="space-y-1.5 text-sm">
            <label className="flex items-center gap-2 font-medium">
              <input
                type="checkbox"
                checked={drafts[list].set}
                onChange={(event) => change(list, { set: event.target.checked })}
              />
              {`Set ${label.toLowerCase()}`}
            </label>
            <input
              aria-label={label}
              value={drafts[list].text}
              disabled={!drafts[list].set}
              onChange={(event) => change(list, { text: event.target.value })}
              autoComplete="off"
              className={`${fieldClass} w-full font-mono disabled:opacity-50`}
            />
            <p className="text-xs text-zinc-500 dark:text-zinc-400">{hint}</p>
          </fieldset>
        ))}
      </div>
      <label className="block space-y-1.5 text-sm">
        <span className="font-medium">Confirm a widening</span>
        <input
          aria-label="Confirm a widening"
          value={confirm}
          onChange={(event) => setConfirm(event.target.value)}
          placeholder={project.name}
          autoComplete="off"
          className={`${fieldClass} w-full font-mono`}
        />
        <span className="block text-xs text-zinc-500 dark:text-zinc-400">
          Where the org&apos;s policy asks to confirm changes that widen a project&apos;s egress,
          type the project&apos;s name. Narrowing never needs it.
        </span>
      </label>
    </FormDialog>
  );
}
