//! Rate limits (per app: a sliding second and a sliding minute; per advertiser: a sliding minute), the
//! per-audience daily budget, and fault injection.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::{DAILY_AUDIENCE_CALLS, FaultConfig, FaultDecision, Reject, State, codes, reject};

const SECOND_MS: u64 = 1_000;
const MINUTE_MS: u64 = 60_000;

/// Admitted requests as `ts_ms` values.
#[derive(Debug, Default)]
pub(crate) struct Windows {
    app_second: HashMap<String, VecDeque<u64>>,
    app_minute: HashMap<String, VecDeque<u64>>,
    advertiser_minute: HashMap<String, VecDeque<u64>>,
}

/// Drops what left the window and says whether one more fits under `limit` (0 = no limit).
fn has_room(w: &mut VecDeque<u64>, span_ms: u64, limit: u32, ts_ms: u64) -> bool {
    while w.front().is_some_and(|front| front + span_ms <= ts_ms) {
        w.pop_front();
    }
    limit == 0 || w.len() < limit as usize
}

fn utc_day(ms: i64) -> NaiveDate {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .unwrap_or_default()
        .date_naive()
}

impl State {
    /// Admits a request (counting it in every window) or says which limit refused it. Refused requests
    /// are not counted; requests with no known app or advertiser skip those windows.
    pub fn admit(
        &mut self,
        app_id: Option<&str>,
        advertiser_id: Option<&str>,
        ts_ms: u64,
    ) -> Result<(), Reject> {
        let (qps, qpm, adv_qpm) = (self.qps, self.rules.qpm, self.rules.advertiser_qpm);
        let w = &mut self.windows;
        if let Some(app) = app_id {
            let s = w.app_second.entry(app.to_string()).or_default();
            if !has_room(s, SECOND_MS, qps, ts_ms) {
                return Err(reject(
                    codes::APP_RATE_LIMIT,
                    "Too many requests. The app exceeded its QPS limit; please retry later.",
                ));
            }
            let m = w.app_minute.entry(app.to_string()).or_default();
            if !has_room(m, MINUTE_MS, qpm, ts_ms) {
                return Err(reject(
                    codes::APP_RATE_LIMIT,
                    "Too many requests. The app exceeded its QPM limit; please retry later.",
                ));
            }
        }
        if let Some(adv) = advertiser_id {
            let a = w.advertiser_minute.entry(adv.to_string()).or_default();
            if !has_room(a, MINUTE_MS, adv_qpm, ts_ms) {
                return Err(reject(
                    codes::ADVERTISER_RATE_LIMIT,
                    "Too many requests for this advertiser; please retry later.",
                ));
            }
            a.push_back(ts_ms);
        }
        if let Some(app) = app_id {
            for map in [&mut w.app_second, &mut w.app_minute] {
                map.entry(app.to_string()).or_default().push_back(ts_ms);
            }
        }
        Ok(())
    }

    /// Counts one customer-file create/update call against the audience's daily budget.
    pub(crate) fn take_daily_call(&mut self, id: &str) -> Result<(), Reject> {
        let today = utc_day(self.now_ms());
        let Some(a) = self.audiences.get_mut(id) else {
            return Err(reject(
                codes::NOT_FOUND,
                format!("audience {id} does not exist"),
            ));
        };
        if a.day != Some(today) {
            a.day = Some(today);
            a.day_calls = 0;
        }
        if a.day_calls >= DAILY_AUDIENCE_CALLS {
            return Err(daily_limit(id));
        }
        a.day_calls += 1;
        Ok(())
    }

    pub(crate) fn check_daily_calls_left(&self, id: &str) -> Result<(), Reject> {
        let today = utc_day(self.now_ms());
        let left = self
            .audiences
            .get(id)
            .is_none_or(|a| a.day != Some(today) || a.day_calls < DAILY_AUDIENCE_CALLS);
        if left { Ok(()) } else { Err(daily_limit(id)) }
    }

