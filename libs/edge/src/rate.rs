//! Per-user rate limits on the RPCs that book and change calls, so that one
//! account (a runaway script, a stolen token) cannot crowd out the others.
//! A generic cell rate algorithm per user: `SKILEEZ_RATE_LIMIT_PER_MINUTE`
//! requests a minute on average (default 60; 0 turns it off) with bursts of
//! `SKILEEZ_RATE_LIMIT_BURST` (default 20). A refused request is told how
//! long to wait ([`RateLimiter::check`]), which the service sends as
//! RESOURCE_EXHAUSTED with `RetryInfo`.
//!
//! State is per instance and in memory: with N instances a user gets up to
//! N times the rate, which bounds abuse without a shared store on the
//! booking path.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use skileez_config::{ConfigError, Env};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub per_minute: NonZeroU32,
    pub burst: NonZeroU32,
}

impl RateLimit {
    /// `None`: off.
    pub fn from_env(env: &Env) -> Result<Option<RateLimit>, ConfigError> {
        let per_minute: u32 = env.number("SKILEEZ_RATE_LIMIT_PER_MINUTE", 60)?;
        let burst: u32 = env.positive("SKILEEZ_RATE_LIMIT_BURST", 20)?;
        Ok(NonZeroU32::new(per_minute).map(|per_minute| RateLimit {
            per_minute,
            burst: NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN),
        }))
    }
}

/// The limiter of one process; cheap to clone.
#[derive(Clone)]
pub struct RateLimiter {
    limiter: Option<Arc<DefaultKeyedRateLimiter<String>>>,
}

impl RateLimiter {
    pub fn new(limit: Option<RateLimit>) -> RateLimiter {
        RateLimiter {
            limiter: limit.map(|limit| {
                Arc::new(governor::RateLimiter::keyed(
                    Quota::per_minute(limit.per_minute).allow_burst(limit.burst),
                ))
            }),
        }
    }

    /// Takes one request of `user`: `Err(wait)` when over the limit.
    pub fn check(&self, user: &str) -> Result<(), Duration> {
        let Some(limiter) = &self.limiter else {
            return Ok(());
        };
        limiter
            .check_key(&user.to_owned())
            .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }

    /// Forgets users whose allowance is full again, so that the state does
    /// not grow with every user ever seen; call it now and then.
    pub fn forget_idle(&self) {
        if let Some(limiter) = &self.limiter {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_above_the_limit_is_refused_with_a_wait_and_others_are_unaffected() {
        let limiter = RateLimiter::new(Some(RateLimit {
            per_minute: NonZeroU32::new(60).unwrap(),
            burst: NonZeroU32::new(3).unwrap(),
        }));
        for _ in 0..3 {
            assert_eq!(limiter.check("ada"), Ok(()));
        }
        let wait = limiter.check("ada").unwrap_err();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_secs(1),
            "{wait:?}"
        );
        assert_eq!(limiter.check("grace"), Ok(()));
        limiter.forget_idle();
    }

    #[test]
    fn zero_per_minute_turns_it_off() {
        let off = |name: &str| (name == "SKILEEZ_RATE_LIMIT_PER_MINUTE").then(|| "0".to_owned());
        assert_eq!(RateLimit::from_env(&Env::new(&off)).unwrap(), None);
        let limiter = RateLimiter::new(None);
        for _ in 0..1000 {
            assert_eq!(limiter.check("ada"), Ok(()));
        }
    }
}
