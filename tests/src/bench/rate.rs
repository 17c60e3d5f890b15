//! Instruments of the many-syncs rate benchmark (`bench-e2e --syncs K`): a gate decorator that stamps when
//! it let each request go, and the busiest second of a list of stamps. With the sandbox's receive times they
//! say on which side of the wire a burst was made.

use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use audience_core::ports::{RateGate, RateGateError};

/// A [`RateGate`] that records when each `acquire` returned (µs since the epoch).
pub struct StampingGate {
    inner: Arc<dyn RateGate>,
    stamps: Mutex<Vec<u64>>,
}

impl StampingGate {
    pub fn new(inner: Arc<dyn RateGate>) -> StampingGate {
        StampingGate {
            inner,
            stamps: Mutex::new(Vec::new()),
        }
    }

    /// The release times so far, sorted.
    pub fn stamps(&self) -> Vec<u64> {
        let mut v = self.stamps.lock().map(|s| s.clone()).unwrap_or_default();
        v.sort_unstable();
        v
    }
}

pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

#[async_trait]
impl RateGate for StampingGate {
    async fn acquire(&self) -> Result<(), RateGateError> {
        self.inner.acquire().await?;
        let t = now_us();
        if let Ok(mut s) = self.stamps.lock() {
            s.push(t);
        }
        Ok(())
    }
}

/// Most values of `sorted` in any half-open window `[t, t + width)`.
pub fn busiest(sorted: &[u64], width: u64) -> usize {
    let mut most = 0;
    let mut j = 0;
    for i in 0..sorted.len() {
        while sorted[j] + width <= sorted[i] {
            j += 1;
        }
        most = most.max(i - j + 1);
    }
    most
}

/// Requests received in each whole second from the first one (ms stamps, sorted).
pub fn per_second(sorted_ms: &[u64]) -> Vec<usize> {
    let Some(&first) = sorted_ms.first() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for &t in sorted_ms {
        let i = ((t - first) / 1000) as usize;
        if out.len() <= i {
            out.resize(i + 1, 0);
        }
        out[i] += 1;
    }
    out
}

/// From release (µs) to TikTok's receive time (ms), the k-th release paired with the k-th arrival (both
/// sorted): (smallest, median, 99th percentile, largest) in ms. `None` unless the counts agree.
pub fn delivery_ms(released_us: &[u64], received_ms: &[u64]) -> Option<[f64; 4]> {
    if released_us.len() != received_ms.len() || released_us.is_empty() {
        return None;
    }
    let mut d: Vec<f64> = released_us
        .iter()
        .zip(received_ms)
        .map(|(&r, &a)| (a as f64 * 1000.0 - r as f64) / 1000.0)
        .collect();
    d.sort_by(f64::total_cmp);
    let at = |q: f64| d[((d.len() - 1) as f64 * q).round() as usize];
    Some([d[0], at(0.5), at(0.99), d[d.len() - 1]])
}

/// Mean requests/s while at least two syncs still had requests to send: from the first request to the last
/// one of the audience that finished second to last. A run's own tail (its last status read, after its
/// engine work) is then not counted as the gate's shortfall. Requests are `(ms, audience)`, sorted by time;
/// `None` with fewer than two audiences.
pub fn contended_rate(requests: &[(u64, Option<&str>)]) -> Option<f64> {
    let first = requests.first()?.0;
    let mut last_of: std::collections::HashMap<&str, u64> = std::collections::HashMap::new();
    for &(t, a) in requests {
        if let Some(a) = a {
            last_of.insert(a, t);
        }
    }
    let mut ends: Vec<u64> = last_of.into_values().collect();
    ends.sort_unstable();
    let end = *ends.iter().rev().nth(1)?;
    let n = requests.iter().take_while(|(t, _)| *t <= end).count();
    (end > first).then(|| (n - 1) as f64 * 1000.0 / (end - first) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busiest_counts_a_half_open_window() {
        assert_eq!(busiest(&[0, 100, 999, 1000, 1500], 1000), 3);
        assert_eq!(busiest(&[], 1000), 0);
        assert_eq!(busiest(&[5, 5, 5], 1), 3);
    }

    #[test]
    fn per_second_buckets_from_the_first() {
        assert_eq!(per_second(&[100, 200, 1099, 1100, 3500]), vec![3, 1, 0, 1]);
        assert!(per_second(&[]).is_empty());
    }

    #[test]
    fn contended_rate_ends_at_the_second_to_last_audience() {
        let r = [
            (0, None),
            (100, Some("a")),
            (200, Some("b")),
            (300, Some("a")),
            (400, Some("b")),
            (5_000, Some("b")),
        ];
        // a ends at 300: 4 requests in 300 ms.
        assert_eq!(contended_rate(&r), Some(10.0));
        assert_eq!(contended_rate(&[(0, Some("a")), (9, Some("a"))]), None);
        assert_eq!(contended_rate(&[]), None);
    }

    #[test]
    fn delivery_pairs_in_order() {
        let d = delivery_ms(&[1_000, 2_000, 3_000], &[2, 3, 10]).unwrap();
        assert_eq!(d, [1.0, 1.0, 7.0, 7.0]);
        assert!(delivery_ms(&[1], &[]).is_none());
    }
}
