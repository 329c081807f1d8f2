import { createHash } from "node:crypto";
import { describe, expect, it } from "vitest";
import {
  InMemoryMerkleTree,
  MerkleTreeReader,
  fromHex,
  merkleLeafHash,
  merkleNodeHash,
  toHex,
  verifyConsistency,
  verifyInclusion,
  type Sha256,
} from "./merkle.js";

const sha256: Sha256 = (data) => createHash("sha256").update(data).digest();

// The reference below follows RFC 6962 §2.1 word for word (recursive, over the leaves), so the
// stored-subtree implementation is checked against the definition, not against itself.
function largestPowerOfTwoBelow(n: number): number {
  let k = 1;
  while (k * 2 < n) k *= 2;
  return k;
}

function mth(leaves: Uint8Array[]): Uint8Array {
  if (leaves.length === 0) return sha256(new Uint8Array(0));
  if (leaves.length === 1) return merkleLeafHash(sha256, leaves[0] as Uint8Array);
  const k = largestPowerOfTwoBelow(leaves.length);
  return merkleNodeHash(sha256, mth(leaves.slice(0, k)), mth(leaves.slice(k)));
}

function path(m: number, leaves: Uint8Array[]): Uint8Array[] {
  if (leaves.length <= 1) return [];
  const k = largestPowerOfTwoBelow(leaves.length);
  return m < k
    ? [...path(m, leaves.slice(0, k)), mth(leaves.slice(k))]
    : [...path(m - k, leaves.slice(k)), mth(leaves.slice(0, k))];
}

function subproof(m: number, leaves: Uint8Array[], whole: boolean): Uint8Array[] {
  if (m === leaves.length) return whole ? [] : [mth(leaves)];
  const k = largestPowerOfTwoBelow(leaves.length);
  return m <= k
    ? [...subproof(m, leaves.slice(0, k), whole), mth(leaves.slice(k))]
    : [...subproof(m - k, leaves.slice(k), false), mth(leaves.slice(0, k))];
}

/** The leaves of the certificate-transparency test vectors (merkle_tree_test). */
const CT_LEAVES = [
  "",
  "00",
  "10",
  "2021",
  "3031",
  "40414243",
  "5051525354555657",
  "606162636465666768696a6b6c6d6e6f",
].map(fromHex);

/** Published roots of the first n of those leaves. */
const CT_ROOTS = [
  "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
  "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
  "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
  "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
  "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
  "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
  "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
  "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
  "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
];

function leavesOf(n: number): Uint8Array[] {
  return Array.from({ length: n }, (_, i) => new TextEncoder().encode(`event ${i}`));
}

function treeOf(leaves: Uint8Array[]): InMemoryMerkleTree {
  const tree = new InMemoryMerkleTree(sha256);
  for (const leaf of leaves) tree.append(merkleLeafHash(sha256, leaf));
  return tree;
}

