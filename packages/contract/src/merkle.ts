/**
 * Merkle trees as RFC 6962 / RFC 9162 (Certificate Transparency) define them: a leaf hashes as
 * SHA-256(0x00 || leaf bytes), an inner node as SHA-256(0x01 || left || right), and a tree of n
 * leaves splits at the largest power of two below n. Inclusion proofs show that a leaf is in a tree
 * of a given size and root; consistency proofs show that a tree is an append-only extension of an
 * earlier one. The domain-separation bytes keep a leaf from ever posing as an inner node.
 *
 * Hashing is synchronous and supplied by the caller (`node:crypto` in Node), because a verifier of
 * a whole history hashes every event and a promise per hash would dominate the cost; the module
 * itself does no I/O and runs anywhere.
 */

/** A synchronous SHA-256 (32-byte digest). */
export type Sha256 = (data: Uint8Array) => Uint8Array;

/**
 * Hash of a complete, aligned subtree: node (level, index) covers leaves
 * [index·2^level, (index+1)·2^level). Level 0 holds the leaf hashes.
 */
export type CompleteSubtreeHash = (
  level: number,
  index: number,
) => Uint8Array | Promise<Uint8Array>;

/** One complete, aligned subtree and its hash (see {@link CompleteSubtreeHash}). */
export interface MerkleNode {
  level: number;
  index: number;
  hash: Uint8Array;
}

const LEAF_PREFIX = new Uint8Array([0]);
const NODE_PREFIX = new Uint8Array([1]);

function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, part) => n + part.length, 0));
  let at = 0;
  for (const part of parts) {
    out.set(part, at);
    at += part.length;
  }
  return out;
}

/** SHA-256(0x00 || leaf). */
export function merkleLeafHash(sha256: Sha256, leaf: Uint8Array): Uint8Array {
  return sha256(concat(LEAF_PREFIX, leaf));
}

/** SHA-256(0x01 || left || right). */
export function merkleNodeHash(sha256: Sha256, left: Uint8Array, right: Uint8Array): Uint8Array {
  return sha256(concat(NODE_PREFIX, left, right));
}

/** The root of the empty tree: SHA-256 of no bytes. */
export function emptyTreeRoot(sha256: Sha256): Uint8Array {
  return sha256(new Uint8Array(0));
}

/** The largest power of two strictly below `n` (n ≥ 2): where RFC 6962 splits a tree of n leaves. */
function splitPoint(n: number): number {
  let k = 1;
  while (k * 2 < n) k *= 2;
  return k;
}

function isPowerOfTwo(n: number): boolean {
  return n > 0 && (n & (n - 1)) === 0;
}

/** Whether two hashes are the same bytes. */
export function sameHash(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((byte, i) => byte === b[i]);
}

/** Lower-case hex of bytes. */
export function toHex(bytes: Uint8Array): string {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** Bytes of a hex string; throws on anything that is not an even run of hex digits. */
export function fromHex(hex: string): Uint8Array {
  if (!/^(?:[0-9a-fA-F]{2})*$/.test(hex)) throw new Error(`not hex: ${hex.slice(0, 16)}`);
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i += 1) out[i] = parseInt(hex.slice(i * 2, i * 2 + 2), 16);
  return out;
}

/**
 * The complete subtrees that appending leaf `index` combines with: its left siblings, one per
 * trailing 1-bit of `index` (level 0 first). On average one.
 */
export function leftSiblingsOf(index: number): { level: number; index: number }[] {
  const siblings: { level: number; index: number }[] = [];
  let at = index;
  while (at % 2 === 1) {
    siblings.push({ level: siblings.length, index: at - 1 });
    at = (at - 1) / 2;
  }
  return siblings;
}

/**
 * The subtrees appending leaf `index` completes: the leaf itself at level 0 and, while the node
 * just finished is a right child, its parent one level up. `leftSiblings` are the hashes of the
 * nodes {@link leftSiblingsOf} names, in that order.
 */
export function subtreesCompletedBy(
  sha256: Sha256,
  index: number,
  leafHash: Uint8Array,
  leftSiblings: readonly Uint8Array[],
): MerkleNode[] {
  const completed: MerkleNode[] = [{ level: 0, index, hash: leafHash }];
  let hash = leafHash;
  let at = index;
  for (const [level, left] of leftSiblings.entries()) {
    hash = merkleNodeHash(sha256, left, hash);
    at = (at - 1) / 2;
    completed.push({ level: level + 1, index: at, hash });
  }
  return completed;
}

