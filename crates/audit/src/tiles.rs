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
    groups.iter().enumerate().map(|(i, g)| if i < last { format!("x{g}") } else { (*g).to_string() }).collect::<Vec<_>>().join("/")
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
        for bad in ["0/5", "0/0005", "0/x000/005", "00/005", "0/005.p/0", "0/005.p/256", "0/005.p/07", "64/000", "0/", "x/000", "0/abc"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
