/**
 * The policy contract of a template, in one place: which definitions are accepted, how a shell or
 * run request is merged onto a version, and which requests loosen a locked field. A request may
 * narrow a locked field (a stronger class, a more closed network, fewer hosts or bindings, smaller
 * resources, a shorter TTL); anything wider is refused with `template_locked` naming the field.
 */
import {
  IMAGE_TOOLCHAINS,
  TEMPLATE_METADATA_DIR,
  canonicalJson,
  type Language,
  type NetworkMode,
  type Resources,
  type RuntimeClass,
  type ShellEgress,
  type TemplateDefinition,
  type TemplateFieldChange,
  type TemplateLock,
} from "@shells/contract";
import { posix } from "node:path";
import { keepsDenies } from "../egress/policy.js";
import { AppError } from "../errors.js";

/** The fields of a shell or run request a template gives defaults for. */
export interface TemplatedFields {
  language?: Language | undefined;
  runtime?: RuntimeClass | undefined;
  network?: NetworkMode | undefined;
  egress?: ShellEgress | undefined;
  resources?: Resources | undefined;
  ttlSeconds?: number | undefined;
  env?: Record<string, string> | undefined;
  bindings?: string[] | undefined;
}

const CLASS_STRENGTH: Record<RuntimeClass, number> = { wasm: 0, container: 1, microvm: 2 };
const NETWORK_REACH: Record<NetworkMode, number> = { sealed: 0, localhost: 1, internet: 2 };

/** A file a template writes into a shell: absolute path, content, mode. */
export interface PlacedFile {
  path: string;
  content: string;
  mode: number;
}

function invalid(message: string, field: string): AppError {
  return new AppError("template_invalid", message, { field });
}

/** The absolute path of a managed file, which must stay inside /workspace. */
function managedPath(path: string): string {
  const absolute = path.startsWith("/") ? path : `/workspace/${path}`;
  const normal = posix.normalize(absolute);
  if (!normal.startsWith("/workspace/") || normal.split("/").includes(".."))
    throw invalid(`Managed file ${path} is not inside /workspace.`, "files");
  if (normal === TEMPLATE_METADATA_DIR || normal.startsWith(`${TEMPLATE_METADATA_DIR}/`))
    throw invalid(
      `Managed file ${path} is under ${TEMPLATE_METADATA_DIR}, which holds the metadata files.`,
      "files",
    );
  return normal;
}

/**
 * Refuses a definition that cannot work as written: a lock on a value it does not set (runtime,
 * network, TTL), a file outside /workspace, the same file twice.
 */
export function checkDefinition(definition: TemplateDefinition): void {
  const locks = new Set(definition.locks ?? []);
  if (locks.has("runtime") && !definition.runtime)
    throw invalid("A template that locks runtime must set runtime.", "runtime");
  if (locks.has("network") && !definition.network && !definition.egress)
    throw invalid("A template that locks network must set network or egress.", "network");
  if (locks.has("ttl") && definition.ttlSeconds === undefined)
    throw invalid("A template that locks ttl must set ttlSeconds.", "ttlSeconds");
  if (locks.has("resources") && !definition.resources)
    throw invalid("A template that locks resources must set resources.", "resources");
  const paths = new Set<string>();
  for (const file of definition.files ?? []) {
    const path = managedPath(file.path);
    if (paths.has(path)) throw invalid(`Managed file ${path} is listed twice.`, "files");
    paths.add(path);
  }
  if (definition.image) checkImageRecipe(definition);
  const names = new Set<string>();
  for (const meta of definition.metadata ?? []) {
    const key = `${meta.kind}/${meta.name}`;
    if (names.has(key)) throw invalid(`Metadata file ${key} is listed twice.`, "metadata");
    names.add(key);
  }
}

/** Kernel filesystems every shell mounts fresh: a file baked there would never be seen. */
const UNBAKEABLE = ["/proc", "/sys", "/dev"];

/**
 * Refuses an image recipe that cannot build as written: a runtime class that runs no custom
 * image, a package named twice, a toolchain the image builder cannot fetch, a file path that is not plain and absolute, or under a kernel
 * filesystem, or named twice. (The package name grammar is the contract's.)
 */
