//! The one audit integrator (L2/L3): extends the Merkle tree from the committed prefix of the
//! log in steps, each with its own signed checkpoint. Every store runs this same code; a store
//! supplies a consistent snapshot to compute a step on ([`TreeRead`]) and an atomic "store it if
//! no one integrated meanwhile" ([`TreeStore::store_step`]).
//!
//! A step is computed without the store's writer — reading and hashing a quarter-second of
//! entries took 2–11 ms, and every write waited behind it (issue #9) — and stored with it, after
//! checking that the integrated size is still the step's starting point. Two integrators (two
//! nodes on one database, or a server and the CLI) may compute the same step; one stores it and
//! the other's is dropped, so the tree and its checkpoints are the same whoever integrated.

use crate::merkle::{self, NodeSource};
use crate::note::{Checkpoint, NoteSigner};
use crate::tiles::{self, TileNodes, TileRow};
use crate::{Error, Hash};

/// At most this many entries are integrated per step (and per checkpoint).
pub const STEP: u64 = 65_536;

/// Reads on one snapshot of the log.
pub trait TreeRead {
    /// Entries integrated into the tree (covered by the latest checkpoint).
    fn integrated(&mut self) -> Result<u64, Error>;
    /// Entries appended.
    fn size(&mut self) -> Result<u64, Error>;
    /// Entries `(from, to]` by 1-based index (leaf `i` is index `i + 1`), in order.
    fn entries(&mut self, from: u64, to: u64) -> Result<Vec<Vec<u8>>, Error>;
    /// A stored tile's hashes (empty if none).
    fn tile(&mut self, level: u8, index: u64) -> Result<Vec<Hash>, Error>;
}

/// What the integrator needs from a store.
pub trait TreeStore {
    /// Runs `f` on one read snapshot.
    fn snapshot<T>(&self, f: impl FnOnce(&mut dyn TreeRead) -> Result<T, Error>) -> Result<T, Error>;
    /// Stores a step atomically — its tile rows, its checkpoint note and the new integrated
    /// size — unless the integrated size is no longer `step.from`; `false` (nothing written)
    /// then.
    fn store_step(&self, step: &Step) -> Result<bool, Error>;
}

/// One integration step: from `from` entries to `size` (of `total` appended when computed).
#[derive(Debug, Clone)]
pub struct Step {
    /// Integrated size the step starts from.
    pub from: u64,
    /// Integrated size after the step.
    pub size: u64,
    /// Entries appended when the step was computed.
    pub total: u64,
    /// The tile rows that change.
    pub rows: Vec<TileRow>,
    /// The signed checkpoint of `size`.
    pub note: String,
}

/// Computes the next step of at most `max` entries on one snapshot; `None` when nothing is left
/// to integrate.
pub fn next_step(r: &mut dyn TreeRead, signer: &NoteSigner, origin: &str, max: u64) -> Result<Option<Step>, Error> {
    let from = r.integrated()?;
    let total = r.size()?;
    if total <= from {
        return Ok(None);
    }
    let size = from + (total - from).min(max.max(1));
    let leaves: Vec<Hash> = r.entries(from, size)?.iter().map(|e| merkle::leaf_hash(e)).collect();
    if leaves.len() as u64 != size - from {
        return Err(Error::Source(format!("audit entries {}..{size} are not contiguous", from + 1)));
    }
    let cell = std::cell::RefCell::new(r);
    let load = |l: u8, i: u64| -> Result<Vec<Hash>, Error> {
        let mut r = cell.try_borrow_mut().map_err(|e| Error::Source(e.to_string()))?;
        r.tile(l, i)
    };
    let rows = tiles::append_leaves(from, &leaves, load)?;
    // The root of the new size, from the stored tiles overlaid with the changed rows.
    let changed: std::collections::HashMap<(u8, u64), &Vec<Hash>> =
        rows.iter().map(|(l, i, h)| ((*l, *i), h)).collect();
    let root = merkle::root(
        &TileNodes::new(|l, i| match changed.get(&(l, i)) {
            Some(h) => Ok((*h).clone()),
            None => load(l, i),
        }),
        size,
    )?;
    let note = signer.sign(&Checkpoint { origin: origin.to_string(), size, root }.body())?;
    drop(changed);
    Ok(Some(Step { from, size, total, rows, note }))
}

/// Integrates everything appended so far, in steps of at most `max` entries; returns the last
/// checkpoint stored by this call (`None` if there was nothing to do, or another integrator
/// stored the step first — its checkpoint then stands).
pub fn integrate(store: &impl TreeStore, signer: &NoteSigner, origin: &str, max: u64) -> Result<Option<String>, Error> {
    let mut last = None;
    while let Some(step) = store.snapshot(|r| next_step(r, signer, origin, max))? {
        let done = step.size == step.total;
        if !store.store_step(&step)? {
            break;
        }
        last = Some(step.note);
        if done {
            break;
        }
    }
    Ok(last)
}

/// Tile-backed node source over a snapshot (proofs and roots).
pub fn nodes<'a>(r: &'a mut dyn TreeRead) -> impl NodeSource + 'a {
    let cell = std::cell::RefCell::new(r);
    TileNodes::new(move |l, i| {
        let mut r = cell.try_borrow_mut().map_err(|e| Error::Source(e.to_string()))?;
        r.tile(l, i)
    })
}
