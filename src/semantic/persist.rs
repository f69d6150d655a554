//! The semantic index's graphs saved next to the RDB file, so a restart loads them instead of
//! building them again (a 1M-vector graph takes about 20 minutes to build on 2 cores; it loads
//! in seconds).
//!
//! Files, in Redis's working directory (`dir`), named after `dbfilename`:
//! - `<dbfilename>.qa-graph`: the manifest: for each saved graph its scope (database, cache,
//!   scope digest), dimensions, graph file length and CRC-32, and its members (graph key and
//!   entry key); then the CRC-32 of the manifest itself.
//! - `<dbfilename>.qa-graph.<seq>.<n>`: graph `n` of checkpoint `seq`, in usearch's own format.
//!
//! A checkpoint writes new graph files under a new `seq`, then the manifest (to a temporary
//! name, renamed over the old one), then deletes the files of older checkpoints: a crash
//! at any point leaves the previous checkpoint or the new one, never a mix.
//!
//! The files are only a head start, never trusted for an answer: after a load, the rebuild
//! scan reads every entry as before, and a saved vector is used only for an entry that is
//! there, with the same key, scope and vector (see `index::Index::adopt`); whatever is left
//! unclaimed when the scan ends is removed. A file that fails its CRC, its lengths or
//! usearch's own checks is ignored (the graph is built again, as without files).

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use super::index::{Restored, ScopeKey};

const MAGIC: &[u8; 8] = b"QAGRAPH1";
/// Keys and caches longer than this in a manifest are refused as corrupt (entry keys are
/// short: `qa:{<cache>}:<32 hex>`; caches are at most a few hundred bytes).
const MAX_NAME: usize = 1 << 16;

/// One graph to save: its scope, dimensions, the graph and its members (graph key, entry key).
pub struct ToSave<'a> {
    pub scope: &'a ScopeKey,
    pub dims: usize,
    pub graph: &'a usearch::Index,
    pub members: Vec<(u64, std::sync::Arc<[u8]>)>,
}

/// The manifest's path for `base` (`<dir>/<dbfilename>`).
pub fn manifest_path(base: &Path) -> PathBuf {
    let mut s = base.as_os_str().to_owned();
    s.push(".qa-graph");
    PathBuf::from(s)
}

fn graph_path(base: &Path, seq: u64, n: usize) -> PathBuf {
    let mut s = manifest_path(base).into_os_string();
    s.push(format!(".{seq}.{n}"));
    PathBuf::from(s)
}

/// CRC-32 and length of a file, read in 1 MiB pieces.
fn file_crc(path: &Path) -> std::io::Result<(u32, u64)> {
    let mut f = fs::File::open(path)?;
    let mut h = crc32fast::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut len = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        len += n as u64;
    }
    Ok((h.finalize(), len))
}

/// What a checkpoint wrote.
#[derive(Debug, Default, Clone, Copy)]
pub struct Written {
    pub graphs: usize,
    pub vectors: usize,
    pub bytes: u64,
}

