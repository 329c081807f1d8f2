/** Renders the API reference page from the OpenAPI document: self-contained HTML, no scripts. */
export function renderDocsPage(doc: Record<string, unknown>): string {
  const esc = (s: unknown) =>
    String(s).replace(
      /[&<>"']/g,
      (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c] ?? c,
    );
  const info = doc.info as { title: string; version: string; description: string };
  const paths = doc.paths as Record<string, Record<string, Record<string, unknown>>>;
  const ops: string[] = [];
  const toc: string[] = [];
  for (const [path, methods] of Object.entries(paths)) {
    for (const [method, op] of Object.entries(methods)) {
      const id = esc(op.operationId);
      toc.push(
        `<li><a href="#${id}"><code class="m ${esc(method)}">${esc(method.toUpperCase())}</code> ${esc(path)}</a></li>`,
      );
      const params =
        (op.parameters as {
          name: string;
          in: string;
          required: boolean;
          schema: unknown;
          description?: string;
        }[]) ?? [];
      const requestContent = (op.requestBody as { content: Record<string, unknown> } | undefined)
        ?.content;
      const body =
        requestContent && Object.keys(requestContent).length > 0 ? requestContent : undefined;
      const responses = op.responses as Record<
        string,
        { description: string; content?: Record<string, unknown> }
      >;
      const ok = Object.entries(responses).find(([status]) => status.startsWith("2"));
      const errors = Object.entries(responses).filter(([status]) => !status.startsWith("2"));
      ops.push(`<section id="${id}">
<h2><code class="m ${esc(method)}">${esc(method.toUpperCase())}</code> <code>${esc(path)}</code></h2>
<p>${esc(op.summary)}</p>${op.description ? `<p>${esc(op.description)}</p>` : ""}
<p class="meta">operationId <code>${id}</code> · ${op["x-required-scope"] ? `scope <code>${esc(op["x-required-scope"])}</code>` : "public"}</p>
${params.length ? `<table><tr><th>parameter</th><th>in</th><th>required</th><th>schema</th></tr>${params.map((p) => `<tr><td><code>${esc(p.name)}</code></td><td>${esc(p.in)}</td><td>${p.required ? "yes" : "no"}</td><td><code>${esc(JSON.stringify(p.schema))}</code></td></tr>`).join("")}</table>` : ""}
${body ? `<details><summary>Request body</summary><pre>${esc(JSON.stringify(body, null, 2))}</pre></details>` : ""}
${ok ? `<details><summary>Response ${esc(ok[0])}</summary><pre>${esc(JSON.stringify(ok[1].content ?? {}, null, 2))}</pre></details>` : ""}
<p class="meta">Errors: ${errors.map(([status, r]) => `<b>${esc(status)}</b> ${esc(r.description.replace(/^Error: /, ""))}`).join(" · ")}</p>
</section>`);
    }
  }
  return `<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>${esc(info.title)} reference</title>
<style>
:root{color-scheme:light dark;--fg:#111;--bg:#fff;--muted:#666;--line:#ddd}
@media (prefers-color-scheme:dark){:root{--fg:#e8e8e8;--bg:#111;--muted:#999;--line:#333}}
body{font:15px/1.5 system-ui,sans-serif;color:var(--fg);background:var(--bg);max-width:960px;margin:2rem auto;padding:0 1rem}
code,pre{font-family:ui-monospace,monospace;font-size:13px}pre{overflow:auto;border:1px solid var(--line);padding:.75rem;border-radius:6px}
section{border-top:1px solid var(--line);padding:1rem 0}.meta{color:var(--muted);font-size:13px}
table{border-collapse:collapse;font-size:13px}td,th{border:1px solid var(--line);padding:.25rem .5rem;text-align:left}
.m{font-weight:700}.get{color:#2a7}.post{color:#27c}.delete{color:#c33}ul{columns:2}a{color:inherit}
</style></head><body>
<h1>${esc(info.title)} <small class="meta">v${esc(info.version)}</small></h1>
<p>${esc(info.description)}</p>
<p>Machine-readable: <a href="/openapi.json">/openapi.json</a> (OpenAPI 3.1). Errors are <code>{"error":{"code","message","details?","requestId"}}</code> with a stable <code>code</code>.</p>
<ul>${toc.join("")}</ul>
${ops.join("\n")}
</body></html>`;
}
