//! EventBridge Scheduler → sync-runner. moto stores schedules but never fires them: this loop reads the stack's
//! schedule group and, when a schedule is due, invokes its target asynchronously with the schedule's exact
//! input. `rate(...)` schedules fire every period after their creation (the flexible window is not simulated:
//! a schedule fires at the start of its window); `at(...)` fires once; `cron(...)` is not supported (logged).
//! A disabled schedule does not fire. Time runs `time_scale` times faster for schedules only.
//!
//! [`Sweeper`] stands in for the template's `SweeperSchedule`: every `every` (real time) it invokes the runner
//! with `{"trigger":"sweep"}`, so a run killed in a local demo is resumed within seconds.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_scheduler::types::ScheduleState;
use tracing::{info, warn};

use super::lambda::Runner;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Expr {
    /// Every this many seconds (schedule time).
    Rate(f64),
    /// Once, at this Unix time (seconds).
    At(f64),
}

/// `rate(5 minutes)`, `rate(1 hour)`, `rate(2 days)`, `at(2026-11-26T10:00:00)`.
fn parse_expression(e: &str) -> Option<Expr> {
    let e = e.trim();
    if let Some(inner) = e.strip_prefix("rate(").and_then(|s| s.strip_suffix(')')) {
        let mut parts = inner.split_whitespace();
        let n: f64 = parts.next()?.parse().ok()?;
        let unit = match parts.next()? {
            "minute" | "minutes" => 60.0,
            "hour" | "hours" => 3600.0,
            "day" | "days" => 86_400.0,
            _ => return None,
        };
        if parts.next().is_some() || n <= 0.0 {
            return None;
        }
        return Some(Expr::Rate(n * unit));
    }
    if let Some(inner) = e.strip_prefix("at(").and_then(|s| s.strip_suffix(')')) {
        let t = chrono::NaiveDateTime::parse_from_str(inner, "%Y-%m-%dT%H:%M:%S").ok()?;
        return Some(Expr::At(t.and_utc().timestamp() as f64));
    }
    None
}

fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// What the loop knows about one schedule.
struct Tracked {
    expr: Option<Expr>,
    created: f64,
    last_modified: f64,
    /// Periods elapsed (schedule time) when it last fired or was first seen.
    fired_k: u64,
    fired_at: bool,
}

pub struct Scheduler {
    pub client: aws_sdk_scheduler::Client,
    pub group: String,
    /// The runner's name and ARN: only schedules targeting it are fired.
    pub targets: Vec<String>,
    pub time_scale: f64,
    pub runner: Arc<Runner>,
}

impl Scheduler {
    pub async fn run(self) {
        let mut tracked: HashMap<String, Tracked> = HashMap::new();
        let mut warned: HashSet<String> = HashSet::new();
        loop {
            let tick = self.tick(&tracked);
            if let Err(e) = self.pass(&mut tracked, &mut warned).await {
                warn!(error = %e, "schedule group unreadable; retrying");
            }
            tokio::time::sleep(tick).await;
        }
    }

    /// Often enough to fire within a tenth of the shortest period (real time), between 0.2 and 1 s.
    fn tick(&self, tracked: &HashMap<String, Tracked>) -> Duration {
        let shortest = tracked
            .values()
            .filter_map(|t| match t.expr {
                Some(Expr::Rate(p)) => Some(p / self.time_scale),
                _ => None,
            })
            .fold(f64::INFINITY, f64::min);
        Duration::from_secs_f64((shortest / 10.0).clamp(0.2, 1.0))
    }

