import type {
  Agent,
  ApiKey,
  ApiKeyCreated,
  EntitlementGrant,
  Member,
  Principal,
} from "@l1fe/shells";
import {
  AgentCreate,
  ApiKeyCreate,
  Entitlement,
  MemberCreate,
  ROLE_SCOPES,
  Role,
  Scope,
  roleAtLeast,
} from "@shells/contract";
import { useState, type ReactNode } from "react";
import { Field, FormDialog, parseForm } from "./form-dialog.js";
import { SecretOnceDialog } from "./secret-once-dialog.js";
import { canControl, isAdmin, type Session } from "./session.js";
import { usePoll } from "./use-poll.js";
import {
  Button,
  ErrorNote,
  Notice,
  Panel,
  StatusBadge,
  Table,
  Tag,
  fieldClass,
  when,
} from "./ui.js";

type RoleName = (typeof Role.options)[number];
type ScopeName = (typeof Scope.options)[number];

/** What the caller may change here, decided as the API's route table decides it. */
interface AccessRights {
  /** Members, agents and entitlements: the admin role and the control scope. */
  manageOrg: boolean;
  /** Keys: everyone with the control scope mints and revokes their own; admins any. */
  manageKeys: boolean;
  /** Keys for agents: a person with the admin role (an agent never mints for another). */
  keysForAgents: boolean;
  /** Owners alone add, change or remove owners. */
  touchOwners: boolean;
}

function rightsOf(principal: Principal): AccessRights {
  const manageOrg = isAdmin(principal) && canControl(principal);
  return {
    manageOrg,
    manageKeys: canControl(principal),
    keysForAgents: manageOrg && principal.actor.type === "user",
    touchOwners: manageOrg && principal.role === "owner",
  };
}

type Pending =
  | { kind: "invite" }
  | { kind: "role"; member: Member }
  | { kind: "remove"; member: Member }
  | { kind: "agent" }
  | { kind: "disable-agent"; agent: Agent }
  | { kind: "key" }
  | { kind: "revoke-key"; key: ApiKey };

/**
 * Members, agents with their entitlements, and API keys. Admins invite and remove members, change
 * roles, create and disable agents and grant entitlements; everyone who may control shells mints
 * and revokes their own keys (a new key's token is shown once). Controls the caller cannot use are
 * not drawn; the server refuses them anyway and records every change in the activity history.
 */