function checkImageRecipe(definition: TemplateDefinition): void {
  const recipe = definition.image!;
  if (definition.runtime && definition.runtime !== "container")
    throw invalid(
      `Custom images run in the container class only; this template asks for ${definition.runtime}.`,
      "image",
    );
  const packages = new Set<string>();
  for (const name of recipe.packages) {
    if (packages.has(name)) throw invalid(`Package ${name} is listed twice.`, "image.packages");
    packages.add(name);
  }
  for (const name of Object.keys(recipe.toolchains ?? {}))
    if (!Object.hasOwn(IMAGE_TOOLCHAINS, name))
      throw invalid(
        `Toolchain ${name} cannot be added on this server: it offers ${Object.entries(
          IMAGE_TOOLCHAINS,
        )
          .map(([offered, { source }]) => `${offered} (from ${source})`)
          .join(", ")}; others come only as the Debian packages of the language presets.`,
        "image.toolchains",
      );
  const paths = new Set<string>();
  for (const file of recipe.files ?? []) {
    if (posix.normalize(file.path) !== file.path || file.path.endsWith("/"))
      throw invalid(`Image file ${file.path} is not a plain absolute path.`, "image.files");
    if (UNBAKEABLE.some((top) => file.path === top || file.path.startsWith(`${top}/`)))
      throw invalid(
        `Image file ${file.path} is under ${UNBAKEABLE.join(", ")}, which every shell mounts fresh.`,
        "image.files",
      );
    if (paths.has(file.path))
      throw invalid(`Image file ${file.path} is listed twice.`, "image.files");
    paths.add(file.path);
  }
}

/** The files a version places in a shell: its managed files, then its metadata files (read-only). */
export function placedFiles(definition: TemplateDefinition): PlacedFile[] {
  return [
    ...(definition.files ?? []).map((file) => ({
      path: managedPath(file.path),
      content: file.content,
      mode: file.readOnly ? 0o444 : (file.mode ?? 0o644),
    })),
    ...(definition.metadata ?? []).map((meta) => ({
      path: `${TEMPLATE_METADATA_DIR}/${meta.kind}s/${meta.name}`,
      content: meta.content,
      mode: 0o444,
    })),
  ];
}

/** Refuses run files that would overwrite a template's managed or metadata file. */
export function refuseManagedOverwrite(
  definition: TemplateDefinition,
  files: readonly { path: string }[],
): void {
  const managed = new Set(placedFiles(definition).map((file) => file.path));
  for (const file of files) {
    const absolute = posix.normalize(
      file.path.startsWith("/") ? file.path : `/workspace/${file.path}`,
    );
    if (managed.has(absolute))
      throw new AppError(
        "template_locked",
        `The template manages ${absolute}; a run may not replace it.`,
        {
          field: "files",
          path: absolute,
        },
      );
  }
}

/** What a network mode and egress allowlist reach: `all`, or the set of allowlist entries. */
function reach(
  network: NetworkMode | undefined,
  egress: ShellEgress | undefined,
): "all" | string[] {
  if (egress) return egress.allow;
  return network === "internet" ? "all" : [];
}

function locked(field: TemplateLock, message: string): AppError {
  return new AppError("template_locked", `The template locks ${field}: ${message}`, { field });
}

/**
 * The request with the version's values as defaults, after refusing any loosening of a locked
 * field. A request that sets `network` or `egress` replaces both (so `sealed` over a template's
 * allowlist is a narrowing, not a contradiction).
 */
