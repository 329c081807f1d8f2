import { useCallback, useEffect, useState, type FormEvent } from "react";
import { BindingsPage } from "./bindings-page.js";
import { FleetPage } from "./fleet-page.js";
import { ProjectsPage } from "./projects-page.js";
import { RunsPage } from "./runs-page.js";
import { TemplatesPage } from "./templates-page.js";
import { UsagePage } from "./usage-page.js";
import { WebhooksPage } from "./webhooks-page.js";
import { AccessPage } from "./access-page.js";
import { ActivityPage, ApprovalsPage, PolicyPage } from "./org-pages.js";
import {
  fetchAuthConfig,
  restoreSession,
  signInWithToken,
  signOut,
  type AuthConfig,
  type Session,
} from "./session.js";
import { useTheme, type ThemeChoice } from "./theme.js";
import { Button, ErrorNote, fieldClass } from "./ui.js";

const PAGES = [
  { path: "/", label: "Fleet" },
  { path: "/runs", label: "Runs" },
  { path: "/activity", label: "Activity" },
  { path: "/approvals", label: "Approvals" },
  { path: "/access", label: "Access" },
  { path: "/policy", label: "Policy" },
  { path: "/projects", label: "Projects" },
  { path: "/templates", label: "Templates" },
  { path: "/bindings", label: "Bindings" },
  { path: "/webhooks", label: "Webhooks" },
  { path: "/usage", label: "Usage" },
] as const;

/** The decoded `<id>` of a detail path `<page>/<id>`, or null when `path` is not one. */
function detailOf(path: string, page: string): string | null {
  const match = new RegExp(`^${page}/([^/]+)$`).exec(path);
  return match?.[1] ? decodeURIComponent(match[1]) : null;
}

/** The path of a page's detail `id`, or of the page itself for null. */
const detailPath = (page: string, id: string | null) =>
  id === null ? page : `${page}/${encodeURIComponent(id)}`;

/** Client-side routes on the History API; the server answers index.html for each. */
function usePath(): [string, (path: string) => void] {
  const [path, setPath] = useState(location.pathname);
  useEffect(() => {
    const onPop = () => setPath(location.pathname);
    window.addEventListener("popstate", onPop);
    return () => window.removeEventListener("popstate", onPop);
  }, []);
  const navigate = useCallback((next: string) => {
    if (next !== location.pathname) history.pushState(null, "", next);
    setPath(next);
  }, []);
  return [path, navigate];
}

export function App() {
  const [theme, setTheme] = useTheme();
  const [auth, setAuth] = useState<AuthConfig | null>(null);
  const [session, setSession] = useState<Session | null | undefined>(undefined);
  useEffect(() => {
    void (async () => {
      const config = await fetchAuthConfig();
      setAuth(config);
      setSession(await restoreSession(config));
    })();
  }, []);

  if (session === undefined || auth === null) {
    return <div className="p-10 text-sm text-zinc-500">Loading…</div>;
  }
  if (session === null) {
    return <SignIn auth={auth} onSignedIn={setSession} theme={theme} setTheme={setTheme} />;
  }
  return <Shell session={session} auth={auth} theme={theme} setTheme={setTheme} />;
}

function ThemeSwitch({
  theme,
  setTheme,
}: {
  theme: ThemeChoice;
  setTheme: (t: ThemeChoice) => void;
}) {
  const options: { value: ThemeChoice; label: string; icon: string }[] = [
    { value: "light", label: "Light", icon: "☀" },
    { value: "dark", label: "Dark", icon: "☾" },
    { value: "system", label: "System", icon: "◐" },
  ];
  return (
    <div
      role="radiogroup"
      aria-label="Theme"
      className="inline-flex rounded-md border border-zinc-200 p-0.5 dark:border-zinc-700"
    >
      {options.map((option) => (
        <button
          key={option.value}
          type="button"
          role="radio"
          aria-checked={theme === option.value}
          aria-label={`${option.label} theme`}
          title={`${option.label} theme`}
          onClick={() => setTheme(option.value)}
          className={`rounded px-2 py-0.5 text-xs whitespace-nowrap ${
            theme === option.value
              ? "bg-zinc-900 text-white dark:bg-zinc-100 dark:text-zinc-900"
              : "text-zinc-500 hover:text-zinc-900 dark:hover:text-zinc-100"
          }`}
        >
          {option.icon} {option.label}
        </button>
      ))}
    </div>
  );
}

function Logo() {
  return (
    <span className="flex items-center gap-2 font-semibold tracking-tight">
      <span className="grid size-6 place-items-center rounded-md bg-zinc-900 font-mono text-xs text-lime-400 dark:bg-zinc-100 dark:text-zinc-900">
        $_
      </span>
      Shells
    </span>
  );
}

