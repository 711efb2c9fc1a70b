//! RFC 9162 §2.1 Merkle tree hashing, inclusion and consistency proofs and their verification.
//!
//! Proof generation asks a [`NodeSource`] only for hashes of complete, aligned subtrees, which a
//! tiled store can answer from its tiles.

use sha2::{Digest, Sha256};

use crate::{Error, Hash};

/// `SHA-256(0x00 || entry)`.
pub fn leaf_hash(entry: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(entry);
    h.finalize().into()
}

/// `SHA-256(0x01 || left || right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// The root of the empty tree, `SHA-256("")`.
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// Largest power of two strictly below `n` (n ≥ 2).
fn split(n: u64) -> u64 {
    let mut k = 1u64;
    while k << 1 < n {
        k <<= 1;
    }
    k
}

/// Root of a list of leaf hashes (in memory).
pub fn root_of(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => empty_root(),
        1 => leaves.first().copied().unwrap_or_else(empty_root),
        n => {
            let k = usize::try_from(split(n as u64)).unwrap_or(n / 2);
            let (l, r) = leaves.split_at(k.min(n));
            node_hash(&root_of(l), &root_of(r))
        }
    }
}

/// Hashes of complete subtrees: `node(level, index)` is the root of leaves
/// `[index << level, (index + 1) << level)`.
pub trait NodeSource {
    /// The hash of one complete subtree.
    fn node(&self, level: u8, index: u64) -> Result<Hash, Error>;
}

/// In-memory leaves as a node source (tests, small trees).
impl NodeSource for [Hash] {
    fn node(&self, level: u8, index: u64) -> Result<Hash, Error> {
        let start = usize::try_from(index << level).map_err(|e| Error::Range(e.to_string()))?;
        let end = start + (1usize << level);
        self.get(start..end).map(root_of).ok_or_else(|| Error::Range(format!("no subtree {level}/{index}")))
    }
}

/// `MTH(D[start:end])` from complete subtrees.
pub fn range_hash(src: &(impl NodeSource + ?Sized), start: u64, end: u64) -> Result<Hash, Error> {
    let n = end.checked_sub(start).ok_or_else(|| Error::Range("empty range".into()))?;
    if n == 0 {
        return Ok(empty_root());
    }
    if n.is_power_of_two() && start.is_multiple_of(n) {
        let level = u8::try_from(n.trailing_zeros()).map_err(|e| Error::Range(e.to_string()))?;
        return src.node(level, start >> level);
    }
    let k = split(n);
    Ok(node_hash(&range_hash(src, start, start + k)?, &range_hash(src, start + k, end)?))
}

/// The root of the first `size` leaves.
pub fn root(src: &(impl NodeSource + ?Sized), size: u64) -> Result<Hash, Error> {
    range_hash(src, 0, size)
}

/// Inclusion proof of leaf `index` in the tree of `size` leaves (RFC 9162 §2.1.3.1).
pub fn inclusion_proof(src: &(impl NodeSource + ?Sized), index: u64, size: u64) -> Result<Vec<Hash>, Error> {
    if index >= size {
        return Err(Error::Range(format!("index {index} is not below tree size {size}")));
    }
    let mut out = Vec::new();
    path(src, index, 0, size, &mut out)?;
    Ok(out)
}

fn path(src: &(impl NodeSource + ?Sized), m: u64, start: u64, end: u64, out: &mut Vec<Hash>) -> Result<(), Error> {
    let n = end - start;
    if n <= 1 {
        return Ok(());
    }
    let k = split(n);
    if m < k {
        path(src, m, start, start + k, out)?;
        out.push(range_hash(src, start + k, end)?);
    } else {
        path(src, m - k, start + k, end, out)?;
        out.push(range_hash(src, start, start + k)?);
    }
    Ok(())
}

/// Consistency proof between tree sizes `old` and `new` (RFC 9162 §2.1.4.1).
pub fn consistency_proof(src: &(impl NodeSource + ?Sized), old: u64, new: u64) -> Result<Vec<Hash>, Error> {
    if old > new {
        return Err(Error::Range(format!("old size {old} exceeds new size {new}")));
    }
    let mut out = Vec::new();
    if old == 0 || old == new {
        return Ok(out);
    }
    subproof(src, old, 0, new, true, &mut out)?;
    Ok(out)
}