export function AccessPage({ session }: { session: Session }) {
  const { client, principal } = session;
  const rights = rightsOf(principal);
  const members = usePoll(() => client.members.list(), 10_000);
  const agents = usePoll(() => client.agents.list(), 10_000);
  const keys = usePoll(() => client.keys.list(), 10_000);
  const grants = usePoll(() => client.entitlements.list(), 10_000);
  const [pending, setPending] = useState<Pending | null>(null);
  const [created, setCreated] = useState<ApiKeyCreated | null>(null);
  const [notice, setNotice] = useState<string | null>(null);
  const [error, setError] = useState<unknown>(null);

  const close = () => setPending(null);
  /** Runs a change, then says what it did and refreshes what it touched. */
  const act = async (change: () => Promise<string>, ...touched: { refresh(): void }[]) => {
    setError(null);
    setNotice(null);
    try {
      setNotice(await change());
    } catch (caught) {
      setError(caught);
    }
    for (const poll of touched) poll.refresh();
  };
  const done = (text: string, ...touched: { refresh(): void }[]) => {
    setPending(null);
    setError(null);
    setNotice(text);
    for (const poll of touched) poll.refresh();
  };

  const nameOf = (ref: { type: "user" | "agent"; id: string }) =>
    (ref.type === "user"
      ? members.data?.find((member) => member.id === ref.id)?.email
      : agents.data?.find((agent) => agent.id === ref.id)?.name) ?? `${ref.type}:${ref.id}`;
  const grantsOf = (agent: Agent) =>
    (grants.data ?? []).filter(
      (grant) => grant.principal.type === "agent" && grant.principal.id === agent.id,
    );

  return (
    <div className="space-y-6">
      <Notice text={notice} />
      <ErrorNote error={error} />
      <Panel title="Members">
        <PanelBar
          text={
            rights.manageOrg
              ? "People of the org and their roles. Removing a member revokes every key they hold."
              : "People of the org and their roles; the org's admins change them."
          }
        >
          {rights.manageOrg && (
            <Button variant="primary" onClick={() => setPending({ kind: "invite" })}>
              + Invite member
            </Button>
          )}
        </PanelBar>
        <ErrorNote error={members.error} />
        <Table
          label="Members"
          headers={["Email", "Role", "Source", "Since", "Status", ""]}
          empty="No members."
          rows={members.data?.map((member) => [
            member.email,
            <Tag>{member.role}</Tag>,
            member.source,
            when(member.createdAt),
            <StatusBadge status={member.disabledAt ? "stopped" : "running"} />,
            rights.manageOrg && (member.role !== "owner" || rights.touchOwners) ? (
              <div className="flex gap-2">
                <Button
                  aria-label={`Change the role of ${member.email}`}
                  onClick={() => setPending({ kind: "role", member })}
                >
                  Role…
                </Button>
                <Button
                  variant="ghost"
                  aria-label={`${member.disabledAt ? "Enable" : "Disable"} ${member.email}`}
                  onClick={() =>
                    void act(async () => {
                      const disabled = member.disabledAt === null;
                      await client.members.update(member.id, { disabled });
                      return `${disabled ? "Disabled" : "Enabled"} ${member.email}.`;
                    }, members)
                  }
                >
                  {member.disabledAt ? "Enable" : "Disable"}
                </Button>
                <Button
                  variant="ghost"
                  aria-label={`Remove ${member.email}`}
                  onClick={() => setPending({ kind: "remove", member })}
                >
                  Remove
                </Button>
              </div>
            ) : null,
          ])}
        />
      </Panel>

      <Panel title="Agents">
        <PanelBar text="Non-human principals. An agent acts only through its keys, and at the agent gate only with the shells.agent.invoke entitlement.">
          {rights.manageOrg && (
            <Button variant="primary" onClick={() => setPending({ kind: "agent" })}>
              + New agent
            </Button>
          )}
        </PanelBar>
        <ErrorNote error={agents.error ?? grants.error} />
        <Table
          label="Agents"
          headers={["Name", "Role", "Entitlements", "Since", "Disabled", ""]}
          empty="No agents."
          rows={agents.data?.map((agent) => [
            agent.name,
            <Tag>{agent.role}</Tag>,
            <Entitlements
              agent={agent}
              grants={grantsOf(agent)}
              manage={rights.manageOrg && agent.disabledAt === null}
              onGrant={(entitlement) =>
                void act(async () => {
                  await client.entitlements.grant({
                    entitlement,
                    principal: { type: "agent", id: agent.id },
                  });
                  return `Granted ${entitlement} to ${agent.name}.`;
                }, grants)
              }
              onRevoke={(grant) =>
                void act(async () => {
                  await client.entitlements.revoke(grant.id);
                  return `Withdrew ${grant.entitlement} from ${agent.name}.`;
                }, grants)
              }
            />,
            when(agent.createdAt),
            when(agent.disabledAt),
            rights.manageOrg && agent.disabledAt === null ? (
              <Button
                variant="ghost"
                aria-label={`Disable ${agent.name}`}
                onClick={() => setPending({ kind: "disable-agent", agent })}
              >
                Disable
              </Button>
            ) : null,
          ])}
        />
      </Panel>

      <Panel title="API keys">
        <PanelBar
          text={
            isAdmin(principal)
              ? "The org's keys. A key's secret is shown once, when it is made; the server keeps only a hash."
              : "Your keys. A key's secret is shown once, when it is made; the server keeps only a hash."
          }
        >
          {rights.manageKeys && (
            <Button variant="primary" onClick={() => setPending({ kind: "key" })}>
              + New key
            </Button>
          )}
        </PanelBar>
        <ErrorNote error={keys.error} />
        <Table
          label="API keys"
          headers={["Name", "Holder", "Scopes", "Created", "Last used", "Expires", "Revoked", ""]}
          empty="No keys."
          rows={keys.data?.map((key) => [
            <span>
              {key.name}
              {key.id === principal.keyId && (
                <span className="ml-2 text-xs text-zinc-500">(this session)</span>
              )}
            </span>,
            <Tag>{nameOf(key.principal)}</Tag>,
            <span className="text-xs">{key.scopes.join(", ")}</span>,
            <span className="text-xs">
              {when(key.createdAt)}
              {key.createdBy && (
                <span className="block text-zinc-500">by {nameOf(key.createdBy)}</span>
              )}
            </span>,
            when(key.lastUsedAt),
            key.expiresAt ? when(key.expiresAt) : "never",
            when(key.revokedAt),
            rights.manageKeys && key.revokedAt === null ? (
              <Button
                variant="ghost"
                aria-label={`Revoke ${key.name}`}
                onClick={() => setPending({ kind: "revoke-key", key })}
              >
                Revoke
              </Button>
            ) : null,
          ])}
        />
      </Panel>

      {pending?.kind === "invite" && (
        <InviteDialog
          session={session}
          roles={assignableRoles(principal, rights)}
          onClose={close}
          onDone={(member) => done(`Added ${member.email} as ${member.role}.`, members)}
        />
      )}
      {pending?.kind === "role" && (
        <RoleDialog
          session={session}
          member={pending.member}
          roles={assignableRoles(principal, rights)}
          onClose={close}
          onDone={(member) => done(`${member.email} is now ${member.role}.`, members)}
        />
      )}
      {pending?.kind === "remove" && (
        <FormDialog
          title={`Remove ${pending.member.email}`}
          onClose={close}
          onSubmit={async () => {
            const removed = await client.members.remove(pending.member.id);
            done(`Removed ${removed.email}; their keys are revoked.`, members, keys);
          }}
          submitLabel="Remove member"
          busyLabel="Removing…"
          danger
        >
          <p className="text-sm text-zinc-600 dark:text-zinc-300">
            <span className="font-mono">{pending.member.email}</span> is disabled, every API key
            they hold is revoked at once, and they leave any approvers list.
          </p>
        </FormDialog>
      )}
      {pending?.kind === "agent" && (
        <AgentDialog
          session={session}
          onClose={close}
          onDone={(agent) => done(`Created the agent ${agent.name}.`, agents)}
        />
      )}
      {pending?.kind === "disable-agent" && (
        <FormDialog
          title={`Disable ${pending.agent.name}`}
          onClose={close}
          onSubmit={async () => {
            const disabled = await client.agents.remove(pending.agent.id);
            done(`Disabled ${disabled.name}.`, agents, keys, grants);
          }}
          submitLabel="Disable agent"
          busyLabel="Disabling…"
          danger
        >
          <p className="text-sm text-zinc-600 dark:text-zinc-300">
            <span className="font-mono">{pending.agent.name}</span> stops acting: its keys are
            revoked and its entitlements withdrawn. This cannot be undone.
          </p>
        </FormDialog>
      )}
      {pending?.kind === "key" && (
        <KeyDialog
          session={session}
          rights={rights}
          agents={(agents.data ?? []).filter((agent) => agent.disabledAt === null)}
          onClose={close}
          onCreated={(minted) => {
            done(`Issued the key ${minted.key.name}.`, keys);
            setCreated(minted);
          }}
        />
      )}
      {pending?.kind === "revoke-key" && (
        <FormDialog
          title={`Revoke ${pending.key.name}`}
          onClose={close}
          onSubmit={async () => {
            const revoked = await client.keys.revoke(pending.key.id);
            done(`Revoked ${revoked.name}.`, keys);
          }}
          submitLabel="Revoke key"
          busyLabel="Revoking…"
          danger
        >
          <p className="text-sm text-zinc-600 dark:text-zinc-300">
            The next request with <span className="font-mono">{pending.key.name}</span> is refused,
            and terminals it opened are closed.
            {pending.key.id === principal.keyId && " This console signed in with it."}
          </p>
        </FormDialog>
      )}
      {created && (
        <SecretOnceDialog
          title="New API key"
          secret={created.token}
          testId="api-key-token"
          onClose={() => setCreated(null)}
        >
          <span className="font-mono">{created.key.name}</span> acts as{" "}
          <span className="font-mono">{nameOf(created.key.principal)}</span> with{" "}
          {created.key.scopes.join(", ")}. Store its token now: it is shown this once and never
          again (the server keeps only a hash).
        </SecretOnceDialog>
      )}
    </div>
  );
}

