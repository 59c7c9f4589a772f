//! When to renew a workload certificate: at about half its life, spread by ±10 % of
//! the lifetime so that workloads started together do not all renew together.

use std::time::{Duration, SystemTime};

/// Share of the lifetime after which renewal is due, before jitter.
const RENEW_FRACTION: f64 = 0.5;
/// Maximum jitter either way, as a share of the lifetime.
const JITTER_FRACTION: f64 = 0.1;

/// The time to renew a certificate valid from `not_before` to `not_after`.
///
/// `jitter` is a uniform sample in `[0, 1]` (for example `fastrand::f64()`); 0 gives
/// 40 % of the lifetime, 0.5 gives half, 1 gives 60 %. Values outside the range are
/// clamped, and NaN counts as 0.5. A certificate whose `not_after` is not after
/// `not_before` is due at once (`not_before`).
pub fn renew_at(not_before: SystemTime, not_after: SystemTime, jitter: f64) -> SystemTime {
    let Ok(lifetime) = not_after.duration_since(not_before) else {
        return not_before;
    };
    let jitter = if jitter.is_nan() {
        0.5
    } else {
        jitter.clamp(0.0, 1.0)
    };
    let fraction = RENEW_FRACTION + (2.0 * jitter - 1.0) * JITTER_FRACTION;
    not_before + Duration::from_secs_f64(lifetime.as_secs_f64() * fraction)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn half_life_with_bounded_jitter() {
        let (nb, na) = (at(1_000), at(1_000 + 86_400));
        let cases = [
            (0.0, 1_000 + 34_560),
            (0.5, 1_000 + 43_200),
            (1.0, 1_000 + 51_840),
            (-3.0, 1_000 + 34_560),
            (7.0, 1_000 + 51_840),
            (f64::NAN, 1_000 + 43_200),
        ];
        for (jitter, expected) in cases {
            let got = renew_at(nb, na, jitter);
            let diff = got
                .duration_since(at(expected))
                .unwrap_or_else(|e| e.duration());
            assert!(diff < Duration::from_millis(1), "jitter {jitter}: {got:?}");
        }
        for i in 0..=100 {
            let t = renew_at(nb, na, f64::from(i) / 100.0);
            assert!(t >= at(1_000 + 34_560) && t <= at(1_000 + 51_840));
        }
    }

    #[test]
    fn short_and_inverted_lifetimes() {
        let t = renew_at(at(10), at(12), 0.5);
        assert_eq!(t, at(11));
        assert_eq!(renew_at(at(10), at(10), 0.5), at(10));
        assert_eq!(renew_at(at(10), at(5), 0.5), at(10));
    }
}