/**
 * Reads roots and proofs of a tree whose complete subtrees are stored (a table keyed by level and
 * index, or arrays in memory). Any subtree hash is composed from O(log n) stored nodes, so a root,
 * an inclusion proof or a consistency proof costs O(log² n) lookups at most, never a pass over the
 * leaves. Lookups are remembered for the reader's lifetime: make a new reader when the tree grows
 * past the sizes it was asked about (stored nodes never change, so earlier answers stay true).
 */
export class MerkleTreeReader {
  readonly #sha256: Sha256;
  readonly #node: CompleteSubtreeHash;
  readonly #memo = new Map<string, Promise<Uint8Array>>();

  constructor(sha256: Sha256, node: CompleteSubtreeHash) {
    this.#sha256 = sha256;
    this.#node = node;
  }

  /** MTH of leaves [start, end): a stored node when the range is one, else composed as RFC 6962 splits it. */
  subtreeHash(start: number, end: number): Promise<Uint8Array> {
    const key = `${start}:${end}`;
    let hash = this.#memo.get(key);
    if (!hash) {
      hash = this.#compute(start, end);
      this.#memo.set(key, hash);
    }
    return hash;
  }

  async #compute(start: number, end: number): Promise<Uint8Array> {
    const size = end - start;
    if (size <= 0) throw new RangeError(`empty subtree [${start}, ${end})`);
    if (isPowerOfTwo(size) && start % size === 0) {
      const level = Math.log2(size);
      return this.#node(level, start / size);
    }
    const k = splitPoint(size);
    const [left, right] = await Promise.all([
      this.subtreeHash(start, start + k),
      this.subtreeHash(start + k, end),
    ]);
    return merkleNodeHash(this.#sha256, left, right);
  }

  /** The root of the first `size` leaves (the empty-tree root for 0). */
  async root(size: number): Promise<Uint8Array> {
    return size === 0 ? emptyTreeRoot(this.#sha256) : this.subtreeHash(0, size);
  }

  /** The audit path of leaf `index` in the tree of the first `size` leaves (RFC 6962 §2.1.1). */
  async inclusionProof(index: number, size: number): Promise<Uint8Array[]> {
    if (!Number.isInteger(index) || index < 0 || index >= size)
      throw new RangeError(`leaf ${index} is not in a tree of ${size}`);
    const path: Uint8Array[] = [];
    // Walk down from the root, noting the sibling of each subtree that holds the leaf; the path
    // lists them leaf-first.
    let start = 0;
    let end = size;
    while (end - start > 1) {
      const k = splitPoint(end - start);
      if (index < start + k) {
        path.push(await this.subtreeHash(start + k, end));
        end = start + k;
      } else {
        path.push(await this.subtreeHash(start, start + k));
        start += k;
      }
    }
    return path.reverse();
  }

  /**
   * The proof that the tree of `toSize` leaves extends the tree of `fromSize` (RFC 6962 §2.1.2):
   * empty when the sizes are equal or `fromSize` is 0.
   */
  async consistencyProof(fromSize: number, toSize: number): Promise<Uint8Array[]> {
    if (!Number.isInteger(fromSize) || fromSize < 0 || fromSize > toSize)
      throw new RangeError(`no consistency proof from ${fromSize} to ${toSize}`);
    if (fromSize === 0 || fromSize === toSize) return [];
    const proof: Uint8Array[] = [];
    // SUBPROOF(m, D[start:end], whole), unrolled: each step notes one sibling and descends.
    let start = 0;
    let end = toSize;
    let m = fromSize;
    let whole = true;
    while (m !== end - start) {
      const k = splitPoint(end - start);
      if (m <= k) {
        proof.push(await this.subtreeHash(start + k, end));
        end = start + k;
      } else {
        proof.push(await this.subtreeHash(start, start + k));
        start += k;
        m -= k;
        whole = false;
      }
    }
    if (!whole) proof.push(await this.subtreeHash(start, end));
    return proof.reverse();
  }
}

/**
 * A tree held in memory, built by appending leaf hashes: what a verifier builds from a history it
 * fetched. Keeps every complete subtree (about 2n hashes).
 */
export class InMemoryMerkleTree {
  readonly #sha256: Sha256;
  readonly #levels: Uint8Array[][] = [[]];

  constructor(sha256: Sha256) {
    this.#sha256 = sha256;
  }

  /** Leaves appended so far. */
  get size(): number {
    return this.#levels[0]?.length ?? 0;
  }

