//! `mamori import FILE.ndjson…`: bulk ingestion of FHIR NDJSON (one resource per line, as Bulk
//! Data exports write it). Each line is parsed and validated like a REST write; resources keep
//! their ids (update-as-create, so references between them hold) or get one. Lines are written in
//! batches, one transaction and one fsync per batch, each resource with its Provenance and audit
//! entry. A line that is refused is reported with its file and line number and nothing of it is
//! stored; the rest still go in. Progress goes to stderr.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use mamori_records::{ParsedBody, RecordError, RequestContext, ResourceId, ResourceType, parse_resource};

type Item = (ResourceType, ResourceId, ParsedBody);

struct Progress {
    /// Bytes in all files, and bytes read so far (progress without reading the files twice).
    total: u64,
    read: u64,
    done: usize,
    refused: usize,
    started: Instant,
    last: Instant,
    tty: bool,
}

impl Progress {
    fn show(&mut self, force: bool) {
        if !force && self.last.elapsed().as_millis() < 200 {
            return;
        }
        self.last = Instant::now();
        let rate = self.done as f64 / self.started.elapsed().as_secs_f64().max(1e-3);
        let pct = usize::try_from((self.read * 100).checked_div(self.total).unwrap_or(100).min(100)).unwrap_or(100);
        let filled = pct / 5;
        let bar: String = "#".repeat(filled) + &".".repeat(20 - filled.min(20));
        let line =
            format!("[{bar}] {pct:>3}% {}/{} imported, {} refused, {rate:.0}/s", self.done, self.total, self.refused);
        let mut err = std::io::stderr();
        if self.tty {
            let _ = write!(err, "\r{line}");
        } else if force {
            let _ = writeln!(err, "{line}");
        }
        let _ = err.flush();
    }
}

fn item_of(line: &str) -> Result<Item, String> {
    let ParsedBody(mut v) = parse_resource(line.as_bytes()).map_err(|e| describe(&e))?;
    let rt = v.get("resourceType").and_then(serde_json::Value::as_str).ok_or("no resourceType")?.to_string();
    let rt = ResourceType::parse(&rt).map_err(|e| describe(&e))?;
    let id = match v.get("id").and_then(serde_json::Value::as_str) {
        Some(id) => ResourceId::parse(id).map_err(|e| describe(&e))?,
        None => {
            let id = ResourceId::generate().map_err(|e| describe(&e))?;
            if let Some(o) = v.as_object_mut() {
                o.insert("id".into(), id.to_string().into());
            }
            id
        }
    };
    Ok((rt, id, ParsedBody(v)))
}

fn describe(e: &RecordError) -> String {
    let s = e.to_string();
    s.chars().take(300).collect()
}

/// Runs the import; exit 0 when every line went in, 1 when some were refused.
pub fn run(data_dir: &std::path::Path, files: &[PathBuf], operator: &str, batch: usize) -> Result<ExitCode, String> {
    if files.is_empty() {
        return Err("give at least one NDJSON file".into());
    }
    let mut total = 0;
    for f in files {
        total += std::fs::metadata(f).map_err(|e| format!("cannot read `{}`: {e}", f.display()))?.len();
    }
    let node = crate::open_node(data_dir)?;
    let ctx = RequestContext::of(mamori_records::Actor::operator(operator));
    let now = Instant::now();
    let tty = std::io::stderr().is_terminal();
    let mut p = Progress { total, read: 0, done: 0, refused: 0, started: now, last: now, tty };
    let mut refusals: Vec<String> = Vec::new();
    let batch = batch.clamp(1, 10_000);
    for f in files {
        let file = std::fs::File::open(f).map_err(|e| format!("cannot read `{}`: {e}", f.display()))?;
        // The batch and the line number of each of its items.
        let mut pending: Vec<Item> = Vec::with_capacity(batch);
        let mut lines: Vec<usize> = Vec::with_capacity(batch);
        let flush = |pending: &mut Vec<Item>, lines: &mut Vec<usize>, p: &mut Progress, refusals: &mut Vec<String>| {
            if pending.is_empty() {
                return;
            }
            match node.records.import_batch(&ctx, pending) {
                Ok(n) => p.done += n,
                Err(_) => {
                    // Find the culprits one by one; the others still go in.
                    for (item, line) in pending.iter().zip(lines.iter()) {
                        match node.records.import_batch(&ctx, std::slice::from_ref(item)) {
                            Ok(n) => p.done += n,
                            Err(e) => {
                                p.refused += 1;
                                refusals.push(format!("{}:{line}: {}", f.display(), describe(&e)));
                            }
                        }
                    }
                }
            }
            pending.clear();
            lines.clear();
            p.show(false);
        };
        for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
            let line = line.map_err(|e| format!("cannot read `{}`: {e}", f.display()))?;
            p.read += line.len() as u64 + 1;
            if line.trim().is_empty() {
                continue;
            }
            match item_of(&line) {
                Ok(item) => {
                    pending.push(item);
                    lines.push(n + 1);
                }
                Err(why) => {
                    p.refused += 1;
                    refusals.push(format!("{}:{}: {why}", f.display(), n + 1));
                }
            }
            if pending.len() >= batch {
                flush(&mut pending, &mut lines, &mut p, &mut refusals);
            }
        }
        flush(&mut pending, &mut lines, &mut p, &mut refusals);
    }
    p.show(true);
    if p.tty {
        eprintln!();
    }
    for r in refusals.iter().take(1000) {
        eprintln!("refused {r}");
    }
    let secs = p.started.elapsed().as_secs_f64();
    println!(
        "imported {} resources from {} file(s) in {secs:.1} s ({:.0}/s); {} line(s) refused",
        p.done,
        files.len(),
        p.done as f64 / secs.max(1e-3),
        p.refused
    );
    Ok(if p.refused == 0 { ExitCode::SUCCESS } else { ExitCode::from(1) })
}
