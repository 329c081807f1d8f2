import { createHash, createPublicKey, generateKeyPairSync, sign } from "node:crypto";
import { describe, expect, it } from "vitest";
import type { ActivityEvent } from "./activity.js";
import {
  activityLeafHash,
  checkpointKeyId,
  checkpointSignedBytes,
  type Checkpoint,
  type CheckpointKey,
} from "./checkpoints.js";
import {
  EVIDENCE_FORMAT,
  EVIDENCE_FORMAT_V1,
  EVIDENCE_FORMAT_V2,
  EvidenceBundle as EvidenceBundleSchema,
  canonicalSha256,
  verifyEvidenceBundle,
  type EvidenceBundle,
} from "./evidence.js";
import { InMemoryMerkleTree, toHex, type Sha256 } from "./merkle.js";
import type { Run } from "./runs.js";

const sha256: Sha256 = (data) => createHash("sha256").update(data).digest();
const time = "2026-01-01T00:00:00.000Z";

function signer() {
  const { privateKey } = generateKeyPairSync("ed25519");
  const raw = Buffer.from(
    createPublicKey(privateKey).export({ format: "jwk" }).x ?? "",
    "base64url",
  );
  const key: CheckpointKey = {
    keyId: checkpointKeyId(sha256, raw),
    algorithm: "Ed25519",
    publicKey: raw.toString("base64"),
    current: true,
  };
  return { key, sign: (bytes: Uint8Array) => sign(null, bytes, privateKey).toString("base64") };
}

function event(
  seq: number,
  action: string,
  targetId: string,
  details: Record<string, unknown> = {},
): ActivityEvent {
  return {
    id: `ev-${seq}`,
    seq,
    orgId: "org-1",
    actor: { type: "user", id: "u-1" },
    action,
    target: { type: action.startsWith("run.") ? "run" : "shell", id: targetId },
    outcome: "success",
    details,
    time,
    prevHash: "0".repeat(64),
    hash: "1".repeat(64),
  };
}

/** A signed bundle of a finished run, over a history that also holds another shell's event. */
async function bundle(): Promise<{ bundle: EvidenceBundle; key: CheckpointKey }> {
  const artifact = new TextEncoder().encode("<svg/>");
  const manifest = [
    { path: "out/a.svg", sizeBytes: artifact.length, sha256: toHex(sha256(artifact)) },
  ];
  const changes = {
    changes: [
      {
        path: "out/a.svg",
        change: "added" as const,
        sizeBytes: artifact.length,
        sha256: toHex(sha256(artifact)),
        previousSizeBytes: null,
        previousSha256: null,
      },
    ],
    truncated: false,
  };
  const run: Run = {
    id: "run-1",
    status: "succeeded",
    template: "py-guarded@1",
    language: "python",
    runtime: "container",
    shellId: "sh-1",
    exitCode: 0,
    killReason: null,
    result: { rows: 3 },
    artifacts: manifest,
    output: null,
    error: null,
    createdAt: time,
    finishedAt: time,
  };
  const history = [
    event(1, "shell.create", "sh-other"),
    event(2, "run.start", "run-1", { shellId: "sh-1", template: "py-guarded@1" }),
    event(3, "shell.create", "sh-1"),
    event(4, "shell.exec", "sh-1"),
    event(5, "run.finish", "run-1", {
      status: "succeeded",
      exitCode: 0,
      killReason: null,
      artifactManifest: manifest,
      resultSha256: canonicalSha256(sha256, { rows: 3 }),
      workspaceChanges: 1,
      workspaceChangesSha256: canonicalSha256(sha256, changes),
    }),
    event(6, "shell.delete", "sh-other"),
  ];
  const tree = new InMemoryMerkleTree(sha256);
  for (const e of history) tree.append(activityLeafHash(sha256, e));
  const reader = tree.reader();
  const { key, sign: signBytes } = signer();
  const fields = { orgId: "org-1", treeSize: 6, rootHash: toHex(await reader.root(6)), time };
  const checkpoint: Checkpoint = {
    id: "cp-1",
    format: "shells-checkpoint/v1",
    ...fields,
    keyId: key.keyId,
    signature: signBytes(checkpointSignedBytes(fields)),
  };
  const events = history.slice(1, 5);
  const proofs = await Promise.all(
    events.map(async (e) => ({
      eventId: e.id,
      leafIndex: e.seq - 1,
      treeSize: 6,
      leafHash: toHex(tree.leaf(e.seq - 1)),
      path: (await reader.inclusionProof(e.seq - 1, 6)).map(toHex),
    })),
  );
  return {
    key,
    bundle: {
      format: EVIDENCE_FORMAT,
      exportedAt: time,
      run,
      events,
      proofs,
      artifacts: manifest.map((m) => ({
        ...m,
        contentBase64: Buffer.from(artifact).toString("base64"),
      })),
      workspaceChanges: changes,
      checkpoint,
      key,
    },
  };
}

