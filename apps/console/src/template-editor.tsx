import type { Language, NetworkMode, RuntimeClass } from "@l1fe/shells";
import {
  TemplateCreate,
  TemplateLock,
  TemplateVersionCreate,
  type ManagedFile,
  type TemplateDefinition,
  type TemplateMetadataFile,
  type TemplateVersion,
} from "@shells/contract";
import { useState, type ReactNode } from "react";
import { AllowlistEditor, egressOf } from "./allowlist-editor.js";
import { Field, FormDialog, FormIssues, parseForm } from "./form-dialog.js";
import type { Session } from "./session.js";
import { Button, fieldClass } from "./ui.js";

const LANGUAGES: Language[] = ["python", "node", "bash", "rust", "go"];
const RUNTIMES: RuntimeClass[] = ["wasm", "container", "microvm"];
const NETWORKS: NetworkMode[] = ["sealed", "localhost", "internet"];
const METADATA_KINDS: TemplateMetadataFile["kind"][] = ["tool", "skill", "prompt", "mcp"];
const RESOURCE_FIELDS = [
  { key: "cpu", label: "CPU cores" },
  { key: "memoryMb", label: "Memory (MiB)" },
  { key: "pids", label: "Processes" },
  { key: "diskMb", label: "Disk (MiB)" },
] as const;
type ResourceKey = (typeof RESOURCE_FIELDS)[number]["key"];

/** A definition as the form holds it: numbers as typed, env as `KEY=value` lines. */
interface Draft {
  description: string;
  language: Language;
  runtime: RuntimeClass | "";
  network: NetworkMode | "";
  allow: string[];
  resources: Record<ResourceKey, string>;
  ttlSeconds: string;
  env: string;
  bindings: string;
  files: ManagedFile[];
  metadata: TemplateMetadataFile[];
  reviewBeforeRun: boolean;
  locks: TemplateLock[];
}

function draftOf(definition: TemplateDefinition | undefined): Draft {
  const text = (value: number | undefined) => (value === undefined ? "" : String(value));
  return {
    description: definition?.description ?? "",
    language: definition?.language ?? "python",
    runtime: definition?.runtime ?? "",
    network: definition?.network ?? (definition?.egress ? "internet" : ""),
    allow: definition?.egress?.allow ?? [],
    resources: {
      cpu: text(definition?.resources?.cpu),
      memoryMb: text(definition?.resources?.memoryMb),
      pids: text(definition?.resources?.pids),
      diskMb: text(definition?.resources?.diskMb),
    },
    ttlSeconds: text(definition?.ttlSeconds),
    env: Object.entries(definition?.env ?? {})
      .map(([key, value]) => `${key}=${value}`)
      .join("\n"),
    bindings: (definition?.bindings ?? []).join(", "),
    files: definition?.files ?? [],
    metadata: definition?.metadata ?? [],
    reviewBeforeRun: definition?.reviewBeforeRun ?? false,
    locks: definition?.locks ?? [],
  };
}