/** A panel's line of explanation, with its main action at the right. */
function PanelBar({ text, children }: { text: string; children?: ReactNode }) {
  return (
    <div className="flex items-center justify-between gap-4 px-4 py-3">
      <p className="text-sm text-zinc-500 dark:text-zinc-400">{text}</p>
      {children}
    </div>
  );
}

/** The roles the caller may hand out: owners alone make owners. */
function assignableRoles(principal: Principal, rights: AccessRights): RoleName[] {
  return Role.options.filter(
    (role) => (role !== "owner" || rights.touchOwners) && roleAtLeast(principal.role, role),
  );
}

function RoleSelect({
  label,
  value,
  roles,
  onChange,
}: {
  label: string;
  value: RoleName;
  roles: RoleName[];
  onChange: (role: RoleName) => void;
}) {
  return (
    <Field label={label}>
      <select
        value={value}
        onChange={(event) => onChange(event.target.value as RoleName)}
        className={`${fieldClass} w-full`}
      >
        {roles.map((role) => (
          <option key={role}>{role}</option>
        ))}
      </select>
    </Field>
  );
}

function InviteDialog({
  session,
  roles,
  onClose,
  onDone,
}: {
  session: Session;
  roles: RoleName[];
  onClose: () => void;
  onDone: (member: Member) => void;
}) {
  const [email, setEmail] = useState("");
  const [role, setRole] = useState<RoleName>("developer");
  return (
    <FormDialog
      title="Invite a member"
      onClose={onClose}
      onSubmit={async () => {
        const body = parseForm(MemberCreate, { email: email.trim(), role });
        onDone(await session.client.members.create(body));
      }}
      submitLabel="Invite"
      busyLabel="Inviting…"
    >
      <Field
        label="Email"
        hint="They sign in through the identity provider with this email; without one, the host's operator issues their first key (server issue-key --email)."
      >
        <input
          inputMode="email"
          value={email}
          onChange={(event) => setEmail(event.target.value)}
          autoComplete="off"
          autoFocus
          className={`${fieldClass} w-full`}
        />
      </Field>
      <RoleSelect label="Role" value={role} roles={roles} onChange={setRole} />
    </FormDialog>
  );
}

