import { Checkpoint, CheckpointKey, CheckpointKeys } from "@shells/contract";
import type { Command } from "commander";
import {
  CHECKPOINT_VERIFICATION_SCOPE,
  verifyAgainstCheckpoint,
} from "../checkpoint-verification.js";
import type { CliContext } from "../context.js";
import { readJsonFile, writeJsonFile, type FileSchema } from "../json-file.js";

/** A keys file: the well-known document, or one key. */
const KeysFile: FileSchema<CheckpointKey[]> = {
  safeParse(value) {
    const one = CheckpointKey.safeParse(value);
    if (one.success) return { success: true, data: [one.data] };
    const many = CheckpointKeys.safeParse(value);
    return many.success ? { success: true, data: many.data.keys } : many;
  },
};

/** Reads `--keys FILE`: the keys to trust instead of the ones the server (or a bundle) offers. */
export async function trustedKeys(
  ctx: CliContext,
  path: string | undefined,
): Promise<CheckpointKey[] | undefined> {
  if (path === undefined) return undefined;
  return readJsonFile(
    ctx.io.cwd,
    path,
    KeysFile,
    "a checkpoint key or the document at /.well-known/shells-checkpoint-keys",
  );
}

/**
 * `shells audit verify`: re-compute the activity chain, name the first event that fails, and say
 * plainly what that proves and what it cannot: the chain links from its first event to its head,
 * but a truncated tail or a chain rewritten and re-hashed after an edit still links. The head hash
 * is printed so it can be recorded elsewhere and checked later with `--expect-head`. With
 * `--checkpoint FILE` (a signed checkpoint saved earlier with `shells audit checkpoint -o FILE`) it
 * also proves that nothing the checkpoint covers was changed, removed or cut off since.
 */
export function registerAuditCommand(program: Command, ctx: CliContext): void {
  const audit = program.command("audit").description("check the activity history");
  audit
    .command("verify")
    .description(
      "re-compute the hash chain of the whole activity history; exit 1 if it does not hold (or no longer contains --expect-head)",
    )
    .option(
      "--expect-head <hash>",
      "a head hash recorded earlier, outside the server: fail unless the chain still contains it",
    )
    .option(
      "--checkpoint <file>",
      "a signed checkpoint saved earlier (shells audit checkpoint -o FILE): prove that nothing it covers was changed, removed or truncated",
    )
    .option(
      "--keys <file>",
      "with --checkpoint: trust these keys (a saved copy of /.well-known/shells-checkpoint-keys) instead of the server's",
    )
    .action(async (options: { expectHead?: string; checkpoint?: string; keys?: string }) => {
      if (options.checkpoint !== undefined) {
        await verifyCheckpointCommand(ctx, options.checkpoint, options.keys);
        if (options.expectHead === undefined) return;
      }
      const verification = await ctx
        .client()
        .verifyActivity(options.expectHead === undefined ? {} : { expectHead: options.expectHead });
      if (!verification.ok) ctx.exitCode = 1;
      if (ctx.json) return ctx.printJson(verification);
      const head = verification.head;
      const headLines = head
        ? [`head: seq ${head.seq}, event ${head.eventId}, ${head.time}`, `head hash: ${head.hash}`]
        : ["head: none (the history is empty)"];
      if (verification.ok) {
        return ctx.print(
          [
            `ok: ${verification.checked} events verified`,
            ...headLines,
            ...(verification.expectedHead
              ? [`expected head ${verification.expectedHead.hash} is in the chain`]
              : []),
            `proved: ${verification.proves}`,
            `not proved: ${verification.cannotProve}`,
            "record the head hash outside this server to check it later",
          ].join("\n"),
        );
      }
      const where =
        verification.eventId === null
          ? "tampered"
          : `tampered: event ${verification.eventId} (seq ${verification.seq ?? "?"})`;
      ctx.printErr(
        [
          `${where}: ${verification.reason}`,
          `${verification.checked} events before it verified`,
          ...headLines,
        ].join("\n"),
      );
    });
  audit
    .command("checkpoint")
    .description(
      "have the server sign a checkpoint of the history now; save it outside the server to verify against later",
    )
    .option("-o, --output <file>", "write the checkpoint to this file")
    .action(async (options: { output?: string }) => {
      const checkpoint = await ctx.client().audit.checkpoint();
      if (options.output !== undefined) {
        const path = await writeJsonFile(ctx.io.cwd, options.output, checkpoint);
        if (!ctx.json)
          return ctx.print(
            `checkpoint ${checkpoint.id}: ${checkpoint.treeSize} events, root ${checkpoint.rootHash}\nwritten to ${path}; later: shells audit verify --checkpoint ${options.output}`,
          );
      }
      ctx.printJson(checkpoint);
    });
  audit
    .command("checkpoints")
    .description("list the org's signed checkpoints, newest first")
    .option("--limit <n>", "how many", "20")
    .action(async (options: { limit: string }) => {
      const { items } = await ctx
        .client()
        .audit.checkpoints({ limit: Number(options.limit) })
        .page();
      if (ctx.json) return ctx.printJson(items);
      ctx.print(
        items.length === 0
          ? "no checkpoints yet (sign one with `shells audit checkpoint`)"
          : items
              .map(
                (c) =>
                  `${c.id}  ${c.time}  ${String(c.treeSize).padStart(7)} events  root ${c.rootHash}`,
              )
              .join("\n"),
      );
    });
  audit
    .command("keys")
    .description(
      "the public keys checkpoints are signed with (as /.well-known/shells-checkpoint-keys publishes them)",
    )
    .option(
      "-o, --output <file>",
      "save them, to verify checkpoints and evidence with later (--keys)",
    )
    .action(async (options: { output?: string }) => {
      const keys = await ctx.client().audit.keys();
      if (options.output !== undefined) await writeJsonFile(ctx.io.cwd, options.output, { keys });
      if (ctx.json || options.output === undefined) return ctx.printJson({ keys });
      ctx.print(`${keys.length} key(s) written to ${options.output}`);
    });
}

/** `audit verify --checkpoint FILE`: exit 1, naming what is wrong, unless the history still holds. */
async function verifyCheckpointCommand(
  ctx: CliContext,
  file: string,
  keysFile: string | undefined,
): Promise<void> {
  const saved = await readJsonFile(ctx.io.cwd, file, Checkpoint, "a signed checkpoint");
  const keys = await trustedKeys(ctx, keysFile);
  const verification = await verifyAgainstCheckpoint(
    ctx.client(),
    saved,
    keys === undefined ? {} : { trustedKeys: keys },
  );
  if (!verification.ok) ctx.exitCode = 1;
  if (ctx.json) return ctx.printJson({ ...verification, ...CHECKPOINT_VERIFICATION_SCOPE });
  const lines = verification.checked.map((line) => `  checked: ${line}`);
  if (verification.ok) {
    const current = verification.current;
    return ctx.print(
      [
        `ok: the history still begins with the ${saved.treeSize} events of checkpoint ${saved.id} (${saved.time})`,
        ...lines,
        `proved: ${CHECKPOINT_VERIFICATION_SCOPE.proves}`,
        `not proved: ${CHECKPOINT_VERIFICATION_SCOPE.cannotProve}`,
        ...(current
          ? [
              `newest checkpoint: ${current.id} (${current.treeSize} events); save it with \`shells audit checkpoint -o FILE\``,
            ]
          : []),
      ].join("\n"),
    );
  }
  ctx.printErr(
    [`tampered: ${verification.problem ?? "the history does not hold"}`, ...lines].join("\n"),
  );
}
