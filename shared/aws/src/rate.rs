//! App-wide TikTok rate limit on DynamoDB: GCRA with one "next free slot" item per app.
//!
//! Each `acquire` reads the item's theoretical arrival time (TAT), reserves the slot `max(TAT, now)` by a
//! conditional update `TAT: old -> slot + interval` (compare-and-set: concurrent runners never get the same
//! slot), then sleeps until its slot. Slots are therefore at least one interval apart across every process,
//! which holds in *every* sliding second; per-second counter items would allow twice the rate across a second
//! boundary. No burst is allowed (TikTok's limit is per second).
//!
//! The interval is `(1 s + jitter allowance) / rate`: a caller that wakes up late for its slot (scheduler
//! delay) must not let the next caller's on-time slot make rate + 1 requests fall into one second. A slot
//! that had already passed by more than the allowance when its reservation came back is given up and a new
//! one reserved: every request then goes out within the allowance after its slot, so at most `rate` fall into
//! any second.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use audience_core::ports::{RateGate, RateGateError};
use aws_sdk_dynamodb::Client;

use crate::state::{get_n, is_condition_failed, n, s};

/// Default allowance for late wake-ups, per second of slots.
pub const DEFAULT_JITTER_ALLOWANCE: Duration = Duration::from_millis(100);
/// A caller gives up (with a retryable error) instead of sleeping longer than this for a slot.
const MAX_WAIT: Duration = Duration::from_secs(60);
const MAX_CAS_ATTEMPTS: u32 = 64;
/// Reservations whose slot had already passed, at most, before `acquire` gives up (retryable).
const MAX_LATE_SLOTS: u32 = 16;

#[derive(Clone, Debug)]
pub struct DynamoRateGate {
    client: Client,
    table: String,
    key: String,
    interval_us: i64,
    /// A slot found already this far in the past once reserved is given up (see `acquire`).
    late_us: i64,
}

impl DynamoRateGate {
    /// `rate_per_second` requests per second for the app named `app` (all runners share the item).
    pub fn new(
        client: Client,
        table: impl Into<String>,
        app: &str,
        rate_per_second: f64,
    ) -> DynamoRateGate {
        DynamoRateGate::with_jitter_allowance(
            client,
            table,
            app,
            rate_per_second,
            DEFAULT_JITTER_ALLOWANCE,
        )
    }

    pub fn with_jitter_allowance(
        client: Client,
        table: impl Into<String>,
        app: &str,
        rate_per_second: f64,
        allowance: Duration,
    ) -> DynamoRateGate {
        let rate = if rate_per_second.is_finite() && rate_per_second > 0.0 {
            rate_per_second
        } else {
            1.0
        };
        let interval_us = ((1_000_000.0 + allowance.as_micros() as f64) / rate).ceil() as i64;
        DynamoRateGate {
            client,
            table: table.into(),
            key: format!("RATE#{app}"),
            interval_us: interval_us.max(1),
            late_us: allowance.as_micros() as i64,
        }
    }

    /// Spacing between two granted slots.
    pub fn interval(&self) -> Duration {
        Duration::from_micros(self.interval_us as u64)
    }

    fn err(message: impl Into<String>, retry_after: Option<Duration>) -> RateGateError {
        RateGateError {
            message: message.into(),
            retry_after,
        }
    }

    /// Reserves the next slot; returns it (microseconds since the epoch).
    async fn reserve(&self) -> Result<i64, RateGateError> {
        for attempt in 0..MAX_CAS_ATTEMPTS {
            let current = self
                .client
                .get_item()
                .table_name(&self.table)
                .key("pk", s(self.key.clone()))
                .key("sk", s("GCRA"))
                .consistent_read(true)
                .send()
                .await
                .map_err(|e| Self::err(format!("DynamoDB: {e}"), Some(Duration::from_millis(200))))?
                .item
                .and_then(|it| get_n(&it, "tat_us"));
            let now = now_us();
            let slot = current.map_or(now, |tat| tat.max(now));
            let wait = Duration::from_micros((slot - now).max(0) as u64);
            if wait > MAX_WAIT {
                return Err(Self::err(
                    "app-wide TikTok rate limiter is backlogged",
                    Some(wait - MAX_WAIT),
                ));
            }
            let mut update = self
                .client
                .update_item()
                .table_name(&self.table)
                .key("pk", s(self.key.clone()))
                .key("sk", s("GCRA"))
                .update_expression("SET tat_us = :new, item_type = :t")
                .expression_attribute_values(":new", n(slot + self.interval_us))
                .expression_attribute_values(":t", s("rate_limiter"));
            update = match current {
                None => update.condition_expression("attribute_not_exists(tat_us)"),
                Some(old) => update
                    .condition_expression("tat_us = :old")
                    .expression_attribute_values(":old", n(old)),
            };
            match update.send().await {
                Ok(_) => return Ok(slot),
                Err(e) if is_condition_failed(&e) => {
                    // Another runner took that slot: re-read. A little jitter keeps contenders from
                    // colliding again in lockstep.
                    let pause = rand::random_range(0..(2 + attempt.min(10) as u64 * 2));
                    tokio::time::sleep(Duration::from_millis(pause)).await;
                }
                Err(e) => {
                    return Err(Self::err(
                        format!("DynamoDB: {e}"),
                        Some(Duration::from_millis(200)),
                    ));
                }
            }
        }
        Err(Self::err(
            "app-wide TikTok rate limiter: too much contention",
            Some(self.interval()),
        ))
    }
}

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

#[async_trait]
impl RateGate for DynamoRateGate {
    async fn acquire(&self) -> Result<(), RateGateError> {
        for _ in 0..MAX_LATE_SLOTS {
            let slot = self.reserve().await?;
            // Measured after the reservation round trip, so its latency is not slept a second time.
            let wait = slot - now_us();
            if wait >= -self.late_us {
                if wait > 0 {
                    tokio::time::sleep(Duration::from_micros(wait as u64)).await;
                }
                return Ok(());
            }
            // The slot passed while it was being reserved (a slow DynamoDB answer, a busy CPU). Sending now
            // would put this request next to the on-time ones granted after it: more than the rate in one
            // second (measured: 11 in a second at 10/s with 20 syncs at once). The slot is given up.
        }
        Err(Self::err(
            "app-wide TikTok rate limiter: every reserved slot had passed",
            Some(self.interval()),
        ))
    }
}