/** The definition a draft stands for; blank fields are left out (the server's defaults apply). */
function definitionOf(draft: Draft): TemplateDefinition {
  const issues: string[] = [];
  const env: Record<string, string> = {};
  for (const line of draft.env.split("\n")) {
    if (!line.trim()) continue;
    const at = line.indexOf("=");
    if (at <= 0) issues.push(`env: "${line.trim()}" is not KEY=value`);
    else env[line.slice(0, at).trim()] = line.slice(at + 1);
  }
  if (issues.length > 0) throw new FormIssues(issues);
  const resources = Object.fromEntries(
    RESOURCE_FIELDS.filter(({ key }) => draft.resources[key].trim() !== "").map(({ key }) => [
      key,
      Number(draft.resources[key]),
    ]),
  );
  const bindings = draft.bindings.split(/[\s,]+/).filter(Boolean);
  return {
    language: draft.language,
    ...(draft.description.trim() ? { description: draft.description.trim() } : {}),
    ...(draft.runtime ? { runtime: draft.runtime } : {}),
    ...(draft.network ? { network: draft.network } : {}),
    ...(draft.network === "internet" && draft.allow.length > 0
      ? { egress: egressOf(draft.allow) }
      : {}),
    ...(Object.keys(resources).length > 0 ? { resources } : {}),
    ...(draft.ttlSeconds.trim() ? { ttlSeconds: Number(draft.ttlSeconds) } : {}),
    ...(Object.keys(env).length > 0 ? { env } : {}),
    ...(bindings.length > 0 ? { bindings } : {}),
    ...(draft.files.length > 0 ? { files: draft.files } : {}),
    ...(draft.metadata.length > 0 ? { metadata: draft.metadata } : {}),
    ...(draft.reviewBeforeRun ? { reviewBeforeRun: true } : {}),
    ...(draft.locks.length > 0 ? { locks: draft.locks } : {}),
  };
}

/** A row of an editable list (a managed or metadata file) with its remove button. */
function ListItem({
  label,
  onRemove,
  children,
}: {
  label: string;
  onRemove: () => void;
  children: ReactNode;
}) {
  return (
    <li
      role="group"
      aria-label={label}
      className="space-y-2 rounded-md border border-zinc-200 p-3 dark:border-zinc-800"
    >
      <div className="flex items-start gap-2">
        <div className="min-w-0 flex-1 space-y-2">{children}</div>
        <Button variant="ghost" aria-label={`Remove ${label}`} onClick={onRemove}>
          ✕
        </Button>
      </div>
    </li>
  );
}

/**
 * Creates a template (`base` undefined) or publishes its next version, starting from `base`'s
 * definition. Versions never change: a lock is added or lifted by publishing a version with or
 * without it. The body is checked with the contract's schema before it is sent; what only the
 * server can judge (a lock on a field the definition leaves unset) comes back as its error.
 */
