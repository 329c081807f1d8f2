/**
 * Validation of Kubernetes objects against the Kubernetes OpenAPI schemas, as compiled by
 * `kubernetes-models` 4.5 (the Kubernetes 1.33 API: see `KUBERNETES_SCHEMA_VERSION`).
 *
 * The schemas check types, formats (quantities, ports), enums and required fields, but allow
 * properties they do not name (the API server would drop them, or refuse them with
 * `fieldValidation=Strict`). A misspelt security field (`runAsNonroot`) would pass unseen, so this
 * also fails on every property the schema's validator never looked at: it validates through a
 * proxy that records which properties the compiled validator reads, and any property of the
 * object it did not read is unknown to the schema.
 */

/** The Kubernetes release whose OpenAPI schemas `kubernetes-models` 4.5 carries. */
export const KUBERNETES_SCHEMA_VERSION = "1.33";

/** A Kubernetes object: what every manifest has. */
export interface KubernetesObject {
  apiVersion: string;
  kind: string;
  metadata?: { name?: string; namespace?: string };
  [key: string]: unknown;
}

type ModelClass = { prototype: { validate(this: unknown): void } };

/** The `kubernetes-models` module of an apiVersion and kind (`apps/v1` `Deployment`). */
function modulePathOf(apiVersion: string, kind: string): string {
  return `kubernetes-models/${apiVersion}/${kind}`;
}

async function modelOf(apiVersion: string, kind: string): Promise<ModelClass> {
  let module: Record<string, unknown>;
  try {
    module = (await import(modulePathOf(apiVersion, kind))) as Record<string, unknown>;
  } catch {
    throw new Error(
      `no schema for ${apiVersion} ${kind} in the Kubernetes ${KUBERNETES_SCHEMA_VERSION} API`,
    );
  }
  const model = module[kind] as ModelClass | undefined;
  if (!model) throw new Error(`no model ${kind} in ${modulePathOf(apiVersion, kind)}`);
  return model;
}

interface Seen {
  path: string;
  object: object;
  read: Set<string>;
}

/** A proxy of `object` (and, lazily, of everything under it) recording the properties read. */
function recording(object: object, path: string, seen: Seen[]): object {
  const read = new Set<string>();
  seen.push({ path, object, read });
  const children = new Map<string, object>();
  return new Proxy(object, {
    get(target, key, receiver) {
      const value = Reflect.get(target, key, receiver) as unknown;
      if (typeof key !== "string") return value;
      read.add(key);
      if (value === null || typeof value !== "object") return value;
      let child = children.get(key);
      if (!child) children.set(key, (child = recording(value, `${path}/${key}`, seen)));
      return child;
    },
    // Maps (labels, resource lists) are walked key by key: every key counts as read.
    ownKeys(target) {
      const keys = Reflect.ownKeys(target);
      for (const key of keys) if (typeof key === "string") read.add(key);
      return keys;
    },
  });
}

/** Problems of one object: schema violations and properties the schema does not know. */
export async function problemsOf(object: KubernetesObject): Promise<string[]> {
  if (typeof object.apiVersion !== "string" || typeof object.kind !== "string")
    return ["the object has no apiVersion or kind"];
  const model = await modelOf(object.apiVersion, object.kind);
  const seen: Seen[] = [];
  const problems: string[] = [];
  const copy = JSON.parse(JSON.stringify(object)) as object;
  try {
    model.prototype.validate.call(recording(copy, "", seen));
  } catch (error) {
    problems.push((error as Error).message);
  }
  for (const { path, object: inner, read } of seen) {
    if (Array.isArray(inner)) continue;
    for (const key of Object.keys(inner))
      if (!read.has(key)) problems.push(`${path}/${key} is not a field of the schema`);
  }
  return problems;
}

/** Throws with every problem of an object, named by its kind and name. */
export async function assertValidObject(object: KubernetesObject): Promise<void> {
  const problems = await problemsOf(object);
  if (problems.length > 0)
    throw new Error(
      `${object.kind} ${object.metadata?.name ?? "(unnamed)"} does not match the Kubernetes ${KUBERNETES_SCHEMA_VERSION} schema:\n  ${problems.join("\n  ")}`,
    );
}