function RoleDialog({
  session,
  member,
  roles,
  onClose,
  onDone,
}: {
  session: Session;
  member: Member;
  roles: RoleName[];
  onClose: () => void;
  onDone: (member: Member) => void;
}) {
  const [role, setRole] = useState<RoleName>(member.role);
  return (
    <FormDialog
      title={`Role of ${member.email}`}
      onClose={onClose}
      onSubmit={async () => onDone(await session.client.members.update(member.id, { role }))}
      submitLabel="Change role"
      busyLabel="Changing…"
      canSubmit={role !== member.role}
    >
      <RoleSelect label="New role" value={role} roles={roles} onChange={setRole} />
      <p className="text-xs text-zinc-500 dark:text-zinc-400">
        Takes effect on their next request: a key&apos;s scopes never exceed its holder&apos;s role.
      </p>
    </FormDialog>
  );
}

function AgentDialog({
  session,
  onClose,
  onDone,
}: {
  session: Session;
  onClose: () => void;
  onDone: (agent: Agent) => void;
}) {
  const [name, setName] = useState("");
  const [role, setRole] = useState<RoleName>("developer");
  const roles = Role.options.filter(
    (option) => option !== "owner" && roleAtLeast(session.principal.role, option),
  );
  return (
    <FormDialog
      title="New agent"
      onClose={onClose}
      onSubmit={async () => {
        const body = parseForm(AgentCreate, { name: name.trim(), role });
        onDone(await session.client.agents.create(body));
      }}
      submitLabel="Create agent"
      busyLabel="Creating…"
    >
      <Field label="Name" hint="Lowercase letters, digits and inner dashes.">
        <input
          value={name}
          onChange={(event) => setName(event.target.value)}
          autoComplete="off"
          autoFocus
          className={`${fieldClass} w-full font-mono`}
        />
      </Field>
      <RoleSelect label="Role" value={role} roles={roles} onChange={setRole} />
    </FormDialog>
  );
}

const DAY_MS = 24 * 60 * 60 * 1000;
/** Expiries offered for a new key, in days; 0 for none. */
const EXPIRY_DAYS = [7, 30, 90, 365, 0] as const;

