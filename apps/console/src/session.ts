import { ShellsClient, type Principal } from "@l1fe/shells";

/** sessionStorage key of the API token: per tab, gone when the tab closes, never in the URL. */
const TOKEN_KEY = "shells.token";

/** A signed-in console: the SDK client and who it acts as. */
export interface Session {
  client: ShellsClient;
  principal: Principal;
  /** `token`: an API key typed in; `sso`: the OIDC session cookie. */
  kind: "token" | "sso";
}

/** What `GET /auth/config` answers (public, outside the API's route table). */
export interface AuthConfig {
  oidcEnabled: boolean;
  loginUrl: string | null;
  logoutUrl: string | null;
}

export async function fetchAuthConfig(): Promise<AuthConfig> {
  try {
    const response = await fetch("/auth/config", { headers: { accept: "application/json" } });
    if (!response.ok) return { oidcEnabled: false, loginUrl: null, logoutUrl: null };
    return (await response.json()) as AuthConfig;
  } catch {
    return { oidcEnabled: false, loginUrl: null, logoutUrl: null };
  }
}

/** Signs in with an API key: checks it with `GET /api/v1/me`, then keeps it for this tab. */
export async function signInWithToken(token: string): Promise<Session> {
  const client = new ShellsClient({ baseUrl: location.origin, token });
  const principal = await client.whoami();
  sessionStorage.setItem(TOKEN_KEY, token);
  return { client, principal, kind: "token" };
}

/**
 * A client riding the OIDC session cookie. The SDK speaks bearer tokens, so this hands it a `fetch`
 * that drops the placeholder `Authorization` header (the same-origin cookie authenticates instead)
 * and adds the session's CSRF token to every request.
 */
async function ssoSession(): Promise<Session | null> {
  let csrfToken: string | undefined;
  const sessionFetch: typeof fetch = (input, init = {}) => {
    const headers = new Headers(init.headers);
    headers.delete("authorization");
    if (csrfToken !== undefined) headers.set("x-csrf-token", csrfToken);
    return fetch(input, { ...init, headers, credentials: "same-origin" });
  };
  const client = new ShellsClient({
    baseUrl: location.origin,
    token: "session-cookie",
    fetch: sessionFetch,
  });
  try {
    const principal = await client.whoami();
    csrfToken = principal.csrfToken;
    return { client, principal, kind: "sso" };
  } catch {
    return null;
  }
}

/** The session this tab already has: a stored token, else an OIDC cookie when OIDC is on. */
export async function restoreSession(auth: AuthConfig): Promise<Session | null> {
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) {
    try {
      return await signInWithToken(token);
    } catch {
      sessionStorage.removeItem(TOKEN_KEY);
    }
  }
  return auth.oidcEnabled ? ssoSession() : null;
}

/** Forgets the token, or ends the SSO session with the server's logout route (`POST`). */
export function signOut(session: Session, auth: AuthConfig): void {
  sessionStorage.removeItem(TOKEN_KEY);
  if (session.kind === "sso" && auth.logoutUrl) {
    const headers: Record<string, string> = {};
    if (session.principal.csrfToken) headers["x-csrf-token"] = session.principal.csrfToken;
    void fetch(auth.logoutUrl, { method: "POST", headers, credentials: "same-origin" })
      .catch(() => undefined)
      .then(() => location.reload());
  } else {
    location.reload();
  }
}

/** Whether the principal may change shells (a viewer sees no buttons it cannot use). */
export function canControl(principal: Principal): boolean {
  return principal.scopes.includes("shells:instances:control");
}

export function canCreate(principal: Principal): boolean {
  return principal.scopes.includes("shells:instances:create");
}

export function isAdmin(principal: Principal): boolean {
  return principal.role === "admin" || principal.role === "owner";
}