    pub fn set_faults(&mut self, faults: FaultConfig) {
        self.fault_rng = StdRng::seed_from_u64(faults.seed.unwrap_or(self.seed));
        self.faults = faults;
    }

    pub fn faults(&self) -> &FaultConfig {
        &self.faults
    }

    pub fn latency(&self) -> Duration {
        Duration::from_millis(self.faults.latency_ms)
    }

    pub fn roll_fault(&mut self, path: &str) -> FaultDecision {
        let f = &self.faults;
        if let Some(paths) = &f.paths
            && !paths.iter().any(|p| p == path)
        {
            return FaultDecision::None;
        }
        let (rate, before, after) = (f.rate, f.drop_before_apply_rate, f.drop_after_apply_rate);
        let choices = f.codes.len() + f.http_errors.len();
        if rate > 0.0 && choices > 0 && self.fault_rng.random::<f64>() < rate {
            let i = self.fault_rng.random_range(0..choices);
            return if i < self.faults.codes.len() {
                FaultDecision::Code(self.faults.codes[i])
            } else {
                FaultDecision::Http(self.faults.http_errors[i - self.faults.codes.len()])
            };
        }
        if before > 0.0 && self.fault_rng.random::<f64>() < before {
            return FaultDecision::DropBefore;
        }
        if after > 0.0 && self.fault_rng.random::<f64>() < after {
            return FaultDecision::DropAfter;
        }
        FaultDecision::None
    }
}

fn daily_limit(id: &str) -> Reject {
    reject(
        codes::AUDIENCE_DAILY_LIMIT,
        format!("audience {id} reached its limit of {DAILY_AUDIENCE_CALLS} calls per day"),
    )
}

#[cfg(test)]
mod tests {
    use super::super::{AppSpec, Rules};
    use super::*;

    fn state(qps: u32, rules: Rules) -> State {
        let app = AppSpec {
            app_id: "a".into(),
            secret: "s".into(),
            redirect_uris: vec![],
            advertisers: vec![],
            scopes: vec![],
            streaming_allowed: false,
            advertiser_get_scope: None,
        };
        State::new(qps, 0.7, rules, app, FaultConfig::default(), 1)
    }

    #[test]
    fn sliding_window_admits_qps_per_app() {
        let mut st = state(2, Rules::default());
        assert!(st.admit(Some("a"), None, 1_000).is_ok());
        assert!(st.admit(Some("a"), None, 1_500).is_ok());
        assert!(
            st.admit(Some("a"), None, 1_999).is_err(),
            "third within 1,000 ms"
        );
        assert!(st.admit(Some("b"), None, 1_999).is_ok(), "per app");
        assert!(
            st.admit(Some("a"), None, 2_000).is_ok(),
            "the first left the window"
        );
        assert!(st.admit(Some("a"), None, 2_100).is_err());
    }

    #[test]
    fn minute_windows_per_app_and_per_advertiser() {
        let rules = Rules {
            qpm: 3,
            advertiser_qpm: 2,
            ..Rules::default()
        };
        let mut st = state(100, rules);
        assert!(st.admit(Some("a"), Some("x"), 0).is_ok());
        assert!(st.admit(Some("b"), Some("x"), 10_000).is_ok());
        let e = st.admit(Some("c"), Some("x"), 20_000).unwrap_err();
        assert_eq!(
            e.0,
            codes::ADVERTISER_RATE_LIMIT,
            "advertiser x is shared by apps"
        );
        assert!(st.admit(Some("a"), Some("y"), 20_000).is_ok());
        assert!(st.admit(Some("a"), None, 30_000).is_ok());
        let e = st.admit(Some("a"), None, 59_999).unwrap_err();
        assert_eq!(
            e.0,
            codes::APP_RATE_LIMIT,
            "fourth request of app a in a minute"
        );
        assert!(
            st.admit(Some("a"), None, 60_000).is_ok(),
            "the first left the minute"
        );
    }
}