    async fn pass(
        &self,
        tracked: &mut HashMap<String, Tracked>,
        warned: &mut HashSet<String>,
    ) -> anyhow::Result<()> {
        let mut summaries = Vec::new();
        let mut token = None;
        loop {
            let out = self
                .client
                .list_schedules()
                .group_name(&self.group)
                .set_next_token(token)
                .send()
                .await?;
            summaries.extend(out.schedules);
            token = out.next_token;
            if token.is_none() {
                break;
            }
        }
        let now = now_secs();
        let mut seen = HashSet::new();
        for s in summaries {
            let Some(name) = s.name.clone() else { continue };
            seen.insert(name.clone());
            let created = s.creation_date.map(|d| d.as_secs_f64()).unwrap_or(now);
            let modified = s
                .last_modification_date
                .map(|d| d.as_secs_f64())
                .unwrap_or(created);
            let known = tracked
                .get(&name)
                .is_some_and(|t| t.created == created && t.last_modified == modified);
            if !known {
                // New or changed (e.g. its rate): read its expression; keep the period count if it only changed.
                let Some(full) = self.get(&name).await? else {
                    continue;
                };
                let expr_text = full.schedule_expression.unwrap_or_default();
                let expr = parse_expression(&expr_text);
                if expr.is_none() && warned.insert(name.clone()) {
                    warn!(schedule = %name, expression = %expr_text, "schedule expression not supported by the local scheduler; it will not fire");
                }
                let k = self.periods(expr, created, now);
                let prev = tracked.remove(&name);
                tracked.insert(
                    name.clone(),
                    Tracked {
                        expr,
                        created,
                        last_modified: modified,
                        fired_k: prev
                            .as_ref()
                            .filter(|p| p.created == created)
                            .map_or(k, |p| p.fired_k.min(k)),
                        fired_at: prev.is_some_and(|p| p.fired_at),
                    },
                );
            }
            let Some(t) = tracked.get_mut(&name) else {
                continue;
            };
            let due = match t.expr {
                Some(Expr::Rate(_)) => {
                    let k = self.periods(t.expr, t.created, now);
                    if k > t.fired_k {
                        t.fired_k = k;
                        true
                    } else {
                        false
                    }
                }
                Some(Expr::At(at)) if !t.fired_at && now >= at => {
                    t.fired_at = true;
                    true
                }
                Some(Expr::At(_)) | None => false,
            };
            if due {
                self.fire(&name).await?;
            }
        }
        tracked.retain(|name, _| seen.contains(name));
        Ok(())
    }

    /// Whole periods elapsed since creation, in schedule time.
    fn periods(&self, expr: Option<Expr>, created: f64, now: f64) -> u64 {
        match expr {
            Some(Expr::Rate(p)) => {
                (((now - created).max(0.0) * self.time_scale) / p).floor() as u64
            }
            _ => 0,
        }
    }

    async fn get(
        &self,
        name: &str,
    ) -> anyhow::Result<Option<aws_sdk_scheduler::operation::get_schedule::GetScheduleOutput>> {
        match self
            .client
            .get_schedule()
            .group_name(&self.group)
            .name(name)
            .send()
            .await
        {
            Ok(out) => Ok(Some(out)),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_resource_not_found_exception()) =>
            {
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Re-reads the schedule (its state and input now) and invokes its target with that exact input.
    async fn fire(&self, name: &str) -> anyhow::Result<()> {
        let Some(full) = self.get(name).await? else {
            return Ok(());
        };
        if full.state != Some(ScheduleState::Enabled) {
            info!(schedule = %name, "schedule due but disabled: not fired");
            return Ok(());
        }
        let Some(target) = full.target else {
            return Ok(());
        };
        if !self.targets.contains(&target.arn) {
            warn!(schedule = %name, target = %target.arn, "schedule targets another function: not fired");
            return Ok(());
        }
        let input = target.input.unwrap_or_else(|| "{}".into());
        match serde_json::from_str(&input) {
            Ok(payload) => {
                info!(schedule = %name, "schedule fired");
                self.runner.invoke_async("schedule", payload);
            }
            Err(e) => warn!(schedule = %name, error = %e, "schedule input is not JSON: not fired"),
        }
        Ok(())
    }
}

/// The template's sweeper schedule (`rate(5 minutes)` there): `Trigger::Sweep` every `every`.
pub struct Sweeper {
    pub every: Duration,
    pub runner: Arc<Runner>,
}

impl Sweeper {
    pub async fn run(self) {
        let payload = audience_core::sync::input::Trigger::Sweep.to_json();
        let mut tick = tokio::time::interval(self.every);
        // A stalled stack does not fire a burst of sweeps when it wakes up: one is enough.
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            self.runner.invoke_async("sweep", payload.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expressions() {
        assert_eq!(parse_expression("rate(1 hour)"), Some(Expr::Rate(3600.0)));
        assert_eq!(parse_expression("rate(1 day)"), Some(Expr::Rate(86_400.0)));
        assert_eq!(parse_expression("rate(5 minutes)"), Some(Expr::Rate(300.0)));
        assert_eq!(parse_expression("rate(0 hours)"), None);
        assert_eq!(parse_expression("cron(0 * * * ? *)"), None);
        assert_eq!(
            parse_expression("at(1970-01-01T00:01:00)"),
            Some(Expr::At(60.0))
        );
    }
}
