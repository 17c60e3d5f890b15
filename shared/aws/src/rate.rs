//! App-wide TikTok rate limit on DynamoDB: GCRA with one "next free slot" item per app.
//!
//! The item holds the app's theoretical arrival time (TAT), the next free slot. While the app is busy (the
//! TAT is between now and a minute ahead), `acquire` takes the slot with one atomic `ADD interval`
//! conditioned on exactly that: every runner gets a distinct slot in one call, however many contend (a read
//! then a compare-and-set would make n contenders retry n times for each slot). An idle gate (TAT passed, or
//! no item) is restarted one interval (or two DynamoDB round trips) from now by a `SET` conditioned on it still being idle; the failed `ADD`
//! already returned the TAT it saw (`ReturnValuesOnConditionCheckFailure`), so no read is needed. Contenders
//! that lose the restart lost to a gate that is busy again, and their next `ADD` succeeds. The caller then
//! sleeps until its slot. Slots are therefore at least one interval apart across every process, which holds
//! in *every* sliding second; per-second counter items would allow twice the rate across a second boundary.
//! No burst is allowed (TikTok's limit is per second).
//!
//! The interval is `(1 s + jitter allowance) / rate`, so `rate + 1` consecutive slots span `1 s + allowance`:
//! as long as requests reach TikTok within the allowance of their slots (relative to each other), at most
//! `rate` fall into any sliding second. Half the allowance is for our side: a slot that passed by more than
//! that while it was being reserved (a slow DynamoDB answer) or while its caller slept (a busy CPU, a task
//! polled late) is given up and a new one reserved. The other half is for the way to TikTok (the network's
//! jitter). A request that must first open a TLS connection far from TikTok can take longer than that; TikTok
//! then refuses it with 40100 and it is retried.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use audience_core::ports::{RateGate, RateGateError};
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder;
use aws_sdk_dynamodb::types::{ReturnValue, ReturnValuesOnConditionCheckFailure};

use crate::state::{get_n, n, s};

/// Default jitter allowance per second of slots: at 10/s, slots 108 ms apart (92.6 % of the rate), a
/// request sent at most 40 ms after its slot.
pub const DEFAULT_JITTER_ALLOWANCE: Duration = Duration::from_millis(80);
/// A caller gives up (with a retryable error) instead of sleeping longer than this for a slot.
const MAX_WAIT: Duration = Duration::from_secs(60);
/// Conditional writes one reservation may try. Each lost attempt means another runner took a slot or
/// restarted the gate, so this is only reached under a pathological number of contenders.
const MAX_ATTEMPTS: u32 = 64;
/// A restarted gate's first slot is never further ahead than this, however slow DynamoDB answered.
const MAX_RESTART_LEAD_US: i64 = 1_000_000;
/// Reservations whose slot had already passed, at most, before `acquire` gives up (retryable).
const MAX_LATE_SLOTS: u32 = 16;

#[derive(Clone, Debug)]
pub struct DynamoRateGate {
    client: Client,
    table: String,
    key: String,
    interval_us: i64,
    /// A slot already this far in the past once reserved or slept for is given up (see `acquire`).
    late_us: i64,
    stats: Arc<Counters>,
}

/// What a conditional `ADD` found.
enum Take {
    /// The slot taken (microseconds since the epoch).
    Slot(i64),
    /// The gate is idle: its TAT passed, or there is none yet.
    Idle,
    /// The next free slot is this far ahead of now, beyond the longest wait.
    Backlogged(Duration),
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
            late_us: (allowance.as_micros() / 2) as i64,
            stats: Arc::default(),
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

