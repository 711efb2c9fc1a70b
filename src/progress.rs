//! Progress of a long command (`fsck`, `audit verify`, `audit export`, `import`) on standard
//! error, only when it is a terminal: one line rewritten in place at most five times a second,
//! and the last figures once at the end. Piped or redirected, nothing is written, so scripts and
//! logs see only the command's result.

use std::io::{IsTerminal, Write};
use std::time::Instant;

use mamori_app::messages::Lang;

/// A line of progress on a terminal.
pub struct Progress {
    started: Instant,
    last: Option<Instant>,
    shown: bool,
    tty: bool,
}

impl Progress {
    /// Progress on standard error if it is a terminal (and, with `unless_stdout_tty`, only when
    /// standard output is not the same terminal, where the command's own output goes).
    pub fn on_stderr(unless_stdout_tty: bool) -> Progress {
        let tty = std::io::stderr().is_terminal() && !(unless_stdout_tty && std::io::stdout().is_terminal());
        Progress { started: Instant::now(), last: None, shown: false, tty }
    }

    /// Whether anything will be shown.
    pub fn is_shown(&self) -> bool {
        self.tty
    }

    /// Seconds since the start.
    pub fn elapsed(&self) -> f64 {
        self.started.elapsed().as_secs_f64().max(1e-3)
    }

    /// Shows `line()` if the last line is 200 ms old (or `force`).
    pub fn show(&mut self, force: bool, line: impl FnOnce(f64) -> String) {
        if !self.tty || (!force && self.last.is_some_and(|l| l.elapsed().as_millis() < 200)) {
            return;
        }
        self.last = Some(Instant::now());
        self.shown = true;
        let mut err = std::io::stderr().lock();
        // Clear the rest of the line (ANSI EL) in case the new line is shorter.
        let _ = write!(err, "\r{}\x1b[K", line(self.elapsed()));
        let _ = err.flush();
    }

    /// Counting progress: `label` after the count, and the rate.
    pub fn count(&mut self, force: bool, done: u64, label: &Label) {
        let lang = label.lang;
        self.show(force, |secs| {
            let rate = done as f64 / secs;
            match lang {
                Lang::Ja => format!("{}: {done} {}（毎秒 {rate:.0}）", label.what, label.ja),
                Lang::En => format!("{}: {done} {} ({rate:.0}/s)", label.what, label.en),
            }
        });
    }

    /// Ends the line, if one was shown.
    pub fn finish(&mut self) {
        if self.shown {
            eprintln!();
            self.shown = false;
        }
    }
}

/// What is being counted, in both languages.
pub struct Label {
    /// The command (`fsck`, `audit verify`…).
    pub what: &'static str,
    /// After the number, in English.
    pub en: &'static str,
    /// After the number, in Japanese.
    pub ja: &'static str,
    /// The reader's language.
    pub lang: Lang,
}
