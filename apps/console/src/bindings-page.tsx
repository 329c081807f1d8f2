import type { Binding, BindingMethod } from "@l1fe/shells";
import { BINDING_NAME_PATTERN, BindingCreate, BindingRotate } from "@shells/contract";
import { useRef, useState, type RefObject } from "react";
import {
  Field,
  FormDialog,
  FormIssues,
  TypedConfirmDialog,
  issuesOf,
  parseForm,
} from "./form-dialog.js";
import { canControl, isAdmin, type Session } from "./session.js";
import { usePoll } from "./use-poll.js";
import { Button, ErrorNote, Notice, Panel, Table, Tag, fieldClass, when } from "./ui.js";

const METHODS: BindingMethod[] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];

/**
 * Service bindings: every member sees names, upstreams and rules; admins create, rotate and delete.
 * A secret is typed into a password field, read once on submit and emptied once the server has it;
 * it is never kept in component or browser storage, and no API answer carries it back.
 */
export function BindingsPage({ session }: { session: Session }) {
  const { client, principal } = session;
  const bindings = usePoll(() => client.bindings.list(), 10_000);
  const manage = isAdmin(principal) && canControl(principal);
  const [creating, setCreating] = useState(false);
  const [rotating, setRotating] = useState<Binding | null>(null);
  const [deleting, setDeleting] = useState<Binding | null>(null);
  const [notice, setNotice] = useState<string | null>(null);
  const done = (text: string) => {
    setNotice(text);
    bindings.refresh();
  };
  return (
    <Panel title="Service bindings">
      <div className="flex items-center justify-between gap-4 px-4 py-3">
        <p className="text-sm text-zinc-500 dark:text-zinc-400">
          Credentials code in a shell can use without seeing them: a shell granted a binding calls{" "}
          <span className="font-mono">$SHELLS_BINDING_&lt;NAME&gt;_URL</span> and the egress proxy
          adds the secret. Secrets are write-only.
        </p>
        {manage && (
          <Button variant="primary" onClick={() => setCreating(true)}>
            + New binding
          </Button>
        )}
      </div>
      <Notice text={notice} />
      <ErrorNote error={bindings.error} />
      <Table
        label="Bindings"
        headers={["Name", "Upstream", "Header", "Paths", "Methods", "Created", "Rotated", ""]}
        empty="No bindings yet."
        rows={bindings.data?.map((binding) => [
          <span className="font-mono text-xs font-medium">{binding.name}</span>,
          <span className="font-mono text-xs break-all">{binding.upstream}</span>,
          <span className="font-mono text-xs">{binding.inject}</span>,
          <div className="flex flex-wrap gap-1">
            {binding.paths.map((path) => (
              <Tag key={path}>{path}</Tag>
            ))}
          </div>,
          <span className="font-mono text-xs">{binding.methods.join(" ")}</span>,
          <span className="text-xs">
            {when(binding.createdAt)}
            <br />
            <span className="text-zinc-500">
              by {binding.createdBy.type}:{binding.createdBy.id}
            </span>
          </span>,
          <span className="text-xs">{when(binding.rotatedAt)}</span>,
          manage ? (
            <div className="flex gap-2">
              <Button aria-label={`Rotate ${binding.name}`} onClick={() => setRotating(binding)}>
                Rotate
              </Button>
              <Button
                variant="ghost"
                aria-label={`Delete ${binding.name}`}
                onClick={() => setDeleting(binding)}
              >
                Delete
              </Button>
            </div>
          ) : null,
        ])}
      />
      {creating && (
        <CreateBindingDialog
          session={session}
          onClose={() => setCreating(false)}
          onCreated={(binding) => {
            setCreating(false);
            done(`Created ${binding.name}; code granted it finds ${binding.envVar}.`);
          }}
        />
      )}
      {rotating && (
        <RotateBindingDialog
          session={session}
          binding={rotating}
          onClose={() => setRotating(null)}
          onRotated={(binding) => {
            setRotating(null);
            done(`Rotated the secret of ${binding.name}.`);
          }}
        />
      )}
      {deleting && (
        <TypedConfirmDialog
          title={`Delete ${deleting.name}`}
          expected={deleting.name}
          inputLabel="Type the binding name to confirm"
          confirmLabel="Delete binding"
          onClose={() => setDeleting(null)}
          onConfirm={async () => {
            const removed = await client.bindings.remove(deleting.name);
            setDeleting(null);
            done(`Deleted ${removed.name}; shells granted it are refused from now on.`);
          }}
        >
          The binding and its secret are destroyed; shells granted it are refused from then on. Type
          the binding&apos;s name to confirm.
        </TypedConfirmDialog>
      )}
    </Panel>
  );
}

/**
 * A password field for a secret, uncontrolled on purpose: a controlled input would copy what is
 * typed into its `value` attribute (and so into the page's HTML) and into component state. The
 * form reads it once on submit and empties it when the server has taken it.
 */
