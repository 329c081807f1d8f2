import type { Sha256 } from "@shells/contract";
import { createHash } from "node:crypto";

/** SHA-256 with node:crypto, for the contract's Merkle and checkpoint functions. */
export const sha256: Sha256 = (data) => createHash("sha256").update(data).digest();