function SignIn({
  auth,
  onSignedIn,
  theme,
  setTheme,
}: {
  auth: AuthConfig;
  onSignedIn: (session: Session) => void;
  theme: ThemeChoice;
  setTheme: (t: ThemeChoice) => void;
}) {
  const [token, setToken] = useState("");
  const [error, setError] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);
  const submit = async (event: FormEvent) => {
    event.preventDefault();
    setBusy(true);
    setError(null);
    try {
      onSignedIn(await signInWithToken(token.trim()));
    } catch (caught) {
      setError(caught);
    } finally {
      setBusy(false);
    }
  };
  return (
    <div className="grid min-h-screen place-items-center px-4">
      <div className="absolute top-4 right-4">
        <ThemeSwitch theme={theme} setTheme={setTheme} />
      </div>
      <div className="w-full max-w-sm space-y-6 rounded-xl border border-zinc-200 bg-white p-8 shadow-sm dark:border-zinc-800 dark:bg-zinc-900">
        <div className="space-y-1">
          <Logo />
          <p className="text-sm text-zinc-500 dark:text-zinc-400">Sign in to the console.</p>
        </div>
        {auth.oidcEnabled && auth.loginUrl && (
          <>
            <Button
              variant="primary"
              className="w-full"
              onClick={() =>
                location.assign(
                  `${auth.loginUrl}?returnTo=${encodeURIComponent(location.pathname)}`,
                )
              }
            >
              Sign in with SSO
            </Button>
            <div className="flex items-center gap-3 text-xs text-zinc-400">
              <span className="h-px flex-1 bg-zinc-200 dark:bg-zinc-800" /> or with an API key
              <span className="h-px flex-1 bg-zinc-200 dark:bg-zinc-800" />
            </div>
          </>
        )}
        <form onSubmit={(event) => void submit(event)} className="space-y-3">
          <label htmlFor="token" className="block text-sm font-medium">
            API token
          </label>
          <input
            id="token"
            type="password"
            autoComplete="off"
            value={token}
            onChange={(event) => setToken(event.target.value)}
            placeholder="shk_…"
            className={`${fieldClass} w-full`}
          />
          <p className="text-xs text-zinc-500 dark:text-zinc-400">
            The local profile writes an owner key to{" "}
            <span className="font-mono">&lt;data dir&gt;/admin-token</span>. It is kept in this tab
            only.
          </p>
          <ErrorNote error={error} />
          <Button
            type="submit"
            variant={auth.oidcEnabled ? "secondary" : "primary"}
            className="w-full"
            disabled={!token.trim() || busy}
          >
            {busy ? "Signing in…" : "Sign in"}
          </Button>
        </form>
      </div>
    </div>
  );
}

function Shell({
  session,
  auth,
  theme,
  setTheme,
}: {
  session: Session;
  auth: AuthConfig;
  theme: ThemeChoice;
  setTheme: (t: ThemeChoice) => void;
}) {
  const [path, navigate] = usePath();
  const openShellId = detailOf(path, "/shells");
  const openRunId = detailOf(path, "/runs");
  const openTemplate = detailOf(path, "/templates");
  const openWebhookId = detailOf(path, "/webhooks");
  const page =
    openShellId !== null
      ? "/"
      : openRunId !== null
        ? "/runs"
        : openTemplate !== null
          ? "/templates"
          : openWebhookId !== null
            ? "/webhooks"
            : path;
  const openShell = (id: string | null) => navigate(detailPath("/shells", id));
  const { principal } = session;
  return (
    <div className="min-h-screen">
      <header className="border-b border-zinc-200 bg-white dark:border-zinc-800 dark:bg-zinc-900">
        <div className="mx-auto flex max-w-7xl items-center gap-4 px-6 py-3">
          <Logo />
          <nav className="flex gap-1" aria-label="Main">
            {PAGES.map((item) => (
              <a
                key={item.path}
                href={item.path}
                aria-current={page === item.path ? "page" : undefined}
                onClick={(event) => {
                  event.preventDefault();
                  navigate(item.path);
                }}
                className={`rounded-md px-2.5 py-1.5 text-sm whitespace-nowrap ${
                  page === item.path
                    ? "bg-zinc-100 font-medium text-zinc-900 dark:bg-zinc-800 dark:text-zinc-100"
                    : "text-zinc-500 hover:text-zinc-900 dark:text-zinc-400 dark:hover:text-zinc-100"
                }`}
              >
                {item.label}
              </a>
            ))}
          </nav>
          <div className="ml-auto flex items-center gap-3">
            <ThemeSwitch theme={theme} setTheme={setTheme} />
            <span
              className="hidden max-w-52 truncate text-xs whitespace-nowrap text-zinc-500 2xl:block dark:text-zinc-400"
              title={`${principal.actor.type}:${principal.actor.id} · ${principal.role} · ${principal.orgId}`}
            >
              {principal.actor.type}:{principal.actor.id} ·{" "}
              <span className="font-medium">{principal.role}</span>
            </span>
            <Button
              variant="ghost"
              title={`Signed in as ${principal.actor.type}:${principal.actor.id} (${principal.role})`}
              onClick={() => signOut(session, auth)}
            >
              Sign out
            </Button>
          </div>
        </div>
      </header>
      <main className="mx-auto max-w-7xl px-6 py-6">
        {page === "/" && (
          <FleetPage
            session={session}
            openShellId={openShellId}
            onOpenShell={(id) => (id === null ? navigate("/") : openShell(id))}
          />
        )}
        {page === "/runs" && (
          <RunsPage
            session={session}
            openRunId={openRunId}
            onOpenRun={(id) => navigate(detailPath("/runs", id))}
          />
        )}
        {page === "/activity" && <ActivityPage session={session} />}
        {page === "/approvals" && <ApprovalsPage session={session} />}
        {page === "/access" && <AccessPage session={session} />}
        {page === "/policy" && <PolicyPage session={session} />}
        {page === "/projects" && <ProjectsPage session={session} />}
        {page === "/templates" && (
          <TemplatesPage
            session={session}
            openTemplate={openTemplate}
            onOpenTemplate={(name) => navigate(detailPath("/templates", name))}
            onOpenShell={openShell}
          />
        )}
        {page === "/bindings" && <BindingsPage session={session} />}
        {page === "/webhooks" && (
          <WebhooksPage
            session={session}
            openWebhookId={openWebhookId}
            onOpenWebhook={(id) => navigate(detailPath("/webhooks", id))}
          />
        )}
        {page === "/usage" && <UsagePage session={session} />}
        {!PAGES.some((item) => item.path === page) && (
          <p className="text-sm text-zinc-500">
            No page here.{" "}
            <a className="underline" href="/">
              Back to the fleet
            </a>
          </p>
        )}
      </main>
    </div>
  );
}