export function applyTemplate<T extends TemplatedFields>(
  definition: TemplateDefinition,
  request: T,
): T & { language: Language } {
  const locks = new Set(definition.locks ?? []);
  if (locks.has("runtime") && request.runtime && definition.runtime) {
    if (CLASS_STRENGTH[request.runtime] < CLASS_STRENGTH[definition.runtime])
      throw locked("runtime", `${request.runtime} is weaker than ${definition.runtime}.`);
  }
  const ownsNetwork = request.network !== undefined || request.egress !== undefined;
  const network = ownsNetwork ? request.network : definition.network;
  const egress = ownsNetwork ? request.egress : definition.egress;
  if (locks.has("network") && ownsNetwork) {
    const asked = request.network ?? (request.egress?.allow.length ? "internet" : "sealed");
    const allowed = definition.network ?? (definition.egress?.allow.length ? "internet" : "sealed");
    if (NETWORK_REACH[asked] > NETWORK_REACH[allowed])
      throw locked("network", `${asked} reaches more than ${allowed}.`);
  }
  if (locks.has("egress") && ownsNetwork) {
    const asked = reach(request.network ?? (request.egress ? undefined : "sealed"), request.egress);
    const allowed = reach(definition.network, definition.egress);
    if (allowed !== "all") {
      if (asked === "all")
        throw locked("egress", "the request reaches any host; the template allows only its list.");
      const extra = asked.filter((entry) => !allowed.includes(entry));
      if (extra.length > 0)
        throw locked("egress", `${extra.join(", ")} is not in the template's allowlist.`);
    }
    // What the template denies stays denied for a request that reaches out at all.
    const reachesOut = asked === "all" || asked.length > 0;
    if (
      reachesOut &&
      definition.egress?.deny &&
      !(request.egress && keepsDenies(definition.egress, request.egress))
    )
      throw locked("egress", "the request drops what the template's egress.deny refuses.");
  }
  if (locks.has("bindings") && request.bindings) {
    const extra = request.bindings.filter((name) => !(definition.bindings ?? []).includes(name));
    if (extra.length > 0)
      throw locked("bindings", `${extra.join(", ")} is not among the template's bindings.`);
  }
  if (locks.has("resources") && request.resources && definition.resources) {
    for (const key of ["cpu", "memoryMb", "pids", "diskMb"] as const) {
      const asked = request.resources[key];
      const limit = definition.resources[key];
      if (asked !== undefined && limit !== undefined && asked > limit)
        throw locked("resources", `resources.${key} ${asked} is above the template's ${limit}.`);
    }
  }
  if (locks.has("ttl") && request.ttlSeconds !== undefined && definition.ttlSeconds !== undefined) {
    if (request.ttlSeconds > definition.ttlSeconds)
      throw locked(
        "ttl",
        `ttlSeconds ${request.ttlSeconds} is longer than ${definition.ttlSeconds}.`,
      );
  }
  const runtime = request.runtime ?? definition.runtime;
  const resources =
    definition.resources || request.resources
      ? { ...definition.resources, ...request.resources }
      : undefined;
  const ttlSeconds = request.ttlSeconds ?? definition.ttlSeconds;
  const env = definition.env || request.env ? { ...definition.env, ...request.env } : undefined;
  const bindings = request.bindings ?? definition.bindings;
  return {
    ...request,
    language: request.language ?? definition.language,
    ...(runtime ? { runtime } : {}),
    ...(network ? { network } : {}),
    ...(egress ? { egress } : {}),
    ...(resources ? { resources } : {}),
    ...(ttlSeconds !== undefined ? { ttlSeconds } : {}),
    ...(env ? { env } : {}),
    ...(bindings ? { bindings } : {}),
  };
}

/** A definition as named fields: objects per key, files per path, metadata per kind and name. */
function fieldsOf(definition: TemplateDefinition): Map<string, unknown> {
  const fields = new Map<string, unknown>();
  for (const [key, value] of Object.entries(definition)) {
    if (value === undefined) continue;
    if (key === "files")
      for (const file of definition.files ?? [])
        fields.set(`files[${managedPath(file.path)}]`, file);
    else if (key === "metadata")
      for (const meta of definition.metadata ?? [])
        fields.set(`metadata[${meta.kind}/${meta.name}]`, meta.content);
    else if (key === "image") {
      fields.set("image.packages", [...(definition.image?.packages ?? [])].sort());
      for (const [name, version] of Object.entries(definition.image?.toolchains ?? {}))
        fields.set(`image.toolchains.${name}`, version);
      for (const file of definition.image?.files ?? [])
        fields.set(`image.files[${file.path}]`, file);
    } else if (key === "resources" || key === "env")
      for (const [sub, subValue] of Object.entries(value as Record<string, unknown>))
        fields.set(`${key}.${sub}`, subValue);
    else fields.set(key, value);
  }
  return fields;
}

/** The fields that differ between two definitions, in a stable order. */
export function diffDefinitions(
  from: TemplateDefinition,
  to: TemplateDefinition,
): TemplateFieldChange[] {
  const before = fieldsOf(from);
  const after = fieldsOf(to);
  const names = [...new Set([...before.keys(), ...after.keys()])].sort();
  const changes: TemplateFieldChange[] = [];
  for (const field of names) {
    const a = before.get(field);
    const b = after.get(field);
    if (a === undefined) changes.push({ field, change: "added", from: null, to: b });
    else if (b === undefined) changes.push({ field, change: "removed", from: a, to: null });
    else if (canonicalJson(a) !== canonicalJson(b))
      changes.push({ field, change: "changed", from: a, to: b });
  }
  return changes;
}
