import { bindingEnvName, type Binding, type BindingMethod, type RouteBody } from "@shells/contract";
import type { Kysely, Selectable } from "kysely";
import {
  checkBindingName,
  checkPathGlob,
  checkSecret,
  parseInjectTemplate,
  parseUpstream,
} from "../egress/binding-policy.js";
import type { BindingGrant, BindingTarget } from "../egress/binding-proxy.js";
import { AppError } from "../errors.js";
import type { Caller } from "../iam/principal.js";
import type { SealedBox } from "../iam/sealed-box.js";
import { newId, nowIso } from "../ids.js";
import type { BindingTable, Database } from "../store/schema.js";
import { isUniqueViolation, UNIQUE_CONSTRAINTS } from "../store/unique-violation.js";
import type { ActivityService } from "./activity-service.js";

/** What the binding service needs. */
export interface BindingServiceOptions {
  /** Accept `http://` upstreams (tests and development only). Config `bindingsAllowHttp`. */
  allowHttpUpstream: boolean;
}

function toBinding(row: Selectable<BindingTable>): Binding {
  return {
    id: row.id,
    name: row.name,
    upstream: row.upstream,
    inject: row.inject,
    paths: JSON.parse(row.paths) as string[],
    methods: JSON.parse(row.methods) as BindingMethod[],
    envVar: bindingEnvName(row.name),
    createdBy: { type: row.created_by_type, id: row.created_by_id },
    createdAt: row.created_at,
    rotatedAt: row.rotated_at,
  };
}

/**
 * The org's service bindings: names, upstreams and rules in the clear, each secret only as a
 * sealed box. A secret comes in through `create` and `rotate` and goes out only to the egress
 * proxy (`target`), for one call; nothing here returns or records it. Every query takes the
 * caller's org, so another org's binding is simply not found.
 */
export class BindingService {
  constructor(
    private readonly db: Kysely<Database>,
    private readonly activity: ActivityService,
    private readonly box: SealedBox,
    private readonly options: BindingServiceOptions,
  ) {}

  /** The org's bindings, by name. */
  async list(caller: Caller): Promise<Binding[]> {
    const rows = await this.db
      .selectFrom("bindings")
      .selectAll()
      .where("org_id", "=", caller.orgId)
      .orderBy("name")
      .execute();
    return rows.map(toBinding);
  }

  /** One binding by name. */
  async get(caller: Caller, name: string): Promise<Binding> {
    return toBinding(await this.#find(caller.orgId, name));
  }

  /** Creates a binding after checking every field's form; its secret is stored sealed. */
  async create(caller: Caller, body: RouteBody<"createBinding">): Promise<Binding> {
    checkBindingName(body.name);
    parseUpstream(body.upstream, { allowHttp: this.options.allowHttpUpstream });
    parseInjectTemplate(body.inject);
    for (const glob of body.paths) checkPathGlob(glob);
    checkSecret(body.secret, [body.upstream, body.inject, ...body.paths]);
    const now = nowIso();
    const row: Selectable<BindingTable> = {
      id: newId("bnd", 10),
      org_id: caller.orgId,
      name: body.name,
      upstream: body.upstream,
      inject: body.inject,
      paths: JSON.stringify(body.paths),
      methods: JSON.stringify([...new Set(body.methods)]),
      secret: this.box.seal(body.secret),
      created_by_type: caller.actor.type === "agent" ? "agent" : "user",
      created_by_id: caller.actor.id,
      created_at: now,
      rotated_at: now,
    };
    try {
      await this.db.insertInto("bindings").values(row).execute();
    } catch (error) {
      if (isUniqueViolation(error, UNIQUE_CONSTRAINTS.bindingName))
        throw new AppError("name_taken", `A binding named ${body.name} already exists.`, {
          name: body.name,
        });
      throw error;
    }
    const binding = toBinding(row);
    await this.activity.recordFor(
      caller,
      "binding.create",
      { type: "binding", id: row.id },
      {
        name: binding.name,
        upstream: binding.upstream,
        inject: binding.inject,
        paths: binding.paths,
        methods: binding.methods,
      },
    );
    return binding;
  }

  /** Replaces a binding's secret; shells granted it use the new one from their next call. */
  async rotate(caller: Caller, name: string, body: RouteBody<"rotateBinding">): Promise<Binding> {
    const row = await this.#find(caller.orgId, name);
    checkSecret(body.secret, [row.upstream, row.inject, ...(JSON.parse(row.paths) as string[])]);
    const rotatedAt = nowIso();
    await this.db
      .updateTable("bindings")
      .set({ secret: this.box.seal(body.secret), rotated_at: rotatedAt })
      .where("org_id", "=", caller.orgId)
      .where("id", "=", row.id)
      .execute();
    await this.activity.recordFor(
      caller,
      "binding.rotate",
      { type: "binding", id: row.id },
      {
        name: row.name,
      },
    );
    return toBinding({ ...row, rotated_at: rotatedAt });
  }

  /** Deletes a binding and its sealed secret; shells granted it are refused from then on. */
  async delete(caller: Caller, name: string): Promise<Binding> {
    const row = await this.#find(caller.orgId, name);
    await this.db
      .deleteFrom("bindings")
      .where("org_id", "=", caller.orgId)
      .where("id", "=", row.id)
      .execute();
    await this.activity.recordFor(
      caller,
      "binding.delete",
      { type: "binding", id: row.id },
      {
        name: row.name,
      },
    );
    return toBinding(row);
  }

  /**
   * The grants of a new shell: each named binding of the caller's org, by id (a binding deleted
   * and created again under the same name is a new binding, which the shell was not granted).
   */
  async grantsFor(orgId: string, names: readonly string[]): Promise<BindingGrant[]> {
    const grants: BindingGrant[] = [];
    for (const name of new Set(names)) {
      const row = await this.#find(orgId, name);
      grants.push({ id: row.id, name: row.name });
    }
    return grants;
  }

  /**
   * What the egress proxy needs to make one call: the binding's rules and its opened secret. Null
   * when the binding is gone; `unusable` when its upstream is no longer allowed here (an `http://`
   * upstream after the server stopped allowing them).
   */
  async target(orgId: string, bindingId: string): Promise<BindingTarget | null | "unusable"> {
    const row = await this.db
      .selectFrom("bindings")
      .selectAll()
      .where("org_id", "=", orgId)
      .where("id", "=", bindingId)
      .executeTakeFirst();
    if (!row) return null;
    let upstream: URL;
    try {
      upstream = parseUpstream(row.upstream, { allowHttp: this.options.allowHttpUpstream });
    } catch {
      return "unusable";
    }
    return {
      rules: {
        upstream,
        inject: parseInjectTemplate(row.inject),
        paths: JSON.parse(row.paths) as string[],
        methods: JSON.parse(row.methods) as BindingMethod[],
      },
      secret: this.box.unseal(row.secret),
    };
  }

  async #find(orgId: string, name: string): Promise<Selectable<BindingTable>> {
    const row = await this.db
      .selectFrom("bindings")
      .selectAll()
      .where("org_id", "=", orgId)
      .where("name", "=", name)
      .executeTakeFirst();
    if (!row)
      throw new AppError("binding_not_found", `No binding named ${name} in this org.`, { name });
    return row;
  }
}
