import {
  ShellCreate,
  TEMPLATE_METADATA_DIR,
  type Template,
  type TemplateDefinition,
  type TemplateImage,
  type TemplateVersion,
} from "@shells/contract";
import { isPendingApproval, type PendingApproval } from "@l1fe/shells";
import { useState, type ReactNode } from "react";
import { Field, FormDialog, parseForm } from "./form-dialog.js";
import { canControl, canCreate, isAdmin, type Session } from "./session.js";
import { TemplateEditorDialog } from "./template-editor.js";
import { usePoll } from "./use-poll.js";
import {
  Button,
  ErrorNote,
  Notice,
  Panel,
  ProvisioningProgress,
  Table,
  Tag,
  fieldClass,
  when,
} from "./ui.js";

/**
 * Templates: versioned sandbox definitions. Every member reads them and may create a shell from
 * a version; admins create templates and publish versions (a version never changes once made).
 */
export function TemplatesPage({
  session,
  openTemplate,
  onOpenTemplate,
  onOpenShell,
}: {
  session: Session;
  openTemplate: string | null;
  onOpenTemplate: (name: string | null) => void;
  onOpenShell: (shellId: string) => void;
}) {
  const { client, principal } = session;
  const templates = usePoll(() => client.templates.list(), 10_000);
  const manage = isAdmin(principal) && canControl(principal);
  const [creating, setCreating] = useState(false);
  const [notice, setNotice] = useState<string | null>(null);
  return (
    <div className="space-y-6">
      <Panel title="Templates">
        <div className="flex items-center justify-between gap-4 px-4 py-3">
          <p className="text-sm text-zinc-500 dark:text-zinc-400">
            Sandbox definitions shells and runs start from: language, class, network, resources,
            files. Fields a version locks may be narrowed by a shell, never loosened.
          </p>
          {manage && (
            <Button variant="primary" onClick={() => setCreating(true)}>
              + New template
            </Button>
          )}
        </div>
        <Notice text={notice} />
        <ErrorNote error={templates.error} />
        <Table
          label="Templates"
          headers={["Name", "Scope", "Latest", "Updated", "Created by", ""]}
          empty="No templates yet."
          rows={templates.data?.map((template) => [
            <span className="font-mono text-xs font-medium">{template.name}</span>,
            template.project ? <Tag>{`project ${template.project}`}</Tag> : "org-wide",
            <span className="tabular-nums">v{template.latestVersion}</span>,
            <span className="text-xs">{when(template.updatedAt)}</span>,
            <span className="font-mono text-xs">
              {template.createdBy.type}:{template.createdBy.id}
            </span>,
            <Button
              variant="ghost"
              aria-label={`Open ${template.name}`}
              onClick={() => onOpenTemplate(template.name)}
            >
              Open
            </Button>,
          ])}
        />
      </Panel>
      {openTemplate !== null && (
        <TemplateView
          key={openTemplate}
          session={session}
          name={openTemplate}
          template={templates.data?.find((t) => t.name === openTemplate)}
          manage={manage}
          onChanged={templates.refresh}
          onClose={() => onOpenTemplate(null)}
          onOpenShell={onOpenShell}
        />
      )}
      {creating && (
        <TemplateEditorDialog
          session={session}
          onClose={() => setCreating(false)}
          onSaved={(version) => {
            setCreating(false);
            setNotice(`Created ${version.template} with version ${version.version}.`);
            templates.refresh();
            onOpenTemplate(version.template);
          }}
        />
      )}
    </div>
  );
}