  /** Appends one leaf hash (already domain-separated with {@link merkleLeafHash}). */
  append(leafHash: Uint8Array): void {
    const index = this.size;
    const siblings = leftSiblingsOf(index).map((at) => this.node(at.level, at.index));
    for (const node of subtreesCompletedBy(this.#sha256, index, leafHash, siblings))
      (this.#levels[node.level] ??= [])[node.index] = node.hash;
  }

  /** The hash of leaf `index`, as appended. */
  leaf(index: number): Uint8Array {
    return this.node(0, index);
  }

  /** A complete subtree's hash; throws for one not complete yet. */
  node(level: number, index: number): Uint8Array {
    const hash = this.#levels[level]?.[index];
    if (!hash) throw new RangeError(`subtree (${level}, ${index}) is not complete`);
    return hash;
  }

  /** A reader of roots and proofs over this tree's nodes. */
  reader(): MerkleTreeReader {
    return new MerkleTreeReader(this.#sha256, (level, index) => this.node(level, index));
  }
}

/** Why a proof failed, or null when it holds. */
export type ProofProblem = string | null;

/**
 * Checks an inclusion proof (RFC 9162 §2.1.3.2): that `leafHash` is leaf `index` of the tree of
 * `size` leaves whose root is `root`.
 */
export function verifyInclusion(
  sha256: Sha256,
  proof: {
    index: number;
    size: number;
    leafHash: Uint8Array;
    path: Uint8Array[];
    root: Uint8Array;
  },
): ProofProblem {
  const { index, size, path } = proof;
  if (!Number.isInteger(index) || !Number.isInteger(size) || index < 0 || index >= size)
    return `leaf index ${index} is outside a tree of ${size}`;
  let fn = index;
  let sn = size - 1;
  let r = proof.leafHash;
  for (const p of path) {
    if (sn === 0) return "the path is longer than the tree is deep";
    if (fn % 2 === 1 || fn === sn) {
      r = merkleNodeHash(sha256, p, r);
      if (fn % 2 === 0) {
        while (fn % 2 === 0 && fn !== 0) {
          fn = Math.floor(fn / 2);
          sn = Math.floor(sn / 2);
        }
      }
    } else {
      r = merkleNodeHash(sha256, r, p);
    }
    fn = Math.floor(fn / 2);
    sn = Math.floor(sn / 2);
  }
  if (sn !== 0) return "the path is shorter than the tree is deep";
  if (!sameHash(r, proof.root)) return "the path does not lead from the leaf to the root";
  return null;
}

/**
 * Checks a consistency proof (RFC 9162 §2.1.4.2): that the tree of `toSize` leaves with root
 * `toRoot` begins with the tree of `fromSize` leaves with root `fromRoot`, i.e. nothing in the first
 * `fromSize` leaves was changed, removed or reordered.
 */
export function verifyConsistency(
  sha256: Sha256,
  proof: {
    fromSize: number;
    toSize: number;
    fromRoot: Uint8Array;
    toRoot: Uint8Array;
    path: Uint8Array[];
  },
): ProofProblem {
  const { fromSize, toSize, fromRoot, toRoot, path } = proof;
  if (!Number.isInteger(fromSize) || !Number.isInteger(toSize) || fromSize < 0)
    return "tree sizes must be whole numbers";
  if (fromSize > toSize)
    return `the later tree (${toSize}) is smaller than the earlier (${fromSize})`;
  if (fromSize === toSize) {
    if (path.length > 0) return "equal trees need an empty proof";
    return sameHash(fromRoot, toRoot) ? null : "the same size has two different roots";
  }
  if (fromSize === 0) return path.length === 0 ? null : "an empty tree needs an empty proof";
  if (path.length === 0) return "the proof is empty";
  const nodes = isPowerOfTwo(fromSize) ? [fromRoot, ...path] : path;
  let fn = fromSize - 1;
  let sn = toSize - 1;
  while (fn % 2 === 1) {
    fn = Math.floor(fn / 2);
    sn = Math.floor(sn / 2);
  }
  let fr = nodes[0] as Uint8Array;
  let sr = fr;
  for (const c of nodes.slice(1)) {
    if (sn === 0) return "the proof is longer than the trees are deep";
    if (fn % 2 === 1 || fn === sn) {
      fr = merkleNodeHash(sha256, c, fr);
      sr = merkleNodeHash(sha256, c, sr);
      if (fn % 2 === 0) {
        while (fn % 2 === 0 && fn !== 0) {
          fn = Math.floor(fn / 2);
          sn = Math.floor(sn / 2);
        }
      }
    } else {
      sr = merkleNodeHash(sha256, sr, c);
    }
    fn = Math.floor(fn / 2);
    sn = Math.floor(sn / 2);
  }
  if (sn !== 0) return "the proof is shorter than the trees are deep";
  if (!sameHash(fr, fromRoot))
    return "the earlier tree's root does not follow from the proof: its leaves were changed";
  if (!sameHash(sr, toRoot)) return "the later tree's root does not follow from the proof";
  return null;
}
