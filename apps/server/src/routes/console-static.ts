import type { FastifyInstance, FastifyReply } from "fastify";
import { readFile, stat } from "node:fs/promises";
import { extname, resolve, sep } from "node:path";
import { fileURLToPath } from "node:url";

/**
 * Where the built console is when no directory is configured: `apps/console/dist`, found from this
 * file's place in `apps/server/{src,dist}/routes/`. The server never imports the console package.
 */
export const DEFAULT_CONSOLE_DIR = fileURLToPath(new URL("../../../console/dist", import.meta.url));

/** Paths the API and the server's own pages own: the console never answers them. */
const RESERVED_PREFIXES = [
  "/api",
  "/auth",
  "/mcp",
  "/docs",
  "/openapi.json",
  "/healthz",
  "/readyz",
  "/metrics",
];

const CONTENT_TYPES: Record<string, string> = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".mjs": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".json": "application/json; charset=utf-8",
  ".map": "application/json; charset=utf-8",
  ".svg": "image/svg+xml",
  ".png": "image/png",
  ".ico": "image/x-icon",
  ".woff2": "font/woff2",
  ".txt": "text/plain; charset=utf-8",
};

/** Vite names everything under `assets/` by content hash, so those files never change. */
const IMMUTABLE = "public, max-age=31536000, immutable";

const NOT_BUILT_PAGE = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Shells</title></head>
<body style="font-family: system-ui, sans-serif; max-width: 40rem; margin: 4rem auto; line-height: 1.5">
<h1>The Shells console is not built</h1>
<p>The API is up (<a href="/docs">/docs</a>). To serve the web console here, build it and reload:</p>
<pre style="background:#111;color:#eee;padding:1rem;border-radius:6px">npm run build -w @shells/console</pre>
<p>(<code>npm run build</code> at the repository root builds it too; set <code>SHELLS_CONSOLE_DIR</code>
to serve a console built elsewhere.)</p>
</body></html>`;

function acceptsHtml(accept: string | undefined): boolean {
  return accept !== undefined && /(^|,)\s*text\/html\s*(;|,|$)/i.test(accept);
}

function isReserved(path: string): boolean {
  return RESERVED_PREFIXES.some(
    (prefix) => path === prefix || path.startsWith(`${prefix}/`) || path.startsWith(`${prefix}?`),
  );
}

/**
 * Serves the built web console at `/`: its files with their content types, `index.html` for any
 * other GET a browser navigates to (the console's client-side routes), and a short "how to build it"
 * page when it is not built. Paths the API owns, and requests that do not ask for HTML, fall through
 * to the JSON 404 so the console never shadows them.
 */
export function registerConsoleStatic(app: FastifyInstance, consoleDir: string | undefined): void {
  const root = resolve(consoleDir ?? DEFAULT_CONSOLE_DIR);

  const sendIndex = async (reply: FastifyReply) => {
    let html: Buffer | string;
    try {
      html = await readFile(resolve(root, "index.html"));
    } catch {
      html = NOT_BUILT_PAGE;
    }
    return reply
      .type("text/html; charset=utf-8")
      .header("cache-control", "no-cache")
      .header("x-content-type-options", "nosniff")
      .send(html);
  };

  const handler = async (
    request: { url: string; headers: { accept?: string | undefined } },
    reply: FastifyReply,
  ) => {
    const pathname = request.url.split("?")[0] ?? "/";
    if (isReserved(pathname)) return reply.callNotFound();
    let decoded: string;
    try {
      decoded = decodeURIComponent(pathname);
    } catch {
      return reply.callNotFound();
    }
    // Resolve inside the console directory only: `..` and encoded separators cannot leave it.
    const file = resolve(root, `.${decoded}`);
    if (file.startsWith(root + sep) && !decoded.includes("\0")) {
      const info = await stat(file).catch(() => null);
      if (info?.isFile()) {
        const type = CONTENT_TYPES[extname(file).toLowerCase()] ?? "application/octet-stream";
        const hashed = decoded.startsWith("/assets/");
        return reply
          .type(type)
          .header("cache-control", hashed ? IMMUTABLE : "no-cache")
          .header("x-content-type-options", "nosniff")
          .send(await readFile(file));
      }
    }
    // A missing file with an extension is a 404, not the app: a stale asset must not parse as HTML.
    if (extname(decoded) !== "" && extname(decoded) !== ".html") return reply.callNotFound();
    // The app's client-side routes are pages a browser navigates to (it asks for text/html); a
    // program asking an unknown path for JSON or anything else gets the JSON 404, not a page.
    if (decoded !== "/" && !acceptsHtml(request.headers.accept)) return reply.callNotFound();
    return sendIndex(reply);
  };

  app.get("/", handler);
  app.get("/*", handler);
}