/** One template: its versions, the chosen version's definition, what it changed, and actions. */
function TemplateView({
  session,
  name,
  template,
  manage,
  onChanged,
  onClose,
  onOpenShell,
}: {
  session: Session;
  name: string;
  template: Template | undefined;
  manage: boolean;
  onChanged: () => void;
  onClose: () => void;
  onOpenShell: (shellId: string) => void;
}) {
  const { client, principal } = session;
  const versions = usePoll(() => client.templates.versions(name), 10_000, name);
  const [chosen, setChosen] = useState<number | null>(null);
  const [publishing, setPublishing] = useState(false);
  const [launching, setLaunching] = useState(false);
  const [notice, setNotice] = useState<string | null>(null);
  const latest = versions.data?.at(-1);
  const version = versions.data?.find((v) => v.version === chosen) ?? latest;
  const diff = usePoll(
    async () =>
      version && version.version > 1
        ? client.templates.diff(name, version.version - 1, version.version)
        : null,
    60_000,
    `${name}@${version?.version ?? 0}`,
  );

  return (
    <section
      aria-label={`Template ${name}`}
      className="rounded-xl border border-zinc-200 bg-white shadow-xs dark:border-zinc-800 dark:bg-zinc-900"
    >
      <header className="flex flex-wrap items-center justify-between gap-4 border-b border-zinc-200 px-4 py-3 dark:border-zinc-800">
        <div className="flex items-center gap-3">
          <h2 className="font-mono text-sm font-semibold">{name}</h2>
          {template && (
            <span className="text-xs text-zinc-500">
              {template.project ? `project ${template.project}` : "org-wide"}
            </span>
          )}
        </div>
        <div className="flex gap-2">
          {version && canCreate(principal) && (
            <Button variant="primary" onClick={() => setLaunching(true)}>
              Create shell from v{version.version}
            </Button>
          )}
          {version && manage && (
            <Button onClick={() => setPublishing(true)}>New version from v{version.version}</Button>
          )}
          <Button variant="ghost" aria-label="Close template" onClick={onClose}>
            ✕
          </Button>
        </div>
      </header>
      <Notice text={notice} />
      <div className="space-y-4 p-4">
        <ErrorNote error={versions.error} />
        {versions.data === undefined && versions.error === null && (
          <p className="text-sm text-zinc-500">Loading…</p>
        )}
        {versions.data && (
          <div role="tablist" aria-label="Versions" className="flex flex-wrap gap-1">
            {versions.data.map((v) => (
              <button
                key={v.version}
                type="button"
                role="tab"
                aria-selected={v.version === version?.version}
                onClick={() => setChosen(v.version)}
                className={`rounded-md px-2.5 py-1 font-mono text-xs ${
                  v.version === version?.version
                    ? "bg-zinc-900 text-white dark:bg-zinc-100 dark:text-zinc-900"
                    : "text-zinc-600 hover:bg-zinc-100 dark:text-zinc-300 dark:hover:bg-zinc-800"
                }`}
              >
                v{v.version}
              </button>
            ))}
          </div>
        )}
        {version && (
          <div className="grid gap-6 lg:grid-cols-[3fr_2fr]">
            <div className="space-y-4">
              <DefinitionView version={version} />
              {version.definition.image && (
                <ImageView
                  key={`${name}@${version.version}`}
                  session={session}
                  version={version}
                  manage={manage}
                />
              )}
            </div>
            <div className="space-y-2">
              <h3 className="text-sm font-semibold">
                {version.version > 1
                  ? `Changes from v${version.version - 1}`
                  : "First version: no changes to show"}
              </h3>
              <ErrorNote error={diff.error} />
              {diff.data && diff.data.changes.length === 0 && (
                <p className="text-sm text-zinc-500">Nothing changed.</p>
              )}
              {diff.data && diff.data.changes.length > 0 && (
                <ul aria-label="Changes" className="space-y-1.5 text-xs">
                  {diff.data.changes.map((change) => (
                    <li key={change.field} className="font-mono">
                      <span
                        className={
                          change.change === "added"
                            ? "text-emerald-600 dark:text-emerald-400"
                            : change.change === "removed"
                              ? "text-red-600 dark:text-red-400"
                              : "text-amber-600 dark:text-amber-300"
                        }
                      >
                        {change.change}
                      </span>{" "}
                      <span className="font-semibold">{change.field}</span>
                      {change.change !== "added" && (
                        <span className="block truncate text-zinc-500">
                          − {JSON.stringify(change.from)}
                        </span>
                      )}
                      {change.change !== "removed" && (
                        <span className="block truncate text-zinc-500">
                          + {JSON.stringify(change.to)}
                        </span>
                      )}
                    </li>
                  ))}
                </ul>
              )}
            </div>
          </div>
        )}
      </div>
      {publishing && version && (
        <TemplateEditorDialog
          session={session}
          base={version}
          onClose={() => setPublishing(false)}
          onSaved={(saved) => {
            setPublishing(false);
            setNotice(`Published version ${saved.version}.`);
            setChosen(saved.version);
            versions.refresh();
            onChanged();
          }}
        />
      )}
      {launching && version && (
        <CreateFromTemplateDialog
          session={session}
          version={version}
          project={template?.project ?? null}
          onClose={() => setLaunching(false)}
          onCreated={(shellId) => {
            setLaunching(false);
            onOpenShell(shellId);
          }}
        />
      )}
    </section>
  );
}

function Row({ label, children }: { label: string; children: ReactNode }) {
  return (
    <div className="contents">
      <dt className="text-zinc-500 dark:text-zinc-400">{label}</dt>
      <dd className="min-w-0 font-mono text-xs leading-5 break-words">{children}</dd>
    </div>
  );
}