    /// Reserves the next slot; returns it (microseconds since the epoch). Busy gate: one `ADD`. Idle gate:
    /// the failed `ADD`, then a conditional restart that one contender wins; the others take a slot with
    /// their next `ADD`.
    async fn reserve(&self) -> Result<i64, RateGateError> {
        for _ in 0..MAX_ATTEMPTS {
            let sent = now_us();
            let taken = self.take_next(sent).await?;
            // This round trip predicts the restart's: its slot must still be ahead when the answer is back.
            let round_trip = now_us() - sent;
            match taken {
                Take::Slot(slot) => return Ok(slot),
                Take::Backlogged(ahead) => {
                    return Err(Self::err(
                        "app-wide TikTok rate limiter is backlogged",
                        Some(ahead.saturating_sub(MAX_WAIT)),
                    ));
                }
                Take::Idle => {
                    let lead = self
                        .interval_us
                        .max(2 * round_trip)
                        .min(MAX_RESTART_LEAD_US);
                    if let Some(slot) = self.restart(now_us(), lead).await? {
                        self.stats.restarts.fetch_add(1, Ordering::Relaxed);
                        return Ok(slot);
                    }
                    // Another runner restarted it between our two calls: it is busy again.
                    self.stats.conflicts.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        Err(Self::err(
            "app-wide TikTok rate limiter: too much contention",
            Some(self.interval()),
        ))
    }

    /// `ADD interval` if the next free slot is between now and now + the longest wait. The slot taken is
    /// the value before the `ADD`; on a failed condition, DynamoDB returns the item it saw, which says why.
    async fn take_next(&self, now: i64) -> Result<Take, RateGateError> {
        let latest = now + MAX_WAIT.as_micros() as i64;
        let out = self
            .update()
            .update_expression("ADD tat_us :i")
            .condition_expression("tat_us BETWEEN :now AND :latest")
            .expression_attribute_values(":i", n(self.interval_us))
            .expression_attribute_values(":now", n(now))
            .expression_attribute_values(":latest", n(latest))
            .return_values(ReturnValue::UpdatedNew)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match out {
            Ok(o) => match o.attributes.as_ref().and_then(|a| get_n(a, "tat_us")) {
                Some(next) => Ok(Take::Slot(next - self.interval_us)),
                None => Err(Self::err(
                    "DynamoDB: the rate limiter's update returned no slot",
                    Some(Duration::from_millis(200)),
                )),
            },
            Err(e) => match condition_failed_tat(&e) {
                Some(Some(tat)) if tat > latest => {
                    Ok(Take::Backlogged(Duration::from_micros((tat - now) as u64)))
                }
                // Passed or missing. (Were it ever in range, the restart's own condition would fail and
                // the next `ADD` would take a slot: correctness never rests on this value.)
                Some(_) => Ok(Take::Idle),
                None => Err(Self::dynamo(e)),
            },
        }
    }

    /// Restarts an idle gate, if it is still idle (no TAT, or one before `now`). The slot taken is `lead`
    /// from now (one interval, or two round trips when DynamoDB answers slower than that), not now, so that
    /// the answer's latency does not make it a passed slot to give up, which would leave the gate idle
    /// again for every contender whose `ADD` is still on its way. `None` if another runner restarted it
    /// first.
    async fn restart(&self, now: i64, lead: i64) -> Result<Option<i64>, RateGateError> {
        let slot = now + lead;
        let out = self
            .update()
            .update_expression("SET tat_us = :new, item_type = :t")
            .condition_expression("attribute_not_exists(tat_us) OR tat_us < :now")
            .expression_attribute_values(":new", n(slot + self.interval_us))
            .expression_attribute_values(":now", n(now))
            .expression_attribute_values(":t", s("rate_limiter"))
            .send()
            .await;
        match out {
            Ok(_) => Ok(Some(slot)),
            Err(e) if condition_failed_tat(&e).is_some() => Ok(None),
            Err(e) => Err(Self::dynamo(e)),
        }
    }

    /// An update of this app's gate item.
    fn update(&self) -> UpdateItemFluentBuilder {
        self.client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(self.key.clone()))
            .key("sk", s("GCRA"))
    }

    fn dynamo<E: std::fmt::Display>(e: E) -> RateGateError {
        Self::err(format!("DynamoDB: {e}"), Some(Duration::from_millis(200)))
    }

    /// What this gate (and its clones) did so far.
    pub fn stats(&self) -> GateStats {
        GateStats {
            slots: self.stats.slots.load(Ordering::Relaxed),
            restarts: self.stats.restarts.load(Ordering::Relaxed),
            conflicts: self.stats.conflicts.load(Ordering::Relaxed),
            late_given_up: self.stats.late_given_up.load(Ordering::Relaxed),
        }
    }
}

/// `Some(tat seen)` when the error is a failed condition (the inner `None`: no item, or none returned),
/// `None` for any other error.
fn condition_failed_tat<R>(err: &SdkError<UpdateItemError, R>) -> Option<Option<i64>> {
    match err.as_service_error() {
        Some(UpdateItemError::ConditionalCheckFailedException(c)) => {
            Some(c.item().and_then(|item| get_n(item, "tat_us")))
        }
        _ => None,
    }
}

/// Counters of a gate, for benchmarks and logs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct GateStats {
    /// Slots let go (requests that may be sent).
    pub slots: u64,
    /// Restarts of an idle gate won (each first slot after an idle time).
    pub restarts: u64,
    /// Restarts of an idle gate lost to another runner.
    pub conflicts: u64,
    /// Slots given up because they had passed by more than half the allowance.
    pub late_given_up: u64,
}

#[derive(Debug, Default)]
struct Counters {
    slots: AtomicU64,
    restarts: AtomicU64,
    conflicts: AtomicU64,
    late_given_up: AtomicU64,
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
            if wait > 0 {
                tokio::time::sleep(Duration::from_micros(wait as u64)).await;
            }
            // Checked after the sleep too: a wake-up late by more than the allowance (a busy CPU, a task
            // polled late) is as bad as a slot that passed while it was being reserved (a slow DynamoDB
            // answer). Sending then would put this request next to the on-time ones granted after it: more
            // than the rate in one second. The slot is given up.
            let late = now_us() - slot;
            if late <= self.late_us {
                self.stats.slots.fetch_add(1, Ordering::Relaxed);
                return Ok(());
            }
            self.stats.late_given_up.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(late_ms = late / 1000, "rate slot passed; reserving another");
        }
        Err(Self::err(
            "app-wide TikTok rate limiter: every reserved slot had passed",
            Some(self.interval()),
        ))
    }
}
