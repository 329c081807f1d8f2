/** The part of the Standard Schema interface that carries a schema's static types. */
interface TypedSchema {
  readonly "~standard": {
    readonly types?: { readonly input: unknown; readonly output: unknown } | undefined;
  };
}

/**
 * What a contract schema accepts: fields with a default may be left out. Read through the Standard
 * Schema interface the contract's schemas implement, so the SDK needs no schema library of its own
 * (it uses the contract's schemas only as types).
 */
export type SchemaInput<S extends TypedSchema> = NonNullable<S["~standard"]["types"]>["input"];

/** What a contract schema produces: the shape the server answers with. */
export type SchemaOutput<S extends TypedSchema> = NonNullable<S["~standard"]["types"]>["output"];
