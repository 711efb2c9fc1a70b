//! C2SP tlog-tiles: tile geometry and paths (`tile/<L>/<N>[.p/<W>]`,
//! `tile/entries/<N>[.p/<W>]`), as pure functions.

use crate::Error;

/// Tile height: each tile holds up to 2^8 = 256 hashes.
pub const HEIGHT: u8 = 8;
/// Hashes (or entries) in a full tile.
pub const WIDTH: u64 = 256;

/// Encodes a tile index as path elements of three digits, all but the last prefixed with `x`
/// (`1234067` → `x001/x234/067`).
pub fn encode_index(n: u64) -> String {
    let s = n.to_string();
    let pad = (3 - s.len() % 3) % 3;
    let s = format!("{}{s}", "0".repeat(pad));
    let groups: Vec<&str> = s.as_bytes().chunks(3).filter_map(|c| std::str::from_utf8(c).ok()).collect();
    let last = groups.len().saturating_sub(1);
    groups
        .iter()
        .enumerate()
        .map(|(i, g)| if i < last { format!("x{g}") } else { (*g).to_string() })
        .collect::<Vec<_>>()
        .join("/")
}

/// What a tile path names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TilePath {
    /// A hash tile at level `level`.
    Hashes {
        /// Tile level (tree level `8 * level`).
        level: u8,
        /// Tile index.
        index: u64,
        /// Width if partial.
        width: Option<u16>,
    },
    /// An entry bundle.
    Entries {
        /// Bundle index.
        index: u64,
        /// Width if partial.
        width: Option<u16>,
    },
}

/// The path of a tile.
pub fn path(t: TilePath) -> String {
    let (prefix, index, width) = match t {
        TilePath::Hashes { level, index, width } => (level.to_string(), index, width),
        TilePath::Entries { index, width } => ("entries".to_string(), index, width),
    };
    let mut p = format!("tile/{prefix}/{}", encode_index(index));
    if let Some(w) = width {
        p.push_str(&format!(".p/{w}"));
    }
    p
}

