import { checkpointKeyId, type CheckpointKey } from "@shells/contract";
import {
  createPrivateKey,
  createPublicKey,
  generateKeyPairSync,
  sign,
  type KeyObject,
} from "node:crypto";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { SealedBox } from "../iam/sealed-box.js";
import { sha256 } from "./sha256.js";

/** The file under the data dir that keeps the checkpoint signing keys, sealed. */
export const CHECKPOINT_KEYS_FILE = "checkpoint-signing-keys";

interface SigningKey {
  keyId: string;
  privateKey: KeyObject;
  /** Raw 32-byte Ed25519 public key. */
  publicKey: Buffer;
}

function signingKeyOf(privateKey: KeyObject): SigningKey {
  const jwk = createPublicKey(privateKey).export({ format: "jwk" });
  const publicKey = Buffer.from(jwk.x ?? "", "base64url");
  return { keyId: checkpointKeyId(sha256, publicKey), privateKey, publicKey };
}

/**
 * The Ed25519 keys the server signs activity checkpoints with. They live in
 * `<dataDir>/checkpoint-signing-keys` (mode 0600), one PKCS#8 key per line, each sealed with the
 * server's sealed box, so a copy of the data dir without the sealing key cannot sign. The file is
 * created with one fresh key on first start. The first key signs; every key in the file stays
 * published, so checkpoints signed before a rotation still verify.
 */
export class CheckpointSigner {
  readonly #keys: SigningKey[];

  constructor(privateKeys: readonly KeyObject[]) {
    if (privateKeys.length === 0) throw new Error("a checkpoint signer needs at least one key");
    this.#keys = privateKeys.map(signingKeyOf);
  }

  /** The signer for a server: its keys file, created with one fresh key when missing. */
  static open(dataDir: string, box: SealedBox): CheckpointSigner {
    const path = join(dataDir, CHECKPOINT_KEYS_FILE);
    if (!existsSync(path)) {
      mkdirSync(dataDir, { recursive: true, mode: 0o700 });
      writeFileSync(path, `${CheckpointSigner.#sealedNewKey(box)}\n`, { mode: 0o600, flag: "wx" });
    }
    const lines = readFileSync(path, "utf8")
      .split("\n")
      .map((line) => line.trim())
      .filter((line) => line.length > 0);
    return new CheckpointSigner(
      lines.map((line) =>
        createPrivateKey({
          key: Buffer.from(box.unseal(line), "base64"),
          format: "der",
          type: "pkcs8",
        }),
      ),
    );
  }

  /** Puts a fresh key in front of the file's keys: it signs from the next start on. */
  static rotate(dataDir: string, box: SealedBox): void {
    const path = join(dataDir, CHECKPOINT_KEYS_FILE);
    const old = existsSync(path) ? readFileSync(path, "utf8") : "";
    writeFileSync(path, `${CheckpointSigner.#sealedNewKey(box)}\n${old}`, { mode: 0o600 });
  }

  static #sealedNewKey(box: SealedBox): string {
    const { privateKey } = generateKeyPairSync("ed25519");
    return box.seal(privateKey.export({ format: "der", type: "pkcs8" }).toString("base64"));
  }

  /** Id of the key that signs now. */
  get keyId(): string {
    return (this.#keys[0] as SigningKey).keyId;
  }

  /** Ed25519 signature (base64) of `bytes` with the current key. */
  sign(bytes: Uint8Array): string {
    return sign(null, bytes, (this.#keys[0] as SigningKey).privateKey).toString("base64");
  }

  /** Every key's public half, as `/.well-known/shells-checkpoint-keys` publishes them. */
  publicKeys(): CheckpointKey[] {
    return this.#keys.map((key, i) => ({
      keyId: key.keyId,
      algorithm: "Ed25519",
      publicKey: key.publicKey.toString("base64"),
      current: i === 0,
    }));
  }
}
