//! Retry delay and lockout (A5) as a pure state machine over injected time.
//!
//! After each failure the next attempt must wait `base × 2^(failures − 1)` seconds (capped);
//! attempts inside the wait are refused without checking the password (no connection is held
//! open). After `threshold` failures the account locks for `lock_secs`; during the lock even the
//! right password fails. A lock is an alert for the security manager.

use serde::{Deserialize, Serialize};

/// Policy.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Policy {
    /// Failures before the account locks (default 10).
    pub threshold: u32,
    /// Lock length in seconds (default 30 min).
    pub lock_secs: i64,
    /// First retry delay in seconds.
    pub base_delay_secs: i64,
    /// Longest retry delay in seconds.
    pub max_delay_secs: i64,
}

impl Default for Policy {
    fn default() -> Self {
        Policy { threshold: 10, lock_secs: 30 * 60, base_delay_secs: 1, max_delay_secs: 30 }
    }
}

/// Per-account counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// Consecutive failures.
    pub failures: u32,
    /// Unix time of the last failure.
    pub last_failure: Option<i64>,
    /// Locked until this Unix time.
    pub locked_until: Option<i64>,
}

/// Whether an attempt may proceed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// Check the credentials.
    Open,
    /// Too early: try again after this many seconds.
    RetryAfter(i64),
    /// Locked until this Unix time.
    Locked(i64),
}

/// What a recorded failure led to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterFailure {
    /// Still open, with a retry delay.
    Delayed(i64),
    /// This failure locked the account (raise an alert).
    LockedNow(i64),
}

impl Policy {
    fn delay(&self, failures: u32) -> i64 {
        let exp = failures.saturating_sub(1).min(20);
        self.base_delay_secs.saturating_mul(1i64 << exp).min(self.max_delay_secs)
    }

    /// May an attempt proceed at `now`?
    pub fn gate(&self, s: &State, now: i64) -> Gate {
        if let Some(until) = s.locked_until
            && now < until
        {
            return Gate::Locked(until);
        }
        match s.last_failure {
            Some(last) if s.failures > 0 && s.locked_until.is_none_or(|u| now >= u && last >= u) => {
                let wait = last + self.delay(s.failures) - now;
                if wait > 0 { Gate::RetryAfter(wait) } else { Gate::Open }
            }
            _ => Gate::Open,
        }
    }

    /// Records a failed attempt.
    pub fn fail(&self, s: &mut State, now: i64) -> AfterFailure {
        if s.locked_until.is_some_and(|u| now >= u) {
            // A lock that has run out starts a fresh count.
            *s = State::default();
        }
        s.failures += 1;
        s.last_failure = Some(now);
        if s.failures >= self.threshold {
            let until = now + self.lock_secs;
            s.locked_until = Some(until);
            AfterFailure::LockedNow(until)
        } else {
            AfterFailure::Delayed(self.delay(s.failures))
        }
    }

    /// Records a success (clears the counters).
    pub fn succeed(&self, s: &mut State) {
        *s = State::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_then_lock_and_unlock_by_time() {
        let p = Policy::default();
        let mut s = State::default();
        let mut now = 1_000;
        assert_eq!(p.gate(&s, now), Gate::Open);
        assert_eq!(p.fail(&mut s, now), AfterFailure::Delayed(1));
        assert_eq!(p.gate(&s, now), Gate::RetryAfter(1), "an early retry is refused");
        now += 1;
        assert_eq!(p.gate(&s, now), Gate::Open);
        assert_eq!(p.fail(&mut s, now), AfterFailure::Delayed(2));
        assert_eq!(p.gate(&s, now + 1), Gate::RetryAfter(1));
        for _ in 2..9 {
            now += 60;
            assert!(matches!(p.fail(&mut s, now), AfterFailure::Delayed(d) if d <= 30));
        }
        now += 60;
        assert_eq!(p.fail(&mut s, now), AfterFailure::LockedNow(now + 1800));
        assert_eq!(p.gate(&s, now + 1799), Gate::Locked(now + 1800), "even the right password fails while locked");
        assert_eq!(p.gate(&s, now + 1800), Gate::Open, "the lock runs out");
        assert_eq!(p.fail(&mut s, now + 1800), AfterFailure::Delayed(1), "and the count starts afresh");
        p.succeed(&mut s);
        assert_eq!(s, State::default());
    }
}
