/**
 * The path to return to after login: only a same-origin absolute path (no scheme, no host, no
 * `//` or backslash tricks that browsers treat as another host); anything else becomes `/`.
 */
export function sameOriginPath(value: unknown): string {
  if (typeof value !== "string" || value.length > 2048 || !value.startsWith("/")) return "/";
  // Backslashes and control characters: browsers normalise them into `//host` or drop them.
  if (value.startsWith("//") || [...value].some((c) => c === "\\" || c <= " " || c === "\u007f"))
    return "/";
  const base = new URL("http://shells.invalid");
  const url = new URL(value, base);
  return url.origin === base.origin ? `${url.pathname}${url.search}${url.hash}` : "/";
}
