//! Peak-EWMA latency: an estimate that jumps up to any slower sample at once and decays
//! towards faster ones over time, so a endpoint that turns slow loses traffic quickly and
//! regains it gradually.

use std::time::{Duration, Instant};

/// How fast old samples lose their weight.
const DECAY: Duration = Duration::from_secs(10);
/// Estimate for an endpoint never measured: modest, so a new endpoint is tried soon but
/// is not flooded before anything is known about it.
const DEFAULT_RTT: Duration = Duration::from_millis(1);

#[derive(Debug, Clone, Copy)]
pub struct PeakEwma {
    estimate_ns: f64,
    updated: Instant,
}

impl PeakEwma {
    pub fn new(now: Instant) -> Self {
        Self {
            estimate_ns: DEFAULT_RTT.as_nanos() as f64,
            updated: now,
        }
    }

    /// Folds in one sample.
    pub fn observe(&mut self, rtt: Duration, now: Instant) {
        let sample = rtt.as_nanos() as f64;
        let current = self.estimate_ns(now);
        self.estimate_ns = if sample > current {
            sample
        } else {
            let w = decay_weight(now.saturating_duration_since(self.updated));
            current * w + sample * (1.0 - w)
        };
        self.updated = now;
    }

    /// The estimate now. It decays while no sample arrives, so an endpoint that was slow
    /// once is eventually tried again.
    pub fn estimate_ns(&self, now: Instant) -> f64 {
        self.estimate_ns * decay_weight(now.saturating_duration_since(self.updated))
    }
}

fn decay_weight(elapsed: Duration) -> f64 {
    (-elapsed.as_secs_f64() / DECAY.as_secs_f64()).exp()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jumps_to_a_slower_sample() {
        let t0 = Instant::now();
        let mut e = PeakEwma::new(t0);
        e.observe(Duration::from_millis(50), t0);
        assert!((e.estimate_ns(t0) - 50e6).abs() < 1.0);
    }

    #[test]
    fn decays_towards_faster_samples() {
        let t0 = Instant::now();
        let mut e = PeakEwma::new(t0);
        e.observe(Duration::from_millis(50), t0);
        let mut t = t0;
        for _ in 0..100 {
            t += Duration::from_millis(500);
            e.observe(Duration::from_millis(1), t);
        }
        let ms = e.estimate_ns(t) / 1e6;
        assert!(ms < 2.0, "estimate still {ms} ms");
    }
}