describe("Merkle trees (RFC 6962)", () => {
  it("gives the published certificate-transparency roots for 0 to 8 leaves", async () => {
    const tree = new InMemoryMerkleTree(sha256);
    const reader = () => tree.reader();
    expect(toHex(await reader().root(0))).toBe(CT_ROOTS[0]);
    for (const [i, leaf] of CT_LEAVES.entries()) {
      tree.append(merkleLeafHash(sha256, leaf));
      expect(toHex(await reader().root(i + 1)), `root of ${i + 1}`).toBe(CT_ROOTS[i + 1]);
      expect(toHex(mth(CT_LEAVES.slice(0, i + 1)))).toBe(CT_ROOTS[i + 1]);
    }
  });

  it("answers the root of every earlier size from the stored subtrees", async () => {
    const leaves = leavesOf(20);
    const reader = treeOf(leaves).reader();
    for (let n = 0; n <= 20; n += 1)
      expect(toHex(await reader.root(n)), `size ${n}`).toBe(toHex(mth(leaves.slice(0, n))));
  });

  it("builds and verifies the inclusion proof of every leaf in trees of 1 to 20 leaves", async () => {
    const leaves = leavesOf(20);
    const reader = treeOf(leaves).reader();
    for (let size = 1; size <= 20; size += 1) {
      const root = mth(leaves.slice(0, size));
      for (let index = 0; index < size; index += 1) {
        const proof = await reader.inclusionProof(index, size);
        expect(proof.map(toHex), `${index} in ${size}`).toEqual(
          path(index, leaves.slice(0, size)).map(toHex),
        );
        const leafHash = merkleLeafHash(sha256, leaves[index] as Uint8Array);
        expect(verifyInclusion(sha256, { index, size, leafHash, path: proof, root })).toBeNull();
      }
    }
  });

  it("builds and verifies the consistency proof of every pair of sizes up to 20", async () => {
    const leaves = leavesOf(20);
    const reader = treeOf(leaves).reader();
    for (let to = 1; to <= 20; to += 1) {
      for (let from = 0; from <= to; from += 1) {
        const proof = await reader.consistencyProof(from, to);
        const expected = from === 0 ? [] : subproof(from, leaves.slice(0, to), true);
        expect(proof.map(toHex), `${from} → ${to}`).toEqual(expected.map(toHex));
        const check = {
          fromSize: from,
          toSize: to,
          fromRoot: mth(leaves.slice(0, from)),
          toRoot: mth(leaves.slice(0, to)),
          path: proof,
        };
        expect(verifyConsistency(sha256, check), `${from} → ${to}`).toBeNull();
      }
    }
  });

  it("refuses an inclusion proof for a changed leaf, a wrong index, a wrong size or a cut path", async () => {
    const leaves = leavesOf(13);
    const reader = treeOf(leaves).reader();
    const root = mth(leaves);
    const leafHash = merkleLeafHash(sha256, leaves[5] as Uint8Array);
    const good = { index: 5, size: 13, leafHash, path: await reader.inclusionProof(5, 13), root };
    expect(verifyInclusion(sha256, good)).toBeNull();
    const other = merkleLeafHash(sha256, new TextEncoder().encode("event 5 (edited)"));
    expect(verifyInclusion(sha256, { ...good, leafHash: other })).toMatch(/does not lead/);
    expect(verifyInclusion(sha256, { ...good, index: 4 })).not.toBeNull();
    expect(verifyInclusion(sha256, { ...good, size: 7 })).not.toBeNull();
    expect(verifyInclusion(sha256, { ...good, size: 5 })).toMatch(/outside/);
    expect(verifyInclusion(sha256, { ...good, path: good.path.slice(1) })).not.toBeNull();
    expect(verifyInclusion(sha256, { ...good, path: [...good.path, root] })).toMatch(/longer/);
  });

  it("refuses a consistency proof when an earlier leaf was changed, removed or the tree shrank", async () => {
    const leaves = leavesOf(17);
    const proofOf = async (list: Uint8Array[], from: number) =>
      treeOf(list).reader().consistencyProof(from, list.length);
    const fromRoot = mth(leaves.slice(0, 11));
    const check = async (list: Uint8Array[]) =>
      verifyConsistency(sha256, {
        fromSize: 11,
        toSize: list.length,
        fromRoot,
        toRoot: mth(list),
        path: await proofOf(list, 11),
      });
    expect(await check(leaves)).toBeNull();
    const edited = leaves.map((leaf, i) => (i === 3 ? new TextEncoder().encode("edited") : leaf));
    expect(await check(edited)).toMatch(/earlier tree's root/);
    const removed = leaves.filter((_, i) => i !== 7);
    expect(await check(removed)).toMatch(/earlier tree's root/);
    expect(
      verifyConsistency(sha256, {
        fromSize: 11,
        toSize: 10,
        fromRoot,
        toRoot: mth(leaves.slice(0, 10)),
        path: [],
      }),
    ).toMatch(/smaller/);
    expect(
      verifyConsistency(sha256, {
        fromSize: 11,
        toSize: 11,
        fromRoot,
        toRoot: mth(edited.slice(0, 11)),
        path: [],
      }),
    ).toMatch(/two different roots/);
  });

  it("reads proofs from stored subtrees with a few lookups, not a pass over the leaves", async () => {
    const size = 50_000;
    const tree = new InMemoryMerkleTree(sha256);
    for (let i = 0; i < size; i += 1)
      tree.append(merkleLeafHash(sha256, new TextEncoder().encode(String(i))));
    let lookups = 0;
    const reader = new MerkleTreeReader(sha256, (level, index) => {
      lookups += 1;
      return tree.node(level, index);
    });
    const root = await reader.root(size);
    const proof = await reader.inclusionProof(37_777, size);
    const consistency = await reader.consistencyProof(32_769, size);
    expect(lookups).toBeLessThan(200);
    expect(
      verifyInclusion(sha256, {
        index: 37_777,
        size,
        leafHash: tree.leaf(37_777),
        path: proof,
        root,
      }),
    ).toBeNull();
    expect(
      verifyConsistency(sha256, {
        fromSize: 32_769,
        toSize: size,
        fromRoot: await reader.root(32_769),
        toRoot: root,
        path: consistency,
      }),
    ).toBeNull();
  });
});
