import { EvidenceBundle, verifyEvidenceBundle } from "@shells/contract";
import type { Command } from "commander";
import { sha256 } from "../checkpoint-verification.js";
import type { CliContext } from "../context.js";
import { readJsonFile, writeJsonFile } from "../json-file.js";
import { trustedKeys } from "./audit-command.js";

/**
 * `shells evidence export RUN` writes a run's evidence bundle (its record, every event of the run
 * and its shell with an inclusion proof against a signed checkpoint, the artifact manifest with
 * hashes, the public key); `shells evidence verify FILE` checks one with no server and exits 1
 * naming the first thing that does not hold.
 */
export function registerEvidenceCommand(program: Command, ctx: CliContext): void {
  const evidence = program
    .command("evidence")
    .description("export a run's evidence bundle, and verify one offline");
  evidence
    .command("export")
    .description(
      "write a run's evidence bundle (events with inclusion proofs, signed checkpoint, artifact hashes)",
    )
    .argument("<run>", "run id")
    .option("-o, --output <file>", "write the bundle to this file (default: stdout)")
    .option("--with-artifacts", "include the bytes of the artifacts the run still keeps")
    .action(async (runId: string, options: { output?: string; withArtifacts?: boolean }) => {
      const handle = ctx.client().runs.handle(runId);
      const bundle = await handle.evidence();
      // Once retention removed them, only the manifest's hashes remain to export.
      if (options.withArtifacts && bundle.run.expiredAt === undefined) {
        const kept = new Set(bundle.run.artifacts.map((a) => a.path));
        for (const artifact of bundle.artifacts) {
          if (!kept.has(artifact.path)) continue;
          const bytes = await handle.artifact(artifact.path);
          artifact.contentBase64 = Buffer.from(bytes).toString("base64");
        }
      }
      if (options.output === undefined) return ctx.printJson(bundle);
      const path = await writeJsonFile(ctx.io.cwd, options.output, bundle);
      if (ctx.json) return ctx.printJson({ path, events: bundle.events.length });
      ctx.print(
        [
          `evidence of run ${bundle.run.id} (${bundle.run.status}) written to ${path}`,
          `  ${bundle.events.length} events proved against checkpoint ${bundle.checkpoint.id} (${bundle.checkpoint.treeSize} events, key ${bundle.checkpoint.keyId})`,
          `  ${bundle.artifacts.length} artifacts in the manifest${options.withArtifacts ? `, ${bundle.artifacts.filter((a) => a.contentBase64 !== undefined).length} with their bytes` : ""}`,
          bundle.workspaceDiff
            ? `  workspace diff of ${bundle.workspaceDiff.files.length} files`
            : bundle.run.expiredAt
              ? `  artifacts, changes and diff removed by retention at ${bundle.run.expiredAt} (their hashes stay)`
              : "  no workspace diff",
          `check it anywhere: shells evidence verify ${options.output}`,
        ].join("\n"),
      );
    });
  evidence
    .command("verify")
    .description(
      "check an evidence bundle with no server: signature, every inclusion proof, the run against its signed events, artifact hashes",
    )
    .argument("<file>", "an evidence bundle (shells evidence export)")
    .option(
      "--keys <file>",
      "trust only these keys (a saved copy of /.well-known/shells-checkpoint-keys)",
    )
    .option("--key-id <id>", "require the checkpoint to be signed by the key with this id")
    .action(async (file: string, options: { keys?: string; keyId?: string }) => {
      const bundle = await readJsonFile(ctx.io.cwd, file, EvidenceBundle, "an evidence bundle");
      const keys = await trustedKeys(ctx, options.keys);
      const pinned = options.keyId?.trim().toLowerCase();
      const verification =
        pinned !== undefined && pinned !== bundle.checkpoint.keyId
          ? {
              ok: false,
              problem: `the checkpoint is signed by key ${bundle.checkpoint.keyId}, not ${pinned}`,
              checked: [],
              keyId: bundle.checkpoint.keyId,
              keyTrusted: false,
            }
          : await verifyEvidenceBundle(
              sha256,
              bundle,
              keys === undefined ? {} : { trustedKeys: keys },
            );
      const keyTrusted = verification.keyTrusted || pinned === bundle.checkpoint.keyId;
      if (!verification.ok) ctx.exitCode = 1;
      if (ctx.json) return ctx.printJson({ ...verification, keyTrusted });
      const lines = verification.checked.map((line) => `  checked: ${line}`);
      if (!verification.ok) {
        ctx.printErr(
          [`invalid: ${verification.problem ?? "the bundle does not hold"}`, ...lines].join("\n"),
        );
        return;
      }
      ctx.print(
        [
          `ok: evidence of run ${bundle.run.id} (${bundle.run.status}) holds`,
          ...lines,
          keyTrusted
            ? `key ${verification.keyId} is one you trust`
            : `key ${verification.keyId} came with the bundle: compare it with the server's published keys (shells audit keys), or pass --keys/--key-id`,
          "not proved: that the bundle holds every event of the run (only that each one it holds is in the signed history)",
        ].join("\n"),
      );
    });
}