function KeyDialog({
  session,
  rights,
  agents,
  onClose,
  onCreated,
}: {
  session: Session;
  rights: AccessRights;
  agents: Agent[];
  onClose: () => void;
  onCreated: (created: ApiKeyCreated) => void;
}) {
  const { principal } = session;
  const [name, setName] = useState("");
  const [holder, setHolder] = useState("me");
  const [scopes, setScopes] = useState<ScopeName[]>(["shells:instances:read"]);
  const [expiresInDays, setExpiresInDays] = useState(90);
  const agent = agents.find((candidate) => candidate.id === holder);
  const holderRole = agent?.role ?? principal.role;
  // Nobody mints more than they hold, nor more than the holder's role allows.
  const offered = Scope.options.filter(
    (scope) => principal.scopes.includes(scope) && ROLE_SCOPES[holderRole].includes(scope),
  );
  const chosen = scopes.filter((scope) => offered.includes(scope));
  return (
    <FormDialog
      title="New API key"
      onClose={onClose}
      onSubmit={async () => {
        const body = parseForm(ApiKeyCreate, {
          name: name.trim(),
          scopes: chosen,
          ...(agent ? { principal: { type: "agent", id: agent.id } } : {}),
          ...(expiresInDays > 0
            ? { expiresAt: new Date(Date.now() + expiresInDays * DAY_MS).toISOString() }
            : {}),
        });
        onCreated(await session.client.keys.create(body));
      }}
      submitLabel="Issue key"
      busyLabel="Issuing…"
    >
      <Field label="Key name">
        <input
          value={name}
          onChange={(event) => setName(event.target.value)}
          autoComplete="off"
          autoFocus
          className={`${fieldClass} w-full`}
        />
      </Field>
      {rights.keysForAgents && (
        <Field label="Acts as" hint="A key acts as its holder: yourself, or an agent of the org.">
          <select
            value={holder}
            onChange={(event) => setHolder(event.target.value)}
            className={`${fieldClass} w-full`}
          >
            <option value="me">me ({principal.role})</option>
            {agents.map((candidate) => (
              <option key={candidate.id} value={candidate.id}>
                agent {candidate.name} ({candidate.role})
              </option>
            ))}
          </select>
        </Field>
      )}
      <fieldset className="space-y-1.5 text-sm">
        <legend className="mb-1.5 font-medium">Scopes</legend>
        {offered.map((scope) => (
          <label key={scope} className="flex items-center gap-2 font-mono text-xs">
            <input
              type="checkbox"
              checked={chosen.includes(scope)}
              onChange={(event) =>
                setScopes((list) =>
                  event.target.checked ? [...list, scope] : list.filter((s) => s !== scope),
                )
              }
            />
            {scope}
          </label>
        ))}
      </fieldset>
      <Field label="Expires" hint="An expired key is refused as a revoked one is.">
        <select
          value={expiresInDays}
          onChange={(event) => setExpiresInDays(Number(event.target.value))}
          className={`${fieldClass} w-full`}
        >
          {EXPIRY_DAYS.map((days) => (
            <option key={days} value={days}>
              {days === 0 ? "never (until revoked)" : `in ${days} days`}
            </option>
          ))}
        </select>
      </Field>
    </FormDialog>
  );
}

/** An agent's entitlements as tags, with grant and withdraw for admins. */
function Entitlements({
  agent,
  grants,
  manage,
  onGrant,
  onRevoke,
}: {
  agent: Agent;
  grants: EntitlementGrant[];
  manage: boolean;
  onGrant: (entitlement: EntitlementGrant["entitlement"]) => void;
  onRevoke: (grant: EntitlementGrant) => void;
}) {
  const missing = Entitlement.options.filter(
    (entitlement) => !grants.some((grant) => grant.entitlement === entitlement),
  );
  return (
    <div className="flex flex-wrap items-center gap-1.5">
      {grants.map((grant) => (
        <span key={grant.id} className="inline-flex items-center gap-1">
          <Tag>{grant.entitlement}</Tag>
          {manage && (
            <button
              type="button"
              aria-label={`Withdraw ${grant.entitlement} from ${agent.name}`}
              onClick={() => onRevoke(grant)}
              className="rounded px-1 text-xs text-zinc-500 hover:bg-zinc-100 dark:hover:bg-zinc-800"
            >
              ✕
            </button>
          )}
        </span>
      ))}
      {grants.length === 0 && !manage && <span className="text-zinc-500">—</span>}
      {manage &&
        missing.map((entitlement) => (
          <Button
            key={entitlement}
            variant="ghost"
            aria-label={`Grant ${entitlement} to ${agent.name}`}
            onClick={() => onGrant(entitlement)}
          >
            + {entitlement}
          </Button>
        ))}
    </div>
  );
}
