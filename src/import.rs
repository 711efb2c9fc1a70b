//! `mamori import FILE.ndjson…`: bulk ingestion of FHIR NDJSON (one resource per line, as Bulk
//! Data exports write it), through [`mamori_records::ndjson::Importer`] (shared with
//! `POST /fhir/$import`). A line that is refused is reported with its file and line number and
//! nothing of it is stored; the rest still go in. Progress goes to stderr.

use crate::fail::{Fallible, context};
use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

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
        let line = format!(
            "[{bar}] {pct:>3}% of the bytes read; {} imported, {} refused, {rate:.0}/s",
            self.done, self.refused
        );
        let mut err = std::io::stderr();
        if self.tty {
            let _ = write!(err, "\r{line}");
        } else if force {
            let _ = writeln!(err, "{line}");
        }
        let _ = err.flush();
    }
}

/// Runs the import; exit 0 when every line went in, 1 when some were refused.
pub fn run(dir: &crate::cli::DataDir, files: &[PathBuf], operator: &str, batch: usize) -> Fallible<ExitCode> {
    if files.is_empty() {
        return Err("give at least one NDJSON file".into());
    }
    let mut total = 0;
    for f in files {
        total += std::fs::metadata(f).map_err(context(format!("cannot read `{}`", f.display())))?.len();
    }
    let node = dir.open()?;
    let mut importer = mamori_app::import::importer(&mamori_app::Ctx::operator(&node, operator), &node, batch)?;
    let now = Instant::now();
    let tty = std::io::stderr().is_terminal();
    let mut p = Progress { total, read: 0, done: 0, refused: 0, started: now, last: now, tty };
    for f in files {
        let file = std::fs::File::open(f).map_err(context(format!("cannot read `{}`", f.display())))?;
        let source = f.display().to_string();
        for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
            let line = line.map_err(context(format!("cannot read `{source}`")))?;
            p.read += line.len() as u64 + 1;
            importer.line(&source, n + 1, &line);
            (p.done, p.refused) = (importer.done, importer.refused);
            p.show(false);
        }
        importer.flush();
        (p.done, p.refused) = (importer.done, importer.refused);
    }
    let refusals: Vec<String> =
        importer.refusals.iter().map(|r| format!("{}:{}: {}", r.source, r.line, r.why)).collect();
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