function SecretField({
  id,
  inputRef,
  onFilled,
}: {
  id: string;
  inputRef: RefObject<HTMLInputElement | null>;
  onFilled?: (filled: boolean) => void;
}) {
  return (
    <input
      id={id}
      ref={inputRef}
      type="password"
      autoComplete="new-password"
      spellCheck={false}
      onInput={(event) => onFilled?.(event.currentTarget.value !== "")}
      className={`${fieldClass} w-full font-mono`}
    />
  );
}

function CreateBindingDialog({
  session,
  onClose,
  onCreated,
}: {
  session: Session;
  onClose: () => void;
  onCreated: (binding: Binding) => void;
}) {
  const [name, setName] = useState("");
  const [upstream, setUpstream] = useState("https://");
  const [inject, setInject] = useState("Authorization: Bearer {secret}");
  const [paths, setPaths] = useState("/**");
  const [methods, setMethods] = useState<BindingMethod[]>(["GET"]);
  const secretRef = useRef<HTMLInputElement>(null);

  const submit = async () => {
    const body = {
      name: name.trim(),
      upstream: upstream.trim(),
      inject: inject.trim(),
      paths: paths.split(/[\s,]+/).filter(Boolean),
      methods,
      secret: secretRef.current?.value ?? "",
    };
    const parsed = BindingCreate.safeParse(body);
    const found = parsed.success ? [] : issuesOf(parsed.error);
    if (!BINDING_NAME_PATTERN.test(body.name))
      found.unshift("name: lowercase letters, digits and _, starting with a letter");
    if (found.length > 0) throw new FormIssues(found);
    const binding = await session.client.bindings.create(body);
    if (secretRef.current) secretRef.current.value = "";
    onCreated(binding);
  };

  return (
    <FormDialog
      title="New binding"
      onClose={onClose}
      onSubmit={submit}
      submitLabel="Create binding"
      busyLabel="Creating…"
    >
      <Field label="Name">
        <input
          value={name}
          onChange={(event) => setName(event.target.value)}
          placeholder="payments_api"
          autoComplete="off"
          className={`${fieldClass} w-full font-mono`}
        />
      </Field>
      <Field label="Upstream (https)">
        <input
          value={upstream}
          onChange={(event) => setUpstream(event.target.value)}
          autoComplete="off"
          className={`${fieldClass} w-full font-mono`}
        />
      </Field>
      <Field label="Header template">
        <input
          value={inject}
          onChange={(event) => setInject(event.target.value)}
          autoComplete="off"
          className={`${fieldClass} w-full font-mono`}
        />
      </Field>
      <Field label="Allowed paths">
        <input
          value={paths}
          onChange={(event) => setPaths(event.target.value)}
          placeholder="/v1/items/*, /v1/**"
          autoComplete="off"
          className={`${fieldClass} w-full font-mono`}
        />
      </Field>
      <fieldset className="text-sm">
        <legend className="mb-1.5 font-medium">Allowed methods</legend>
        <div className="flex flex-wrap gap-3">
          {METHODS.map((method) => (
            <label key={method} className="flex items-center gap-1.5 font-mono text-xs">
              <input
                type="checkbox"
                checked={methods.includes(method)}
                onChange={(event) =>
                  setMethods((list) =>
                    event.target.checked
                      ? [...list, method]
                      : list.filter((entry) => entry !== method),
                  )
                }
              />
              {method}
            </label>
          ))}
        </div>
      </fieldset>
      <div className="space-y-1.5 text-sm">
        <label htmlFor="binding-secret" className="font-medium">
          Secret
        </label>
        <SecretField id="binding-secret" inputRef={secretRef} />
        <p className="text-xs text-zinc-500 dark:text-zinc-400">
          Sealed at rest and never shown again, here or anywhere.
        </p>
      </div>
    </FormDialog>
  );
}

function RotateBindingDialog({
  session,
  binding,
  onClose,
  onRotated,
}: {
  session: Session;
  binding: Binding;
  onClose: () => void;
  onRotated: (binding: Binding) => void;
}) {
  const secretRef = useRef<HTMLInputElement>(null);
  const [filled, setFilled] = useState(false);
  const submit = async () => {
    const secret = secretRef.current?.value ?? "";
    parseForm(BindingRotate, { secret });
    const rotated = await session.client.bindings.rotate(binding.name, { secret });
    if (secretRef.current) secretRef.current.value = "";
    onRotated(rotated);
  };
  return (
    <FormDialog
      title={`Rotate ${binding.name}`}
      onClose={onClose}
      onSubmit={submit}
      submitLabel="Rotate secret"
      busyLabel="Rotating…"
      canSubmit={filled}
    >
      <p className="text-sm text-zinc-600 dark:text-zinc-300">
        Running shells use the new secret from their next call. The old one is gone.
      </p>
      <div className="space-y-1.5 text-sm">
        <label htmlFor="binding-new-secret" className="font-medium">
          New secret
        </label>
        <SecretField id="binding-new-secret" inputRef={secretRef} onFilled={setFilled} />
      </div>
    </FormDialog>
  );
}