/// Parses a path below `tile/` (e.g. `0/x001/234.p/17`). Refuses non-canonical forms.
pub fn parse(p: &str) -> Result<TilePath, Error> {
    let bad = || Error::Range(format!("`{}` is not a tile path", p.chars().take(80).collect::<String>()));
    let (main, width) = match p.split_once(".p/") {
        Some((m, w)) => {
            let w: u16 = w.parse().map_err(|_| bad())?;
            if w == 0 || u64::from(w) >= WIDTH || w.to_string() != p.rsplit('/').next().unwrap_or_default() {
                return Err(bad());
            }
            (m, Some(w))
        }
        None => (p, None),
    };
    let mut parts = main.split('/');
    let first = parts.next().ok_or_else(bad)?;
    let rest: Vec<&str> = parts.collect();
    if rest.is_empty() || rest.len() > 7 {
        return Err(bad());
    }
    let mut digits = String::new();
    let last = rest.len() - 1;
    for (i, g) in rest.iter().enumerate() {
        let g = if i < last { g.strip_prefix('x').ok_or_else(bad)? } else { g };
        if g.len() != 3 || !g.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        digits.push_str(g);
    }
    let index: u64 = digits.parse().map_err(|_| bad())?;
    if encode_index(index) != rest.join("/") {
        return Err(bad());
    }
    if first == "entries" {
        return Ok(TilePath::Entries { index, width });
    }
    let level: u8 = first.parse().map_err(|_| bad())?;
    if level > 63 || level.to_string() != first {
        return Err(bad());
    }
    Ok(TilePath::Hashes { level, index, width })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_encoding_matches_the_spec() {
        assert_eq!(encode_index(0), "000");
        assert_eq!(encode_index(5), "005");
        assert_eq!(encode_index(1234067), "x001/x234/067");
        assert_eq!(path(TilePath::Hashes { level: 0, index: 1234067, width: None }), "tile/0/x001/x234/067");
        assert_eq!(path(TilePath::Hashes { level: 1, index: 1, width: Some(42) }), "tile/1/001.p/42");
        assert_eq!(path(TilePath::Entries { index: 3, width: None }), "tile/entries/003");
    }

    #[test]
    fn parse_round_trips_and_refuses_non_canonical() {
        for t in [
            TilePath::Hashes { level: 0, index: 1234067, width: None },
            TilePath::Hashes { level: 2, index: 0, width: Some(255) },
            TilePath::Entries { index: 999_999, width: Some(1) },
        ] {
            assert_eq!(parse(path(t).strip_prefix("tile/").unwrap()), Ok(t));
        }
        for bad in [
            "0/5",
            "0/0005",
            "0/x000/005",
            "00/005",
            "0/005.p/0",
            "0/005.p/256",
            "0/005.p/07",
            "64/000",
            "0/",
            "x/000",
            "0/abc",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}

/// One tile row: level, index, and its hashes (full when 256).
pub type TileRow = (u8, u64, Vec<crate::Hash>);

/// Integrates new leaf hashes into the tiles of a tree of `size` leaves. `load(level, index)`
/// returns the stored hashes of a tile (empty if none). Returns every row that changed; full
/// tiles roll up into the level above.
pub fn append_leaves(
    size: u64,
    leaves: &[crate::Hash],
    mut load: impl FnMut(u8, u64) -> Result<Vec<crate::Hash>, Error>,
) -> Result<Vec<TileRow>, Error> {
    // Working tile per level: (index, hashes, dirty).
    let mut work: Vec<(u64, Vec<crate::Hash>, bool)> = Vec::new();
    let mut out = Vec::new();
    for leaf in leaves {
        let mut level: u8 = 0;
        let mut h = *leaf;
        loop {
            let li = usize::from(level);
            if work.len() <= li {
                // Complete nodes at this tile level before this append.
                let count = size.checked_shr(u32::from(level) * u32::from(HEIGHT)).unwrap_or(0);
                let index = count / WIDTH;
                let existing = if count % WIDTH == 0 { Vec::new() } else { load(level, index)? };
                work.push((index, existing, false));
            }
            let Some(slot) = work.get_mut(li) else { return Err(Error::Range("tile level".into())) };
            slot.1.push(h);
            slot.2 = true;
            if slot.1.len() as u64 == WIDTH {
                let full = std::mem::take(&mut slot.1);
                let root = crate::merkle::root_of(&full);
                out.push((level, slot.0, full));
                slot.0 += 1;
                slot.2 = false;
                h = root;
                level = level.checked_add(1).ok_or_else(|| Error::Range("tree too large".into()))?;
                continue;
            }
            break;
        }
    }
    for (level, (index, hashes, dirty)) in work.into_iter().enumerate() {
        if dirty && !hashes.is_empty() {
            out.push((u8::try_from(level).unwrap_or(u8::MAX), index, hashes));
        }
    }
    Ok(out)
}

/// Complete-subtree hashes answered from stored tiles. `fetch(level, index)` returns a tile's
/// hashes; results are cached for the life of the value (one proof or one root).
pub struct TileNodes<F> {
    fetch: F,
    cache: std::cell::RefCell<TileCache>,
}

type TileCache = std::collections::HashMap<(u8, u64), std::rc::Rc<Vec<crate::Hash>>>;

impl<F: Fn(u8, u64) -> Result<Vec<crate::Hash>, Error>> TileNodes<F> {
    /// A node source over a tile fetcher.
    pub fn new(fetch: F) -> Self {
        TileNodes { fetch, cache: std::cell::RefCell::new(std::collections::HashMap::new()) }
    }

    fn tile(&self, level: u8, index: u64) -> Result<std::rc::Rc<Vec<crate::Hash>>, Error> {
        if let Some(t) = self.cache.borrow().get(&(level, index)) {
            return Ok(t.clone());
        }
        let t = std::rc::Rc::new((self.fetch)(level, index)?);
        self.cache.borrow_mut().insert((level, index), t.clone());
        Ok(t)
    }
}

impl<F: Fn(u8, u64) -> Result<Vec<crate::Hash>, Error>> crate::merkle::NodeSource for TileNodes<F> {
    fn node(&self, level: u8, index: u64) -> Result<crate::Hash, Error> {
        let tile_level = level / HEIGHT;
        let r = u32::from(level % HEIGHT);
        let first = index.checked_shl(r).ok_or_else(|| Error::Range("node index".into()))?;
        let tile = self.tile(tile_level, first / WIDTH)?;
        let start = usize::try_from(first % WIDTH).map_err(|e| Error::Range(e.to_string()))?;
        let hashes = tile
            .get(start..start + (1usize << r))
            .ok_or_else(|| Error::Source(format!("tile {tile_level}/{} lacks node {level}/{index}", first / WIDTH)))?;
        Ok(crate::merkle::root_of(hashes))
    }
}

#[cfg(test)]
mod tile_tests {
    use std::collections::HashMap;

    use super::*;
    use crate::merkle::{self, NodeSource};

    #[test]
    fn tiles_built_in_batches_answer_roots_and_proofs() {
        let leaves: Vec<crate::Hash> = (0..70_000u64).map(|i| merkle::leaf_hash(&i.to_be_bytes())).collect();
        let mut store: HashMap<(u8, u64), Vec<crate::Hash>> = HashMap::new();
        let mut size = 0u64;
        for batch in [1usize, 255, 1, 3000, 513, 65_536 - 3770, 4464] {
            let new = &leaves[size as usize..size as usize + batch];
            let rows = append_leaves(size, new, |l, i| Ok(store.get(&(l, i)).cloned().unwrap_or_default())).unwrap();
            for (l, i, h) in rows {
                store.insert((l, i), h);
            }
            size += batch as u64;
            let nodes = TileNodes::new(|l, i| Ok(store.get(&(l, i)).cloned().unwrap_or_default()));
            assert_eq!(merkle::root(&nodes, size).unwrap(), merkle::root_of(&leaves[..size as usize]), "size {size}");
        }
        assert_eq!(size, 70_000);
        assert_eq!(store[&(2, 0)].len(), 1, "65536 leaves roll up into one level-2 hash");
        let nodes = TileNodes::new(|l, i| Ok(store.get(&(l, i)).cloned().unwrap_or_default()));
        let root = merkle::root(&nodes, size).unwrap();
        for idx in [0u64, 255, 256, 65_535, 65_536, 69_999] {
            let p = merkle::inclusion_proof(&nodes, idx, size).unwrap();
            merkle::verify_inclusion(&leaves[idx as usize], idx, size, &p, &root).unwrap();
        }
        assert!(nodes.node(0, 70_000).is_err());
    }
}
