//! Local rate limits: token buckets, one per key (a service, a route, a caller's
//! identity), refilled continuously at the configured rate up to a burst. A request
//! that finds its bucket empty is answered 429 with `retry-after` (when the next token
//! arrives) and the `ratelimit-*` headers; an admitted one gets the same headers with
//! the tokens left ([`Quota`]). The number of keys is bounded, so callers
//! with ever-new identities cannot grow memory: past the bound, the bucket idle the
//! longest is forgotten (a full bucket, which loses nothing).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// The header naming a limit's size; its companions are `ratelimit-remaining` and
/// `ratelimit-reset` (the IETF draft's first form, which the 429 uses too).
pub const RATELIMIT_LIMIT: &str = "ratelimit-limit";

/// A limit: `rate` requests per second on average, up to `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    pub per_second: f64,
    pub burst: u32,
}

/// A refused request: when to try again, and the limit's state for the headers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limited {
    pub retry_after: Duration,
    pub limit: u32,
}

/// What an admitted request's headers say: the bucket's size, the whole tokens left in
/// it, and how long until it is full again.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Quota {
    pub limit: u32,
    pub remaining: u32,
    pub reset: Duration,
}

impl Quota {
    /// The `ratelimit-*` headers of an admitted response: `ratelimit-reset` is the
    /// whole seconds until the bucket is full again (rounded up), so a client that
    /// waits that long has `ratelimit-limit` requests to spend.
    pub fn headers(&self) -> [(&'static str, u64); 3] {
        [
            (RATELIMIT_LIMIT, u64::from(self.limit)),
            ("ratelimit-remaining", u64::from(self.remaining)),
            ("ratelimit-reset", self.reset.as_secs_f64().ceil() as u64),
        ]
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// Buckets per key, all with one rate.
#[derive(Debug)]
pub struct RateLimiter {
    rate: Rate,
    max_keys: usize,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl RateLimiter {
    pub fn new(rate: Rate, max_keys: usize) -> Self {
        Self {
            rate,
            max_keys: max_keys.max(1),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes a token from `key`'s bucket.
    pub fn check(&self, key: &str, now: Instant) -> Result<Quota, Limited> {
        let burst = f64::from(self.rate.burst.max(1));
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if !buckets.contains_key(key) && buckets.len() >= self.max_keys {
            let idle = buckets
                .iter()
                .min_by_key(|(_, b)| b.updated)
                .map(|(k, _)| k.clone());
            if let Some(idle) = idle {
                buckets.remove(&idle);
            }
        }
        let bucket = buckets.entry(key.to_owned()).or_insert(Bucket {
            tokens: burst,
            updated: now,
        });
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.rate.per_second).min(burst);
        bucket.updated = now;
        let limit = self.rate.burst.max(1);
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            let reset = if self.rate.per_second > 0.0 {
                (burst - bucket.tokens) / self.rate.per_second
            } else {
                0.0
            };
            return Ok(Quota {
                limit,
                remaining: bucket.tokens as u32,
                reset: Duration::from_secs_f64(reset),
            });
        }
        let wait = if self.rate.per_second > 0.0 {
            (1.0 - bucket.tokens) / self.rate.per_second
        } else {
            f64::from(u32::MAX)
        };
        Err(Limited {
            retry_after: Duration::from_secs_f64(wait),
            limit,
        })
    }

    /// How many keys have a bucket now.
    pub fn keys(&self) -> usize {
        self.buckets.lock().map_or(0, |b| b.len())
    }
}

/// The whole seconds a `retry-after` header says for `wait` (rounded up, at least 1).
pub fn retry_after_secs(wait: Duration) -> u64 {
    (wait.as_secs_f64().ceil() as u64).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_its_burst_then_its_rate() {
        let t = Instant::now();
        let limiter = RateLimiter::new(
            Rate {
                per_second: 10.0,
                burst: 5,
            },
            100,
        );
        let burst = (0..20).filter(|_| limiter.check("web", t).is_ok()).count();
        assert_eq!(burst, 5);
        let refused = limiter.check("web", t).expect_err("empty");
        assert_eq!(refused.retry_after, Duration::from_millis(100));
        assert_eq!(retry_after_secs(refused.retry_after), 1);
        // Over 10 s at a steady pace, 10 a second get through (plus the burst left).
        let mut admitted = 0;
        for ms in (0..10_000).step_by(10) {
            if limiter.check("web", t + Duration::from_millis(ms)).is_ok() {
                admitted += 1;
            }
        }
        assert!((99..=101).contains(&admitted), "{admitted}");
        // Another key has its own bucket.
        let other = limiter.check("cart", t).expect("own bucket");
        assert_eq!((other.limit, other.remaining), (5, 4));
        // One token spent at 10 a second: full again in 100 ms, which rounds up to 1 s.
        assert_eq!(other.reset, Duration::from_millis(100));
        let headers = other.headers();
        assert_eq!(
            headers,
            [
                ("ratelimit-limit", 5),
                ("ratelimit-remaining", 4),
                ("ratelimit-reset", 1)
            ]
        );
    }

    #[test]
    fn keys_are_bounded() {
        let t = Instant::now();
        let limiter = RateLimiter::new(
            Rate {
                per_second: 1.0,
                burst: 1,
            },
            3,
        );
        for i in 0..100 {
            let now = t + Duration::from_millis(i);
            assert!(limiter.check(&format!("caller-{i}"), now).is_ok());
        }
        assert_eq!(limiter.keys(), 3);
    }
}
