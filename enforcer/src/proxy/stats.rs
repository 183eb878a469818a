//! Lock-free proxy counters and a bucketed latency histogram, readable at any time for the
//! metrics (`cilium_policy_l7_total{rule=...}` and a request-latency histogram).

use std::{
    sync::atomic::{AtomicU64, Ordering::Relaxed},
    time::Duration,
};

/// Upper bounds (seconds) of the latency buckets; a last `+Inf` bucket is implied.
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Counters shared by every connection of a proxy. All updates are single relaxed atomic adds.
#[derive(Debug, Default)]
pub struct ProxyStats {
    received: AtomicU64,
    forwarded: AtomicU64,
    denied: AtomicU64,
    parse_errors: AtomicU64,
    upstream_errors: AtomicU64,
    timeouts: AtomicU64,
    /// Non-cumulative counts per bucket; index `LATENCY_BUCKETS.len()` is `+Inf`.
    buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    latency_sum_ns: AtomicU64,
    latency_count: AtomicU64,
}

/// A consistent-enough copy of the counters (each read atomically, not all at one instant).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StatsSnapshot {
    /// Requests received: every request head read, well-formed or not
    /// (`forwarded + denied + parse_errors` plus requests whose upstream could not be reached).
    pub received: u64,
    /// Requests sent to an upstream.
    pub forwarded: u64,
    /// Requests answered with 403 by policy.
    pub denied: u64,
    /// Requests refused with 400/431 (malformed or ambiguous), including bad chunked bodies.
    pub parse_errors: u64,
    /// Upstream connect failures, resets, malformed responses, response timeouts.
    pub upstream_errors: u64,
    /// Clients that did not finish a request head or body in time.
    pub timeouts: u64,
    /// `(upper bound in seconds, cumulative count)`; the last bound is `f64::INFINITY`.
    pub latency_buckets: Vec<(f64, u64)>,
    pub latency_sum_seconds: f64,
    pub latency_count: u64,
}

impl ProxyStats {
    pub fn new() -> Self {
        Self::default()
    }

    pub(crate) fn inc_received(&self) {
        self.received.fetch_add(1, Relaxed);
    }
    pub(crate) fn inc_forwarded(&self) {
        self.forwarded.fetch_add(1, Relaxed);
    }
    pub(crate) fn inc_denied(&self) {
        self.denied.fetch_add(1, Relaxed);
    }
    pub(crate) fn inc_parse_errors(&self) {
        self.parse_errors.fetch_add(1, Relaxed);
    }
    pub(crate) fn inc_upstream_errors(&self) {
        self.upstream_errors.fetch_add(1, Relaxed);
    }
    pub(crate) fn inc_timeouts(&self) {
        self.timeouts.fetch_add(1, Relaxed);
    }

    /// Records one request latency (request head received → response head from the upstream).
    pub fn observe_latency(&self, latency: Duration) {
        let secs = latency.as_secs_f64();
        let idx = LATENCY_BUCKETS
            .iter()
            .position(|&b| secs <= b)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.buckets[idx].fetch_add(1, Relaxed);
        self.latency_sum_ns
            .fetch_add(latency.as_nanos().min(u64::MAX as u128) as u64, Relaxed);
        self.latency_count.fetch_add(1, Relaxed);
    }

    pub fn snapshot(&self) -> StatsSnapshot {
        let mut cumulative = 0;
        let latency_buckets = self
            .buckets
            .iter()
            .enumerate()
            .map(|(i, b)| {
                cumulative += b.load(Relaxed);
                (
                    LATENCY_BUCKETS.get(i).copied().unwrap_or(f64::INFINITY),
                    cumulative,
                )
            })
            .collect();
        StatsSnapshot {
            received: self.received.load(Relaxed),
            forwarded: self.forwarded.load(Relaxed),
            denied: self.denied.load(Relaxed),
            parse_errors: self.parse_errors.load(Relaxed),
            upstream_errors: self.upstream_errors.load(Relaxed),
            timeouts: self.timeouts.load(Relaxed),
            latency_buckets,
            latency_sum_seconds: self.latency_sum_ns.load(Relaxed) as f64 / 1e9,
            latency_count: self.latency_count.load(Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_is_cumulative() {
        let s = ProxyStats::new();
        s.observe_latency(Duration::from_micros(100));
        s.observe_latency(Duration::from_millis(3));
        s.observe_latency(Duration::from_secs(60));
        s.inc_denied();
        let snap = s.snapshot();
        assert_eq!(snap.latency_buckets[0], (0.0005, 1));
        assert_eq!(snap.latency_buckets[3], (0.005, 2));
        assert_eq!(snap.latency_buckets.last().unwrap().1, 3);
        assert_eq!(snap.latency_count, 3);
        assert_eq!(snap.denied, 1);
        assert_eq!(*snap.latency_buckets.last().unwrap(), (f64::INFINITY, 3));
    }
}
