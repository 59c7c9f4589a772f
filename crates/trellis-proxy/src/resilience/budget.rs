//! A retry budget: retries may add at most `ratio` of the requests sent in the last
//! `window`, plus `min_per_second` whatever the traffic, so that a backend failing
//! every request sees at most `(1 + ratio)` times the offered load (and the floor),
//! never a multiple of it.
//!
//! The window is kept as ten slots; each request deposits into the current slot and
//! each retry withdraws from it, and slots older than the window drop out, so the
//! budget follows the live rate rather than the whole history.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// How many retries a budget allows.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BudgetConfig {
    /// Retries allowed per request sent, over the window. Default 0.2.
    pub ratio: f64,
    /// Retries per second allowed whatever the traffic, so that a quiet backend can
    /// still be retried. Default 10.
    pub min_per_second: u32,
    /// How far back requests and retries count. Default 10 s.
    pub window: Duration,
}

impl Default for BudgetConfig {
    fn default() -> Self {
        Self {
            ratio: 0.2,
            min_per_second: 10,
            window: Duration::from_secs(10),
        }
    }
}

const SLOTS: usize = 10;

/// A retry budget, shared by every request to one backend.
#[derive(Debug)]
pub struct RetryBudget {
    config: BudgetConfig,
    state: Mutex<Slots>,
}

#[derive(Debug)]
struct Slots {
    /// Requests and retries per slot; `current` is the newest.
    requests: [u64; SLOTS],
    retries: [u64; SLOTS],
    current: usize,
    /// When the current slot started.
    started: Instant,
}

impl RetryBudget {
    pub fn new(config: BudgetConfig, now: Instant) -> Self {
        Self {
            config,
            state: Mutex::new(Slots {
                requests: [0; SLOTS],
                retries: [0; SLOTS],
                current: 0,
                started: now,
            }),
        }
    }

    /// Counts a request sent for the first time.
    pub fn deposit(&self, now: Instant) {
        let mut slots = self.lock(now);
        let i = slots.current;
        slots.requests[i] += 1;
    }

    /// Takes one retry from the budget; false when it is spent.
    pub fn try_withdraw(&self, now: Instant) -> bool {
        let mut slots = self.lock(now);
        let requests: u64 = slots.requests.iter().sum();
        let retries: u64 = slots.retries.iter().sum();
        let floor = f64::from(self.config.min_per_second) * self.config.window.as_secs_f64();
        let allowed = floor + self.config.ratio * requests as f64;
        if (retries as f64) + 1.0 > allowed {
            return false;
        }
        let i = slots.current;
        slots.retries[i] += 1;
        true
    }

    /// The state with slots older than the window dropped.
    fn lock(&self, now: Instant) -> std::sync::MutexGuard<'_, Slots> {
        let mut slots = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let slot = self.config.window / SLOTS as u32;
        let elapsed = now.saturating_duration_since(slots.started);
        if slot.is_zero() || elapsed < slot {
            return slots;
        }
        let passed = (elapsed.as_nanos() / slot.as_nanos().max(1)) as usize;
        for _ in 0..passed.min(SLOTS) {
            slots.current = (slots.current + 1) % SLOTS;
            let i = slots.current;
            slots.requests[i] = 0;
            slots.retries[i] = 0;
        }
        slots.started += slot * passed.min(u32::MAX as usize) as u32;
        slots
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn under_total_failure_retries_stay_within_the_ratio_and_floor() {
        let start = Instant::now();
        let budget = RetryBudget::new(BudgetConfig::default(), start);
        // 100 requests a second for 60 s, every one failing and asking for a retry.
        let (mut sent, mut retried) = (0u64, 0u64);
        for ms in 0..60_000u64 {
            if ms % 10 != 0 {
                continue;
            }
            let now = start + Duration::from_millis(ms);
            budget.deposit(now);
            sent += 1;
            if budget.try_withdraw(now) {
                retried += 1;
            }
        }
        // At most 20 % of the requests plus 10 a second over each window: the backend
        // sees at most 1.2 times the load, plus the floor.
        let bound = sent as f64 * 0.2 + 10.0 * 60.0 + 100.0;
        assert!((retried as f64) <= bound, "{retried} retries for {sent}");
        assert!(
            retried as f64 >= sent as f64 * 0.2,
            "the budget was not used: {retried}"
        );
    }

    #[test]
    fn a_quiet_backend_still_gets_the_floor_and_old_traffic_stops_counting() {
        let start = Instant::now();
        let config = BudgetConfig {
            ratio: 0.0,
            min_per_second: 1,
            window: Duration::from_secs(10),
        };
        let budget = RetryBudget::new(config, start);
        let granted = (0..20).filter(|_| budget.try_withdraw(start)).count();
        assert_eq!(granted, 10, "one a second over a 10 s window");
        // Once the window has passed, the spent retries no longer count.
        let later = start + Duration::from_secs(11);
        assert!(budget.try_withdraw(later));
    }

    #[test]
    fn deposits_raise_the_budget() {
        let start = Instant::now();
        let config = BudgetConfig {
            ratio: 0.5,
            min_per_second: 0,
            window: Duration::from_secs(10),
        };
        let budget = RetryBudget::new(config, start);
        assert!(!budget.try_withdraw(start));
        for _ in 0..4 {
            budget.deposit(start);
        }
        assert!(budget.try_withdraw(start));
        assert!(budget.try_withdraw(start));
        assert!(!budget.try_withdraw(start), "half of four requests");
    }
}
