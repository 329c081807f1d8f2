import { z } from "zod";
import { ErrorBody, ERROR_CODES, ERROR_STATUS } from "./errors.js";
import { ROUTES, type RouteSpec } from "./routes.js";

type JsonSchema = Record<string, unknown>;

function jsonSchema(schema: z.ZodType, io: "input" | "output"): JsonSchema {
  const { $schema: _ignored, ...rest } = z.toJSONSchema(schema, {
    target: "draft-2020-12",
    io,
    unrepresentable: "any",
  }) as JsonSchema;
  return rest;
}

/** `/api/v1/shells/:id` → `/api/v1/shells/{id}` */
export function openApiPath(path: string): string {
  return path.replace(/:([A-Za-z_]+)/g, "{$1}");
}

function parameters(where: "path" | "query", shape: z.ZodObject | undefined): JsonSchema[] {
  if (!shape) return [];
  return Object.entries(shape.shape).map(([name, field]) => {
    const schema = field as z.ZodType;
    return {
      name,
      in: where,
      required: where === "path" || !schema.safeParse(undefined).success,
      schema: jsonSchema(schema, "input"),
      ...(schema.description ? { description: schema.description } : {}),
    };
  });
}

function errorResponses(route: RouteSpec): Record<string, JsonSchema> {
  const statuses = new Set(ERROR_CODES.map((code) => ERROR_STATUS[code]));
  if (route.scope === null) for (const s of [401, 403]) statuses.delete(s);
  const out: Record<string, JsonSchema> = {};
  for (const status of [...statuses].sort()) {
    const codes = ERROR_CODES.filter((c) => ERROR_STATUS[c] === status);
    out[String(status)] = {
      description: `Error: ${codes.join(", ")}`,
      content: { "application/json": { schema: { $ref: "#/components/schemas/Error" } } },
    };
  }
  return out;
}

/** The OpenAPI 3.1 document of the API, generated from the route table. */
export function buildOpenApiDocument(options: { version: string; serverUrl?: string }): JsonSchema {
  const paths: Record<string, Record<string, JsonSchema>> = {};
  for (const [operationId, spec] of Object.entries(ROUTES)) {
    const route: RouteSpec = spec;
    const path = openApiPath(route.path);
    const operation: JsonSchema = {
      operationId,
      summary: route.summary,
      ...(route.description ? { description: route.description } : {}),
      tags: [route.tag],
      parameters: [
        ...parameters("path", route.params),
        ...parameters("query", route.query),
        ...(route.idempotent
          ? [
              {
                name: "Idempotency-Key",
                in: "header",
                required: false,
                description: "A replay with the same key returns the first response.",
                schema: { type: "string", minLength: 1, maxLength: 255 },
              },
            ]
          : []),
      ],
      ...(route.rawBody
        ? {
            requestBody: {
              required: true,
              content: Object.fromEntries(
                route.rawBody.contentTypes.map((type) => [
                  type,
                  {
                    schema: {
                      type: "string",
                      format: "binary",
                      maxLength: route.rawBody?.maxBytes,
                    },
                  },
                ]),
              ),
            },
          }
        : route.body
          ? {
              requestBody: {
                required: !route.bodyOptional,
                content: { "application/json": { schema: jsonSchema(route.body, "input") } },
              },
            }
          : {}),
      responses: {
        [String(route.successStatus)]: {
          description: "Success",
          content: {
            ...(route.rawResponse
              ? { [route.rawResponse]: { schema: { type: "string", format: "binary" } } }
              : { "application/json": { schema: jsonSchema(route.response, "output") } }),
            ...(route.alternateResponse
              ? {
                  [route.alternateResponse.contentType]: {
                    schema: { type: "string" },
                    description: route.alternateResponse.description,
                  },
                }
              : {}),
            ...(route.eventStream
              ? {
                  "text/event-stream": {
                    schema: jsonSchema(route.eventStream, "output"),
                    description: "Each event's data is one frame.",
                  },
                }
              : {}),
          },
        },
        ...errorResponses(route),
      },
      security: route.scope === null ? [] : [{ bearer: [] }],
      ...(route.scope ? { "x-required-scope": route.scope } : {}),
    };
    paths[path] = { ...paths[path], [route.method.toLowerCase()]: operation };
  }
  return {
    openapi: "3.1.0",
    info: {
      title: "Shells API",
      version: options.version,
      description:
        "Sandboxes for untrusted code, governed. Authenticate with `Authorization: Bearer <API key>`.",
    },
    ...(options.serverUrl ? { servers: [{ url: options.serverUrl }] } : {}),
    paths,
    components: {
      schemas: { Error: jsonSchema(ErrorBody, "output") },
      securitySchemes: { bearer: { type: "http", scheme: "bearer", description: "An API key." } },
    },
  };
}