export function TemplateEditorDialog({
  session,
  base,
  onClose,
  onSaved,
}: {
  session: Session;
  base?: TemplateVersion;
  onClose: () => void;
  onSaved: (version: TemplateVersion) => void;
}) {
  const { client } = session;
  const [name, setName] = useState("");
  const [project, setProject] = useState("");
  const [draft, setDraft] = useState<Draft>(() => draftOf(base?.definition));
  const edit = (change: Partial<Draft>) => setDraft((current) => ({ ...current, ...change }));
  const setFile = (index: number, change: Partial<ManagedFile>) =>
    edit({ files: draft.files.map((f, i) => (i === index ? { ...f, ...change } : f)) });
  const setMeta = (index: number, change: Partial<TemplateMetadataFile>) =>
    edit({ metadata: draft.metadata.map((m, i) => (i === index ? { ...m, ...change } : m)) });

  const submit = async () => {
    const definition = definitionOf(draft);
    const saved = base
      ? await client.templates.addVersion(
          base.template,
          parseForm(TemplateVersionCreate, { definition }),
        )
      : await client.templates.create(
          parseForm(TemplateCreate, {
            name: name.trim(),
            ...(project.trim() ? { project: project.trim() } : {}),
            definition,
          }),
        );
    onSaved(saved);
  };

  const select = <T extends string>(
    label: string,
    value: T | "",
    options: readonly T[],
    onChange: (value: T | "") => void,
    blank?: string,
  ) => (
    <Field label={label}>
      <select
        aria-label={label}
        value={value}
        onChange={(event) => onChange(event.target.value as T | "")}
        className={`${fieldClass} w-full`}
      >
        {blank !== undefined && <option value="">{blank}</option>}
        {options.map((option) => (
          <option key={option}>{option}</option>
        ))}
      </select>
    </Field>
  );

  return (
    <FormDialog
      title={base ? `New version of ${base.template}` : "New template"}
      onClose={onClose}
      onSubmit={submit}
      submitLabel={base ? `Publish version ${base.version + 1}` : "Create template"}
      busyLabel={base ? "Publishing…" : "Creating…"}
      wide
    >
      {base ? (
        <p className="text-sm text-zinc-600 dark:text-zinc-300">
          Starts from version {base.version}. Published versions never change: shells and runs that
          name <span className="font-mono">{base.template}</span> get the new version, those that
          name <span className="font-mono">{`${base.template}@${base.version}`}</span> keep the old
          one.
        </p>
      ) : (
        <div className="grid gap-4 sm:grid-cols-2">
          <Field label="Template name">
            <input
              value={name}
              onChange={(event) => setName(event.target.value)}
              placeholder="data-cleanup"
              autoComplete="off"
              className={`${fieldClass} w-full font-mono`}
            />
          </Field>
          <Field label="Project (optional)" hint="Left empty: every project of the org may use it.">
            <input
              value={project}
              onChange={(event) => setProject(event.target.value)}
              autoComplete="off"
              className={`${fieldClass} w-full font-mono`}
            />
          </Field>
        </div>
      )}
      <Field label="Description">
        <input
          value={draft.description}
          onChange={(event) => edit({ description: event.target.value })}
          autoComplete="off"
          className={`${fieldClass} w-full`}
        />
      </Field>
      <div className="grid gap-4 sm:grid-cols-3">
        {select("Language", draft.language, LANGUAGES, (language) =>
          edit({ language: language || "python" }),
        )}
        {select(
          "Runtime",
          draft.runtime,
          RUNTIMES,
          (runtime) => edit({ runtime }),
          "server default",
        )}
        {select("Network", draft.network, NETWORKS, (network) => edit({ network }), "org default")}
      </div>
      {draft.network === "internet" && (
        <div className="space-y-1.5 text-sm">
          <p className="font-medium">Allowed destinations</p>
          <AllowlistEditor value={draft.allow} onChange={(allow) => edit({ allow })} />
        </div>
      )}
      <div className="grid gap-4 sm:grid-cols-5">
        {RESOURCE_FIELDS.map(({ key, label }) => (
          <Field key={key} label={label}>
            <input
              inputMode="numeric"
              value={draft.resources[key]}
              onChange={(event) =>
                edit({ resources: { ...draft.resources, [key]: event.target.value } })
              }
              placeholder="default"
              className={`${fieldClass} w-full font-mono`}
            />
          </Field>
        ))}
        <Field label="TTL (seconds)">
          <input
            inputMode="numeric"
            value={draft.ttlSeconds}
            onChange={(event) => edit({ ttlSeconds: event.target.value })}
            placeholder="none"
            className={`${fieldClass} w-full font-mono`}
          />
        </Field>
      </div>
      <div className="grid gap-4 sm:grid-cols-2">
        <Field label="Environment" hint="KEY=value, one a line. Never secrets: members read these.">
          <textarea
            value={draft.env}
            onChange={(event) => edit({ env: event.target.value })}
            rows={3}
            spellCheck={false}
            className={`${fieldClass} w-full font-mono text-xs`}
          />
        </Field>
        <Field label="Bindings" hint="Service binding names the shell may call.">
          <input
            value={draft.bindings}
            onChange={(event) => edit({ bindings: event.target.value })}
            autoComplete="off"
            className={`${fieldClass} w-full font-mono`}
          />
        </Field>
      </div>

      <fieldset className="space-y-2 text-sm">
        <legend className="mb-1.5 font-medium">Managed files</legend>
        <ul className="space-y-2">
          {draft.files.map((file, index) => (
            <ListItem
              key={index}
              label={`managed file ${index + 1}`}
              onRemove={() => edit({ files: draft.files.filter((_, i) => i !== index) })}
            >
              <div className="flex items-center gap-3">
                <input
                  aria-label="File path"
                  value={file.path}
                  onChange={(event) => setFile(index, { path: event.target.value })}
                  placeholder="POLICY.md (under /workspace)"
                  autoComplete="off"
                  className={`${fieldClass} flex-1 font-mono`}
                />
                <label className="flex items-center gap-1.5 text-xs">
                  <input
                    type="checkbox"
                    checked={file.readOnly ?? false}
                    onChange={(event) => setFile(index, { readOnly: event.target.checked })}
                  />
                  read-only
                </label>
              </div>
              <textarea
                aria-label="File content"
                value={file.content}
                onChange={(event) => setFile(index, { content: event.target.value })}
                rows={3}
                spellCheck={false}
                className={`${fieldClass} w-full font-mono text-xs`}
              />
            </ListItem>
          ))}
        </ul>
        <Button
          onClick={() =>
            edit({ files: [...draft.files, { path: "", content: "", readOnly: true }] })
          }
        >
          + Managed file
        </Button>
      </fieldset>

      <fieldset className="space-y-2 text-sm">
        <legend className="mb-1.5 font-medium">
          Metadata files{" "}
          <span className="font-normal text-zinc-500">
            (read-only, at /workspace/.shells/&lt;kind&gt;s/&lt;name&gt;)
          </span>
        </legend>
        <ul className="space-y-2">
          {draft.metadata.map((meta, index) => (
            <ListItem
              key={index}
              label={`metadata file ${index + 1}`}
              onRemove={() => edit({ metadata: draft.metadata.filter((_, i) => i !== index) })}
            >
              <div className="flex gap-2">
                <select
                  aria-label="Kind"
                  value={meta.kind}
                  onChange={(event) =>
                    setMeta(index, { kind: event.target.value as TemplateMetadataFile["kind"] })
                  }
                  className={fieldClass}
                >
                  {METADATA_KINDS.map((kind) => (
                    <option key={kind}>{kind}</option>
                  ))}
                </select>
                <input
                  aria-label="Metadata name"
                  value={meta.name}
                  onChange={(event) => setMeta(index, { name: event.target.value })}
                  placeholder="github.json"
                  autoComplete="off"
                  className={`${fieldClass} flex-1 font-mono`}
                />
              </div>
              <textarea
                aria-label="Metadata content"
                value={meta.content}
                onChange={(event) => setMeta(index, { content: event.target.value })}
                rows={3}
                spellCheck={false}
                className={`${fieldClass} w-full font-mono text-xs`}
              />
            </ListItem>
          ))}
        </ul>
        <Button
          onClick={() =>
            edit({ metadata: [...draft.metadata, { kind: "tool", name: "", content: "" }] })
          }
        >
          + Metadata file
        </Button>
      </fieldset>

      <label className="flex items-center gap-2 text-sm">
        <input
          type="checkbox"
          checked={draft.reviewBeforeRun}
          onChange={(event) => edit({ reviewBeforeRun: event.target.checked })}
        />
        <span>
          <span className="font-medium">Review before run</span>{" "}
          <span className="text-zinc-500">
            — every run of this version waits for one of the org&apos;s approvers
          </span>
        </span>
      </label>
      <fieldset className="text-sm">
        <legend className="mb-1.5 font-medium">
          Locks{" "}
          <span className="font-normal text-zinc-500">
            (a shell or run from this version may narrow these fields, never loosen them)
          </span>
        </legend>
        <div className="flex flex-wrap gap-3">
          {TemplateLock.options.map((lock) => (
            <label key={lock} className="flex items-center gap-1.5 font-mono text-xs">
              <input
                type="checkbox"
                aria-label={`Lock ${lock}`}
                checked={draft.locks.includes(lock)}
                onChange={(event) =>
                  edit({
                    locks: event.target.checked
                      ? [...draft.locks, lock]
                      : draft.locks.filter((entry) => entry !== lock),
                  })
                }
              />
              {lock}
            </label>
          ))}
        </div>
      </fieldset>
    </FormDialog>
  );
}
