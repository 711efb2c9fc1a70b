//! `mamori import FILE.ndjson…`: bulk ingestion of FHIR NDJSON (one resource per line, as Bulk
//! Data exports write it), through [`mamori_records::ndjson::Importer`] (shared with
//! `POST /fhir/$import`). A line that is refused is reported with its file and line number and
//! nothing of it is stored; the rest still go in. Progress goes to stderr when it is a terminal.

use crate::fail::{Fallible, context};
use crate::progress::Progress;
use mamori_app::messages::Lang;
use std::io::BufRead;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

/// The import's figures, shown as a bar of the bytes read.
struct Figures {
    /// Bytes in all files, and bytes read so far (progress without reading the files twice).
    total: u64,
    read: u64,
    done: usize,
    refused: usize,
}

impl Figures {
    fn line(&self, secs: f64, lang: Lang) -> String {
        let rate = self.done as f64 / secs;
        let pct = usize::try_from((self.read * 100).checked_div(self.total).unwrap_or(100).min(100)).unwrap_or(100);
        let filled = pct / 5;
        let bar: String = "#".repeat(filled) + &".".repeat(20 - filled.min(20));
        match lang {
            Lang::Ja => format!(
                "[{bar}] {pct:>3}%（バイト数）; 取り込み {} 件、拒否 {} 件、毎秒 {rate:.0} 件",
                self.done, self.refused
            ),
            Lang::En => {
                format!(
                    "[{bar}] {pct:>3}% of the bytes read; {} imported, {} refused, {rate:.0}/s",
                    self.done, self.refused
                )
            }
        }
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
    let started = Instant::now();
    let lang = Lang::from_env();
    let mut progress = Progress::on_stderr(false);
    let mut p = Figures { total, read: 0, done: 0, refused: 0 };
    for f in files {
        let file = std::fs::File::open(f).map_err(context(format!("cannot read `{}`", f.display())))?;
        let source = f.display().to_string();
        for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
            let line = line.map_err(context(format!("cannot read `{source}`")))?;
            p.read += line.len() as u64 + 1;
            importer.line(&source, n + 1, &line);
            (p.done, p.refused) = (importer.done, importer.refused);
            progress.show(false, |secs| p.line(secs, lang));
        }
        importer.flush();
        (p.done, p.refused) = (importer.done, importer.refused);
    }
    let refusals: Vec<String> =
        importer.refusals.iter().map(|r| format!("{}:{}: {}", r.source, r.line, r.why)).collect();
    progress.show(true, |secs| p.line(secs, lang));
    progress.finish();
    for r in refusals.iter().take(1000) {
        eprintln!("refused {r}");
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "imported {} resources from {} file(s) in {secs:.1} s ({:.0}/s); {} line(s) refused",
        p.done,
        files.len(),
        p.done as f64 / secs.max(1e-3),
        p.refused
    );
    Ok(if p.refused == 0 { ExitCode::SUCCESS } else { ExitCode::from(1) })
}
