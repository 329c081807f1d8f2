import Fastify, { type FastifyInstance } from "fastify";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { registerConsoleStatic } from "./console-static.js";

const INDEX = "<!doctype html><title>console</title>";
let dirs: string[] = [];
let app: FastifyInstance | undefined;

function builtConsole(): string {
  const dir = mkdtempSync(join(tmpdir(), "shells-console-"));
  dirs.push(dir);
  mkdirSync(join(dir, "assets"));
  writeFileSync(join(dir, "index.html"), INDEX);
  writeFileSync(join(dir, "assets", "index-abc123.js"), "console.log(1)");
  writeFileSync(join(dir, "assets", "index-abc123.css"), "body{}");
  return dir;
}

async function serve(dir: string): Promise<FastifyInstance> {
  app = Fastify();
  app.setNotFoundHandler(async (_request, reply) => reply.code(404).send({ error: "not found" }));
  app.get("/api/v1/me", async () => ({ me: true }));
  app.get("/healthz", async () => ({ status: "ok" }));
  registerConsoleStatic(app, dir);
  await app.ready();
  return app;
}

afterEach(async () => {
  await app?.close();
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
  dirs = [];
});

describe("the console's static files", () => {
  it("serves index.html at / and for client routes, never cached", async () => {
    const server = await serve(builtConsole());
    for (const url of ["/", "/shells/sh-123", "/activity?x=1"]) {
      const response = await server.inject({
        method: "GET",
        url,
        headers: { accept: "text/html,application/xhtml+xml,*/*;q=0.8" },
      });
      expect(response.statusCode).toBe(200);
      expect(response.headers["content-type"]).toBe("text/html; charset=utf-8");
      expect(response.headers["cache-control"]).toBe("no-cache");
      expect(response.body).toBe(INDEX);
    }
  });

  it("serves hashed assets with their content type and an immutable cache", async () => {
    const server = await serve(builtConsole());
    const js = await server.inject({ method: "GET", url: "/assets/index-abc123.js" });
    expect(js.statusCode).toBe(200);
    expect(js.headers["content-type"]).toBe("text/javascript; charset=utf-8");
    expect(js.headers["cache-control"]).toContain("immutable");
    const css = await server.inject({ method: "GET", url: "/assets/index-abc123.css" });
    expect(css.headers["content-type"]).toBe("text/css; charset=utf-8");
  });

  it("answers 404 for a missing asset instead of the app", async () => {
    const server = await serve(builtConsole());
    const response = await server.inject({ method: "GET", url: "/assets/gone-000.js" });
    expect(response.statusCode).toBe(404);
  });

  it("never shadows the API, auth, MCP or the server's own pages", async () => {
    const server = await serve(builtConsole());
    expect((await server.inject({ method: "GET", url: "/api/v1/me" })).json()).toEqual({
      me: true,
    });
    expect((await server.inject({ method: "GET", url: "/healthz" })).json()).toEqual({
      status: "ok",
    });
    for (const url of [
      "/api/v1/nope",
      "/api",
      "/auth/whatever",
      "/mcp",
      "/docs/x",
      "/readyz",
      "/metrics",
    ]) {
      const response = await server.inject({
        method: "GET",
        url,
        headers: { accept: "text/html" },
      });
      expect(response.statusCode, url).toBe(404);
      expect(response.json(), url).toEqual({ error: "not found" });
    }
  });

  it("answers a request that does not ask for a page with the 404, not the app", async () => {
    const server = await serve(builtConsole());
    for (const accept of [undefined, "application/json", "*/*"]) {
      const response = await server.inject({
        method: "GET",
        url: "/shells/sh-123",
        headers: accept ? { accept } : {},
      });
      expect(response.statusCode, accept).toBe(404);
      expect(response.json(), accept).toEqual({ error: "not found" });
    }
  });

  it("does not serve files outside its directory", async () => {
    const dir = builtConsole();
    writeFileSync(join(dir, "..", "secret.txt"), "secret");
    const server = await serve(dir);
    for (const url of ["/../secret.txt", "/%2e%2e/secret.txt", "/assets/..%2f..%2fsecret.txt"]) {
      const response = await server.inject({ method: "GET", url });
      expect(response.body, url).not.toContain("secret");
    }
    rmSync(join(dir, "..", "secret.txt"), { force: true });
  });

  it("explains how to build the console when it is not built", async () => {
    const server = await serve(join(tmpdir(), "no-such-console-dir"));
    const response = await server.inject({ method: "GET", url: "/" });
    expect(response.statusCode).toBe(200);
    expect(response.body).toContain("npm run build -w @shells/console");
  });
});
