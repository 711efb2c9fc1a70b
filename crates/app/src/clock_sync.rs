//! Clock-sync monitoring (L4): asks the host's time daemon how far the clock is from its time
//! source. chrony (`chronyc -c tracking`) gives an offset; systemd-timesyncd
//! (`timedatectl show`) only whether it is synchronised. Without either the status is
//! `unknown`, which `/healthz` reports as such rather than guessing.

use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

/// Offset beyond which the server warns.
pub const MAX_OFFSET_MS: f64 = 1000.0;

/// The last observation.
#[derive(Debug, Clone)]
pub struct ClockStatus {
    /// `chrony`, `timesyncd` or `unknown`.
    pub source: &'static str,
    /// Whether the daemon says the clock is synchronised.
    pub synchronized: Option<bool>,
    /// Offset from the reference in milliseconds, if known.
    pub offset_ms: Option<f64>,
}

impl ClockStatus {
    /// Whether the clock is known to be off by more than [`MAX_OFFSET_MS`] or unsynchronised.
    pub fn drifting(&self) -> bool {
        self.offset_ms.is_some_and(|o| o.abs() > MAX_OFFSET_MS) || self.synchronized == Some(false)
    }

    /// As JSON for `/healthz`.
    pub fn to_json(&self) -> Value {
        json!({"source": self.source, "synchronized": self.synchronized, "offset_ms": self.offset_ms, "warning": self.drifting()})
    }
}

fn run(cmd: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(cmd).args(args).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Asks the time daemon once.
pub fn probe() -> ClockStatus {
    if let Some(csv) = run("chronyc", &["-c", "tracking"]) {
        // Field 5 (0-based 4) is the system time offset in seconds; field 13 the leap status.
        let f: Vec<&str> = csv.trim().split(',').collect();
        let offset = f.get(4).and_then(|s| s.parse::<f64>().ok()).map(|s| s * 1000.0);
        let normal = f.get(13).map(|s| s.trim() == "Normal");
        return ClockStatus { source: "chrony", synchronized: normal, offset_ms: offset };
    }
    if let Some(v) = run("timedatectl", &["show", "-p", "NTPSynchronized", "--value"]) {
        return ClockStatus { source: "timesyncd", synchronized: Some(v.trim() == "yes"), offset_ms: None };
    }
    ClockStatus { source: "unknown", synchronized: None, offset_ms: None }
}

/// Probes now and then every minute, logging a warning when the clock drifts.
pub fn monitor() -> Arc<Mutex<ClockStatus>> {
    let status = Arc::new(Mutex::new(probe()));
    let s = status.clone();
    std::thread::spawn(move || {
        loop {
            let st = probe();
            if st.drifting() {
                tracing::warn!(source = st.source, offset_ms = ?st.offset_ms, synchronized = ?st.synchronized, "system clock is not in sync; audit timestamps depend on it");
            }
            if let Ok(mut g) = s.lock() {
                *g = st;
            }
            std::thread::sleep(Duration::from_secs(60));
        }
    });
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drift_is_flagged() {
        let ok = ClockStatus { source: "chrony", synchronized: Some(true), offset_ms: Some(0.4) };
        assert!(!ok.drifting());
        assert!(ClockStatus { offset_ms: Some(-1500.0), ..ok.clone() }.drifting());
        assert!(ClockStatus { synchronized: Some(false), ..ok.clone() }.drifting());
        assert!(
            !ClockStatus { source: "unknown", synchronized: None, offset_ms: None }.drifting(),
            "unknown is reported, not guessed"
        );
        assert_eq!(ok.to_json()["warning"], false);
    }
}