fn subproof(
    src: &(impl NodeSource + ?Sized),
    m: u64,
    start: u64,
    end: u64,
    b: bool,
    out: &mut Vec<Hash>,
) -> Result<(), Error> {
    let n = end - start;
    if m == n {
        if !b {
            out.push(range_hash(src, start, end)?);
        }
        return Ok(());
    }
    let k = split(n);
    if m <= k {
        subproof(src, m, start, start + k, b, out)?;
        out.push(range_hash(src, start + k, end)?);
    } else {
        subproof(src, m - k, start + k, end, false, out)?;
        out.push(range_hash(src, start, start + k)?);
    }
    Ok(())
}

/// Verifies an inclusion proof (RFC 9162 §2.1.3.2).
pub fn verify_inclusion(leaf: &Hash, index: u64, size: u64, proof: &[Hash], root: &Hash) -> Result<(), Error> {
    if index >= size {
        return Err(Error::BadProof(format!("index {index} not below size {size}")));
    }
    let (mut f_n, mut s_n) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if s_n == 0 {
            return Err(Error::BadProof("proof too long".into()));
        }
        if f_n & 1 == 1 || f_n == s_n {
            r = node_hash(p, &r);
            if f_n & 1 == 0 {
                while f_n & 1 == 0 && f_n != 0 {
                    f_n >>= 1;
                    s_n >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        f_n >>= 1;
        s_n >>= 1;
    }
    if s_n != 0 {
        return Err(Error::BadProof("proof too short".into()));
    }
    if r != *root {
        return Err(Error::BadProof("root mismatch".into()));
    }
    Ok(())
}

/// Verifies a consistency proof (RFC 9162 §2.1.4.2).
pub fn verify_consistency(old: u64, new: u64, old_root: &Hash, new_root: &Hash, proof: &[Hash]) -> Result<(), Error> {
    if old > new {
        return Err(Error::BadProof("old size exceeds new size".into()));
    }
    if old == new {
        return if proof.is_empty() && old_root == new_root {
            Ok(())
        } else {
            Err(Error::BadProof("equal sizes need equal roots and an empty proof".into()))
        };
    }
    if old == 0 {
        return if proof.is_empty() {
            Ok(())
        } else {
            Err(Error::BadProof("proof from the empty tree must be empty".into()))
        };
    }
    let mut path: Vec<Hash> = Vec::with_capacity(proof.len() + 1);
    if old.is_power_of_two() {
        path.push(*old_root);
    }
    path.extend_from_slice(proof);
    let (mut f_n, mut s_n) = (old - 1, new - 1);
    while f_n & 1 == 1 {
        f_n >>= 1;
        s_n >>= 1;
    }
    let Some((first, rest)) = path.split_first() else {
        return Err(Error::BadProof("empty proof".into()));
    };
    let (mut fr, mut sr) = (*first, *first);
    for c in rest {
        if s_n == 0 {
            return Err(Error::BadProof("proof too long".into()));
        }
        if f_n & 1 == 1 || f_n == s_n {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            if f_n & 1 == 0 {
                while f_n & 1 == 0 && f_n != 0 {
                    f_n >>= 1;
                    s_n >>= 1;
                }
            }
        } else {
            sr = node_hash(&sr, c);
        }
        f_n >>= 1;
        s_n >>= 1;
    }
    if s_n != 0 {
        return Err(Error::BadProof("proof too short".into()));
    }
    if fr != *old_root || sr != *new_root {
        return Err(Error::BadProof("root mismatch".into()));
    }
    Ok(())
}

/// Incremental root computation over a stream of leaves (the verifier's "compact range").
#[derive(Debug, Default, Clone)]
pub struct CompactRange {
    size: u64,
    /// Roots of the perfect subtrees, largest first.
    stack: Vec<Hash>,
}

impl CompactRange {
    /// Appends one leaf hash.
    pub fn push(&mut self, leaf: Hash) {
        let mut h = leaf;
        let mut s = self.size;
        while s & 1 == 1 {
            if let Some(left) = self.stack.pop() {
                h = node_hash(&left, &h);
            }
            s >>= 1;
        }
        self.stack.push(h);
        self.size += 1;
    }

    /// Leaves so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Root of the leaves so far.
    pub fn root(&self) -> Hash {
        let mut it = self.stack.iter().rev();
        let Some(first) = it.next() else { return empty_root() };
        it.fold(*first, |acc, left| node_hash(left, &acc))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn h(s: &str) -> Hash {
        let v = hex::decode(s).unwrap_or_default();
        v.try_into().unwrap_or([0u8; 32])
    }

    /// The RFC 6962 / transparency-dev reference leaves and roots for sizes 0–8.
    const LEAVES: [&[u8]; 8] = [
        b"",
        b"\x00",
        b"\x10",
        b"\x20\x21",
        b"\x30\x31",
        b"\x40\x41\x42\x43",
        b"\x50\x51\x52\x53\x54\x55\x56\x57",
        b"\x60\x61\x62\x63\x64\x65\x66\x67\x68\x69\x6a\x6b\x6c\x6d\x6e\x6f",
    ];
    const ROOTS: [&str; 9] = [
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

    fn leaves() -> Vec<Hash> {
        LEAVES.iter().map(|l| leaf_hash(l)).collect()
    }

    #[test]
    fn known_answer_roots_for_sizes_0_to_8() {
        let l = leaves();
        for (size, want) in ROOTS.iter().enumerate() {
            let slice = l.get(..size).unwrap_or_default();
            assert_eq!(root_of(slice), h(want), "size {size}");
            assert_eq!(root(slice, size as u64).ok(), Some(h(want)), "size {size} via nodes");
            let mut c = CompactRange::default();
            slice.iter().for_each(|x| c.push(*x));
            assert_eq!(c.root(), h(want), "size {size} via compact range");
        }
    }

    #[test]
    fn known_answer_inclusion_proof() {
        let l = leaves();
        let p = inclusion_proof(l.as_slice(), 0, 8).unwrap_or_default();
        let want = [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ];
        assert_eq!(p, want.iter().map(|w| h(w)).collect::<Vec<_>>());
    }

    fn tree(n: usize) -> Vec<Hash> {
        (0..n).map(|i| leaf_hash(&(i as u64).to_be_bytes())).collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

        #[test]
        fn every_inclusion_proof_verifies(size in 1usize..300, pick in 0usize..300) {
            let t = tree(size);
            let index = (pick % size) as u64;
            let r = root_of(&t);
            let p = inclusion_proof(t.as_slice(), index, size as u64).unwrap_or_default();
            prop_assert!(verify_inclusion(&t[index as usize], index, size as u64, &p, &r).is_ok());
            // A different leaf or a different index fails.
            let other = leaf_hash(b"forged");
            prop_assert!(verify_inclusion(&other, index, size as u64, &p, &r).is_err());
            if size > 1 {
                let wrong = (index + 1) % size as u64;
                prop_assert!(verify_inclusion(&t[index as usize], wrong, size as u64, &p, &r).is_err());
            }
        }

        #[test]
        fn any_two_sizes_are_consistent(a in 0usize..300, b in 0usize..300) {
            let (old, new) = if a <= b { (a, b) } else { (b, a) };
            let t = tree(new.max(1));
            let t = &t[..new];
            let (ro, rn) = (root_of(&t[..old]), root_of(t));
            let p = consistency_proof(t, old as u64, new as u64).unwrap_or_default();
            prop_assert!(verify_consistency(old as u64, new as u64, &ro, &rn, &p).is_ok());
            if old > 0 && old < new {
                let forged = leaf_hash(b"forged");
                prop_assert!(verify_consistency(old as u64, new as u64, &forged, &rn, &p).is_err());
                prop_assert!(verify_consistency(old as u64, new as u64, &ro, &forged, &p).is_err());
            }
        }
    }
}