/** A file of a version, its content folded away until opened. */
function FileItem({ path, badge, content }: { path: string; badge: string; content: string }) {
  return (
    <li>
      <details className="rounded-md border border-zinc-200 dark:border-zinc-800">
        <summary className="flex cursor-pointer items-center gap-2 px-3 py-1.5 font-mono text-xs">
          <span className="break-all">{path}</span>
          <Tag>{badge}</Tag>
          <span className="ml-auto text-zinc-500">{content.length} chars</span>
        </summary>
        <pre className="max-h-56 overflow-auto border-t border-zinc-200 p-3 font-mono text-xs whitespace-pre-wrap dark:border-zinc-800">
          {content}
        </pre>
      </details>
    </li>
  );
}

const resourcesText = (resources: TemplateDefinition["resources"]) =>
  resources
    ? [
        resources.cpu !== undefined && `${resources.cpu} CPU`,
        resources.memoryMb !== undefined && `${resources.memoryMb} MiB memory`,
        resources.pids !== undefined && `${resources.pids} processes`,
        resources.diskMb !== undefined && `${resources.diskMb} MiB disk`,
      ]
        .filter(Boolean)
        .join(" · ") || "server defaults"
    : "server defaults";

/** A version's definition as read-only fields, then its managed and metadata files. */
function DefinitionView({ version }: { version: TemplateVersion }) {
  const d = version.definition;
  const env = Object.entries(d.env ?? {});
  return (
    <div className="space-y-4" aria-label={`Definition of v${version.version}`}>
      <dl className="grid grid-cols-[auto_1fr] gap-x-4 gap-y-1.5 text-sm">
        {d.description && <Row label="Description">{d.description}</Row>}
        <Row label="Language">{d.language}</Row>
        <Row label="Runtime">{d.runtime ?? "server default"}</Row>
        <Row label="Network">{d.network ?? (d.egress ? "internet" : "org default")}</Row>
        <Row label="Egress">
          {d.egress
            ? d.egress.mode === "deny_all"
              ? "deny all"
              : d.egress.allow.join(", ")
            : "the org's policy"}
        </Row>
        <Row label="Resources">{resourcesText(d.resources)}</Row>
        <Row label="TTL">{d.ttlSeconds !== undefined ? `${d.ttlSeconds} s` : "none"}</Row>
        <Row label="Env">{env.length ? env.map(([k, v]) => `${k}=${v}`).join(" ") : "—"}</Row>
        <Row label="Bindings">{d.bindings?.length ? d.bindings.join(", ") : "—"}</Row>
        <Row label="Review before run">{d.reviewBeforeRun ? "yes" : "no"}</Row>
        <Row label="Locks">
          {d.locks?.length ? (
            <span className="flex flex-wrap gap-1" data-testid="template-locks">
              {d.locks.map((lock) => (
                <Tag key={lock}>{lock}</Tag>
              ))}
            </span>
          ) : (
            "none"
          )}
        </Row>
        <Row label="SHA-256">
          <span title={version.sha256}>{version.sha256.slice(0, 16)}…</span>
        </Row>
        <Row label="Published">
          {when(version.createdAt)} by {version.createdBy.type}:{version.createdBy.id}
        </Row>
      </dl>
      <div>
        <h3 className="mb-1.5 text-sm font-semibold">Managed files</h3>
        {d.files?.length ? (
          <ul className="space-y-1.5" aria-label="Managed files">
            {d.files.map((file) => (
              <FileItem
                key={file.path}
                path={file.path}
                badge={
                  file.readOnly
                    ? "read-only"
                    : `mode ${(file.mode ?? 0o644).toString(8).padStart(4, "0")}`
                }
                content={file.content}
              />
            ))}
          </ul>
        ) : (
          <p className="text-sm text-zinc-500">None.</p>
        )}
      </div>
      <div>
        <h3 className="mb-1.5 text-sm font-semibold">Metadata files</h3>
        {d.metadata?.length ? (
          <ul className="space-y-1.5" aria-label="Metadata files">
            {d.metadata.map((meta) => (
              <FileItem
                key={`${meta.kind}/${meta.name}`}
                path={`${TEMPLATE_METADATA_DIR}/${meta.kind}s/${meta.name}`}
                badge={meta.kind}
                content={meta.content}
              />
            ))}
          </ul>
        ) : (
          <p className="text-sm text-zinc-500">None.</p>
        )}
      </div>
    </div>
  );
}