/// Saves `graphs` as checkpoint `seq` of `base`, replacing the previous one. With no graphs,
/// removes the files of earlier checkpoints (nothing is left to restore).
pub fn save(base: &Path, seq: u64, graphs: &[ToSave<'_>]) -> Result<Written, String> {
    let manifest = manifest_path(base);
    if graphs.is_empty() {
        let _ = fs::remove_file(&manifest);
        remove_other_checkpoints(base, None);
        return Ok(Written::default());
    }
    let mut listed = Vec::with_capacity(graphs.len());
    let mut written = Written::default();
    for (n, g) in graphs.iter().enumerate() {
        let path = graph_path(base, seq, n);
        let p = path.to_str().ok_or("graph path is not UTF-8")?;
        g.graph
            .save(p)
            .map_err(|e| format!("saving {}: {e}", path.display()))?;
        let (crc, len) =
            file_crc(&path).map_err(|e| format!("reading back {}: {e}", path.display()))?;
        listed.push((g.scope, g.dims, len, crc, &g.members[..]));
        written.graphs += 1;
        written.vectors += g.members.len();
        written.bytes += len;
    }
    let out = encode_manifest(seq, &listed);
    let mut tmp = manifest.clone().into_os_string();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let write = || -> std::io::Result<()> {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(&out)?;
        f.sync_all()?;
        fs::rename(&tmp, &manifest)
    };
    if let Err(e) = write() {
        let _ = fs::remove_file(&tmp);
        remove_other_checkpoints(base, Some(seq + 1)); // this checkpoint's own files too
        return Err(format!("writing {}: {e}", manifest.display()));
    }
    written.bytes += out.len() as u64;
    remove_other_checkpoints(base, Some(seq));
    Ok(written)
}

/// One graph's manifest entry: scope, dimensions, file length, file CRC-32, members (graph
/// key, entry key).
type Entry<'a, K> = (&'a ScopeKey, usize, u64, u32, &'a [(u64, K)]);

/// The manifest's bytes (the format [`parse_manifest`] reads), its CRC-32 last.
fn encode_manifest<K: AsRef<[u8]>>(seq: u64, graphs: &[Entry<'_, K>]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&(graphs.len() as u32).to_le_bytes());
    for ((db, cache, digest), dims, len, crc, members) in graphs {
        out.extend_from_slice(&db.to_le_bytes());
        out.extend_from_slice(&(cache.len() as u32).to_le_bytes());
        out.extend_from_slice(cache);
        out.extend_from_slice(digest);
        out.extend_from_slice(&(*dims as u32).to_le_bytes());
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&crc.to_le_bytes());
        out.extend_from_slice(&(members.len() as u32).to_le_bytes());
        for (label, key) in members.iter() {
            let key = key.as_ref();
            out.extend_from_slice(&label.to_le_bytes());
            out.extend_from_slice(&(key.len() as u32).to_le_bytes());
            out.extend_from_slice(key);
        }
    }
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Deletes graph files of `base` whose checkpoint is not `keep`.
fn remove_other_checkpoints(base: &Path, keep: Option<u64>) {
    let prefix = manifest_path(base);
    let (Some(dir), Some(name)) = (prefix.parent(), prefix.file_name()) else {
        return;
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let Some(name) = name.to_str() else { return };
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let ours = format!("{name}.");
    for e in entries.flatten() {
        let f = e.file_name();
        let Some(f) = f.to_str() else { continue };
        let Some(rest) = f.strip_prefix(&ours) else {
            continue;
        };
        // `<seq>.<n>` only (not the manifest's `.tmp`).
        let mut parts = rest.split('.');
        let (Some(seq), Some(n), None) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        let (Ok(seq), Ok(_)) = (seq.parse::<u64>(), n.parse::<usize>()) else {
            continue;
        };
        if Some(seq) != keep {
            let _ = fs::remove_file(e.path());
        }
    }
}

/// A manifest's entry for one graph.
#[derive(Debug, PartialEq)]
pub struct Listed {
    pub scope: ScopeKey,
    pub dims: usize,
    pub len: u64,
    pub crc: u32,
    pub members: Vec<(u64, Box<[u8]>)>,
}

/// A manifest read: its checkpoint number and graphs.
#[derive(Debug, PartialEq)]
pub struct Manifest {
    pub seq: u64,
    pub graphs: Vec<Listed>,
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
}

/// Parses a manifest; `None` if anything is off (magic, CRC, lengths, trailing bytes).
pub fn parse_manifest(b: &[u8]) -> Option<Manifest> {
    let body = b.get(..b.len().checked_sub(4)?)?;
    let crc = u32::from_le_bytes(b.get(body.len()..)?.try_into().ok()?);
    if crc32fast::hash(body) != crc {
        return None;
    }
    let mut r = Reader(body);
    if r.take(8)? != MAGIC {
        return None;
    }
    let seq = r.u64()?;
    let count = r.u32()? as usize;
    let mut graphs = Vec::with_capacity(count.min(1024));
    for _ in 0..count {
        let db = r.u32()? as i32;
        let clen = r.u32()? as usize;
        if clen > MAX_NAME {
            return None;
        }
        let cache: Box<[u8]> = r.take(clen)?.into();
        let digest: [u8; 16] = r.take(16)?.try_into().ok()?;
        let dims = r.u32()? as usize;
        if dims == 0 || dims > super::index::MAX_DIMS {
            return None;
        }
        let len = r.u64()?;
        let fcrc = r.u32()?;
        let n = r.u32()? as usize;
        // Each member takes at least 12 bytes: a count past what is left is corrupt.
        if n > r.0.len() / 12 {
            return None;
        }
        let mut members = Vec::with_capacity(n);
        for _ in 0..n {
            let label = r.u64()?;
            let klen = r.u32()? as usize;
            if klen > MAX_NAME {
                return None;
            }
            members.push((label, r.take(klen)?.into()));
        }
        graphs.push(Listed {
            scope: (db, cache, digest),
            dims,
            len,
            crc: fcrc,
            members,
        });
    }
    r.0.is_empty().then_some(Manifest { seq, graphs })
}

/// What a restore found: the graphs that passed every check, and a note for the log on
/// each one that did not.
#[derive(Default)]
pub struct Found {
    pub seq: u64,
    pub graphs: Vec<Restored>,
    pub refused: Vec<String>,
}

/// Reads the checkpoint of `base`, if there is one. Graphs that fail a check are left out
/// (and named in `refused`); an unreadable manifest leaves everything out.
pub fn load(base: &Path, open: impl Fn(&Path, &Listed) -> Result<Restored, String>) -> Found {
    let mut found = Found::default();
    let manifest = manifest_path(base);
    let bytes = match fs::read(&manifest) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return found,
        Err(e) => {
            found.refused.push(format!("{}: {e}", manifest.display()));
            return found;
        }
    };
    let Some(m) = parse_manifest(&bytes) else {
        found
            .refused
            .push(format!("{}: corrupt (ignored)", manifest.display()));
        return found;
    };
    found.seq = m.seq;
    for (n, g) in m.graphs.iter().enumerate() {
        let path = graph_path(base, m.seq, n);
        match file_crc(&path) {
            Ok((crc, len)) if crc == g.crc && len == g.len => {}
            Ok(_) => {
                found.refused.push(format!(
                    "{}: length or CRC differs (ignored)",
                    path.display()
                ));
                continue;
            }
            Err(e) => {
                found.refused.push(format!("{}: {e}", path.display()));
                continue;
            }
        }
        match open(&path, g) {
            Ok(r) => found.graphs.push(r),
            Err(e) => found.refused.push(format!("{}: {e}", path.display())),
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest_bytes(seq: u64, graphs: &[Listed]) -> Vec<u8> {
        let entries: Vec<Entry<'_, Box<[u8]>>> = graphs
            .iter()
            .map(|g| (&g.scope, g.dims, g.len, g.crc, &g.members[..]))
            .collect();
        encode_manifest(seq, &entries)
    }

    fn listed() -> Vec<Listed> {
        vec![
            Listed {
                scope: (0, b"faq"[..].into(), [7; 16]),
                dims: 384,
                len: 1234,
                crc: 99,
                members: vec![
                    (1, b"qa:{faq}:00"[..].into()),
                    (5 << 32 | 2, b"k"[..].into()),
                ],
            },
            Listed {
                scope: (3, b""[..].into(), [1; 16]),
                dims: 8,
                len: 0,
                crc: 0,
                members: vec![],
            },
        ]
    }

    #[test]
    fn manifests_round_trip_and_every_damage_is_refused() {
        let b = manifest_bytes(42, &listed());
        let m = parse_manifest(&b).unwrap();
        assert_eq!(m.seq, 42);
        assert_eq!(m.graphs, listed());
        // Every truncation, and every single flipped bit, is refused.
        for n in 0..b.len() {
            assert!(parse_manifest(&b[..n]).is_none(), "truncated to {n}");
        }
        for i in 0..b.len() {
            for bit in 0..8 {
                let mut c = b.clone();
                c[i] ^= 1 << bit;
                assert!(parse_manifest(&c).is_none(), "byte {i} bit {bit}");
            }
        }
        // A correct CRC over nonsense: refused by its lengths, not by a panic.
        let mut lying = manifest_bytes(1, &listed());
        lying.truncate(lying.len() - 4);
        lying[24..28].copy_from_slice(&u32::MAX.to_le_bytes()); // a huge cache length
        let crc = crc32fast::hash(&lying);
        lying.extend_from_slice(&crc.to_le_bytes());
        assert!(parse_manifest(&lying).is_none());
        let mut extra = manifest_bytes(1, &listed());
        extra.truncate(extra.len() - 4);
        extra.push(0);
        let crc = crc32fast::hash(&extra);
        extra.extend_from_slice(&crc.to_le_bytes());
        assert!(parse_manifest(&extra).is_none(), "trailing bytes");
    }

    #[test]
    fn old_checkpoints_are_removed_and_other_files_kept() {
        let dir = std::env::temp_dir().join(format!("qa-persist-test-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let base = dir.join("dump.rdb");
        for f in [
            "dump.rdb.qa-graph.1.0",
            "dump.rdb.qa-graph.2.0",
            "dump.rdb.qa-graph.2.1",
            "dump.rdb.qa-graph",
            "dump.rdb",
            "dump.rdb.qa-graph.x.0",
            "other.rdb.qa-graph.1.0",
        ] {
            fs::write(dir.join(f), b"x").unwrap();
        }
        remove_other_checkpoints(&base, Some(2));
        let mut left: Vec<String> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                "dump.rdb",
                "dump.rdb.qa-graph",
                "dump.rdb.qa-graph.2.0",
                "dump.rdb.qa-graph.2.1",
                "dump.rdb.qa-graph.x.0",
                "other.rdb.qa-graph.1.0"
            ]
        );
        // No graphs: the manifest and every checkpoint's files go.
        save(&base, 3, &[]).unwrap();
        assert!(!dir.join("dump.rdb.qa-graph").exists());
        assert!(!dir.join("dump.rdb.qa-graph.2.0").exists());
        assert!(dir.join("dump.rdb").exists());
        // Nothing there: nothing restored, nothing refused.
        let f = load(&base, |_, _| Err("not called".into()));
        assert!(f.graphs.is_empty() && f.refused.is_empty());
        fs::write(dir.join("dump.rdb.qa-graph"), b"garbage").unwrap();
        let f = load(&base, |_, _| Err("not called".into()));
        assert!(f.graphs.is_empty());
        assert_eq!(f.refused.len(), 1, "{:?}", f.refused);
        let _ = fs::remove_dir_all(&dir);
    }
}