describe("evidence bundles", () => {
  it("verify offline: signature, inclusion, the run against its signed events, artifact bytes", async () => {
    const { bundle: b, key } = await bundle();
    const checked = await verifyEvidenceBundle(sha256, b, { trustedKeys: [key] });
    expect(checked).toMatchObject({ ok: true, problem: null, keyId: key.keyId, keyTrusted: true });
    expect(checked.checked).toHaveLength(6);
    expect((await verifyEvidenceBundle(sha256, b)).keyTrusted).toBe(false);
  });

  it("verify bundles of both formats: v1 (before diffs) as v2, and refuse a diff neither may carry unrecorded", async () => {
    const { bundle: v1 } = await bundle();
    v1.format = EVIDENCE_FORMAT_V1;
    expect(EvidenceBundleSchema.safeParse(v1).success).toBe(true);
    expect((await verifyEvidenceBundle(sha256, v1)).problem).toBeNull();
    const diff = { files: [], patchBytes: 0, truncated: false };
    expect((await verifyEvidenceBundle(sha256, { ...v1, workspaceDiff: diff })).problem).toBe(
      `a ${EVIDENCE_FORMAT_V1} bundle carries no workspace diff`,
    );
    const { bundle: v2 } = await bundle();
    expect(v2.format).toBe(EVIDENCE_FORMAT);
    expect((await verifyEvidenceBundle(sha256, { ...v2, workspaceDiff: diff })).problem).toBe(
      "the bundle carries a workspace diff but no signed run.finish event records it",
    );
  });

  it("verify a v2 bundle (before reviews), and refuse reviews a v2 bundle or no signed event carries", async () => {
    const { bundle: v2 } = await bundle();
    v2.format = EVIDENCE_FORMAT_V2;
    expect(EvidenceBundleSchema.safeParse(v2).success).toBe(true);
    expect((await verifyEvidenceBundle(sha256, v2)).problem).toBeNull();
    const review = {
      id: "rvw-1",
      verdict: "approved" as const,
      comment: "ok",
      reviewedBy: "usr-2",
      createdAt: time,
    };
    expect((await verifyEvidenceBundle(sha256, { ...v2, reviews: [review] })).problem).toBe(
      `a ${EVIDENCE_FORMAT_V2} bundle carries no reviews`,
    );
    const { bundle: v3 } = await bundle();
    expect((await verifyEvidenceBundle(sha256, { ...v3, reviews: [] })).problem).toBeNull();
    expect(
      (
        await verifyEvidenceBundle(sha256, {
          ...v3,
          reviews: [review],
          run: { ...v3.run, review },
        })
      ).problem,
    ).toBe("the bundle lists 1 reviews but 0 signed run.review events record reviews");
  });

  it("name an event about another shell slipped into the bundle", async () => {
    const { bundle: b } = await bundle();
    b.events[1] = { ...b.events[1]!, target: { type: "shell", id: "sh-other" } };
    expect((await verifyEvidenceBundle(sha256, b)).problem).toContain("event ev-3 (seq 3)");
  });

  it("refuse a bundle whose run record says something its signed events do not", async () => {
    const cases: [(b: EvidenceBundle) => void, string][] = [
      [(b) => (b.run.status = "failed"), "status"],
      [(b) => (b.run.killReason = "oom"), "killReason"],
      [(b) => (b.run.template = "py-guarded@2"), "template py-guarded@2 is not the one"],
      [(b) => delete b.run.template, "template (none) is not the one"],
      [(b) => (b.run.shellId = "sh-other"), "is about sh-1, not run run-1 or its shell"],
      [(b) => (b.run.result = null), "result differs"],
      [(b) => (b.artifacts = []), "artifact manifest differs"],
      [(b) => (b.workspaceChanges = { changes: [], truncated: false }), "workspace changes differ"],
      [(b) => (b.workspaceChanges = null), "leaves out the workspace changes"],
      [
        (b) => {
          b.events = b.events.slice(1);
          b.proofs = b.proofs.slice(1);
        },
        "no signed run.start event",
      ],
    ];
    for (const [change, problem] of cases) {
      const { bundle: b } = await bundle();
      change(b);
      expect((await verifyEvidenceBundle(sha256, b)).problem, problem).toContain(problem);
    }
  });

  it("refuse a checkpoint signed by a key the caller does not trust", async () => {
    const { bundle: b } = await bundle();
    const other = signer().key;
    expect((await verifyEvidenceBundle(sha256, b, { trustedKeys: [other] })).problem).toContain(
      "not among the trusted keys",
    );
    const swapped = { ...b, key: { ...other, keyId: b.key.keyId } };
    expect((await verifyEvidenceBundle(sha256, swapped)).problem).toContain(
      "is not the hash of the public key",
    );
  });
});