/**
 * A version's custom image: its recipe (extra packages, baked files) and where its build stands on
 * the server, with each step of a build under way on a bar; admins can build it ahead of its first
 * shell.
 */
function ImageView({
  session,
  version,
  manage,
}: {
  session: Session;
  version: TemplateVersion;
  manage: boolean;
}) {
  const { client } = session;
  const recipe = version.definition.image!;
  const [live, setLive] = useState<TemplateImage | null>(null);
  const [error, setError] = useState<unknown>(null);
  const polled = usePoll(
    () => client.templates.image(version.template, version.version),
    5_000,
    `${version.template}@${version.version}`,
  );
  const image = live ?? polled.data;
  const build = () => {
    setError(null);
    client.templates
      .buildImage(version.template, version.version, { onProgress: setLive })
      .then((done) => {
        setLive(done);
        polled.refresh();
      })
      .catch((caught: unknown) => setError(caught));
  };
  return (
    <div aria-label="Custom image" className="space-y-2">
      <h3 className="text-sm font-semibold">Custom image</h3>
      <dl className="grid grid-cols-[auto_1fr] gap-x-4 gap-y-1.5 text-sm">
        <Row label="Packages">
          {recipe.packages.length ? recipe.packages.join(" ") : "none beyond the base"}
        </Row>
        <Row label="Image">{image ? <span title={image.imageId}>{image.imageId}</span> : "…"}</Row>
        <Row label="State">
          {image ? (
            <span data-testid="template-image-state">
              {image.state}
              {image.state === "failed" && image.message ? `: ${image.message}` : ""}
            </span>
          ) : (
            "…"
          )}
        </Row>
      </dl>
      {image?.state === "building" && (
        <ProvisioningProgress
          reason={`${image.message ?? "building"}${image.percent === null ? "" : ` (${Math.round(image.percent)}%)`}`}
        />
      )}
      {manage && image && (image.state === "missing" || image.state === "failed") && (
        <Button onClick={build}>Build image</Button>
      )}
      <ErrorNote error={error ?? polled.error} />
      {recipe.files?.length ? (
        <ul className="space-y-1.5" aria-label="Baked files">
          {recipe.files.map((file) => (
            <FileItem
              key={file.path}
              path={file.path}
              badge={`baked, mode ${(file.mode ?? 0o644).toString(8).padStart(4, "0")}`}
              content={file.content}
            />
          ))}
        </ul>
      ) : null}
    </div>
  );
}

/**
 * A shell from one version (`name@version`), in the template's project when it has one. It answers
 * once the shell runs; the fleet's sheet of the new shell opens then.
 */
function CreateFromTemplateDialog({
  session,
  version,
  project,
  onClose,
  onCreated,
}: {
  session: Session;
  version: TemplateVersion;
  project: string | null;
  onClose: () => void;
  onCreated: (shellId: string) => void;
}) {
  const [name, setName] = useState("");
  const [pending, setPending] = useState<PendingApproval | null>(null);
  const ref = `${version.template}@${version.version}`;
  const submit = async () => {
    const body: ShellCreate = parseForm(ShellCreate, {
      template: ref,
      ...(project ? { project } : {}),
      ...(name.trim() ? { name: name.trim() } : {}),
    });
    // A version that asks review of binding grants parks the create for an approver.
    const answer = await session.client.createOrPark(body);
    if (isPendingApproval(answer)) setPending(answer);
    else onCreated(answer.id);
  };
  return (
    <FormDialog
      title={`New shell from ${ref}`}
      onClose={onClose}
      onSubmit={submit}
      submitLabel="Create shell"
      busyLabel="Creating…"
    >
      <p className="text-sm text-zinc-600 dark:text-zinc-300">
        The shell takes every value of <span className="font-mono">{ref}</span> and gets its managed
        and metadata files.
      </p>
      <Field label="Shell name (optional)">
        <input
          value={name}
          onChange={(event) => setName(event.target.value)}
          autoComplete="off"
          autoFocus
          className={`${fieldClass} w-full font-mono`}
        />
      </Field>
      {pending && (
        <p
          role="status"
          className="rounded-lg border border-amber-300 bg-amber-50 px-4 py-3 text-sm text-amber-900 dark:border-amber-700/60 dark:bg-amber-950/40 dark:text-amber-200"
        >
          Waiting for approval {pending.approval.id}: {pending.message} The shell{" "}
          <span className="font-mono">{pending.approval.shellId}</span> is created once an approver
          grants it.
        </p>
      )}
    </FormDialog>
  );
}
