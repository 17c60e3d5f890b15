//! Syncs and their runs.

use audience_core::model::{
    Cadence, DEFAULT_MAX_REMOVAL_RATIO, DEFAULT_MIN_CREATE_SIZE, IntegrationStatus, RunLedger,
    RunState, SyncConfig, SyncState, WriteMode,
};
use audience_core::ports::{CreateSync, PortError, ScheduleRate, schedule_name, update_sync_with};
use audience_core::sync::input::Trigger;
use audience_tiktok::AccessToken;
use secrecy::ExposeSecret;
use serde::Deserialize;
use serde_json::{Value, json};
use tracing::{info, warn};

use super::project::not_connected;
use super::views::{run_json, sync_json};
use super::{Api, ApiError, ApiRequest, ApiResponse, ErrorCode, parse_body, valid_id};

/// TikTok keeps at most 400 custom audiences per advertiser.
pub const MAX_AUDIENCES_PER_ADVERTISER: usize = 400;
const DEFAULT_RUNS_PAGE: u32 = 20;
const MAX_RUNS_PAGE: u32 = 100;

/// The warning an hourly customer-file sync carries.
pub const HOURLY_CUSTOMER_FILE_WARNING: &str = "hourly customer_file sync: TikTok allows 24 create/update \
     calls per audience per UTC day, so changes beyond that budget are deferred to the next day's runs";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateSyncBody {
    cohort_id: String,
    advertiser_id: String,
    cadence: Cadence,
    #[serde(default)]
    audience_name: Option<String>,
    #[serde(default)]
    write_mode: Option<WriteMode>,
    #[serde(default)]
    max_removal_ratio: Option<f64>,
    #[serde(default)]
    min_create_size: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PatchSyncBody {
    #[serde(default)]
    cadence: Option<Cadence>,
    #[serde(default)]
    paused: Option<bool>,
    #[serde(default)]
    max_removal_ratio: Option<f64>,
    #[serde(default)]
    min_create_size: Option<u64>,
    #[serde(default)]
    audience_name: Option<String>,
}

/// Store pages read at most for one filtered page of runs.
const MAX_FILTER_PAGES: usize = 20;

/// Consecutive `up_to_date` runs (an hourly sync with an unchanged cohort) become one entry: the newest, with
/// `collapsed_count` and the oldest one's `oldest_started_at`.
fn collapse_up_to_date(runs: &[RunLedger]) -> Vec<Value> {
    let mut out: Vec<Value> = Vec::new();
    let mut streak = 0u64;
    for r in runs {
        if r.state == RunState::UpToDate && streak > 0 {
            streak += 1;
            if let Some(last) = out.last_mut() {
                last["collapsed_count"] = json!(streak);
                last["oldest_started_at"] = json!(r.started_at);
            }
            continue;
        }
        streak = u64::from(r.state == RunState::UpToDate);
        out.push(run_json(r));
    }
    out
}

fn check_name(n: Option<&str>) -> Result<Option<String>, ApiError> {
    match n.map(str::trim) {
        None => Ok(None),
        Some(n) if n.is_empty() || n.chars().count() > 128 => {
            Err(ApiError::invalid("audience_name must be 1-128 characters"))
        }
        Some(n) => Ok(Some(n.to_string())),
    }
}

fn check_ratio(r: Option<f64>) -> Result<(), ApiError> {
    match r {
        Some(r) if !(r.is_finite() && (0.0..=1.0).contains(&r)) => Err(ApiError::invalid(
            "max_removal_ratio must be a number from 0 to 1",
        )),
        _ => Ok(()),
    }
}

fn check_min_size(n: Option<u64>) -> Result<(), ApiError> {
    match n {
        Some(n) if !(1..=100_000_000).contains(&n) => Err(ApiError::invalid(
            "min_create_size must be from 1 to 100000000",
        )),
        _ => Ok(()),
    }
}

fn warnings_for(cadence: Cadence, mode: WriteMode) -> Vec<String> {
    if cadence == Cadence::Hourly && mode == WriteMode::CustomerFile {
        vec![HOURLY_CUSTOMER_FILE_WARNING.to_string()]
    } else {
        vec![]
    }
}

fn rate_of(cadence: Cadence) -> Option<ScheduleRate> {
    match cadence {
        Cadence::Hourly => Some(ScheduleRate::Hourly),
        Cadence::Daily => Some(ScheduleRate::Daily),
        Cadence::OneTime | Cadence::OnUpload => None,
    }
}

/// Whether an existing sync answers this creation request: the fields the request gives must match.
fn same_request(s: &SyncConfig, b: &CreateSyncBody, name: &Option<String>) -> bool {
    s.cadence == b.cadence
        && (name.is_none() || &s.audience_name == name)
        && b.max_removal_ratio.is_none_or(|r| r == s.max_removal_ratio)
        && b.min_create_size.is_none_or(|n| n == s.min_create_size)
}

fn sync_not_found(sync_id: &str) -> ApiError {
    ApiError::not_found(format!("no sync {sync_id} in this project"))
}

impl Api {
    async fn load_sync(&self, project_id: &str, sync_id: &str) -> Result<SyncConfig, ApiError> {
        if !valid_id(sync_id) {
            return Err(sync_not_found(sync_id));
        }
        self.deps
            .state
            .get_sync(project_id, sync_id)
            .await?
            .ok_or_else(|| sync_not_found(sync_id))
    }

    pub(crate) async fn list_syncs(&self, project_id: &str) -> Result<ApiResponse, ApiError> {
        let mut syncs = self.deps.state.list_syncs(project_id).await?;
        syncs.sort_by(|a, b| a.sync_id.cmp(&b.sync_id));
        let list: Vec<Value> = syncs.iter().map(sync_json).collect();
        Ok(ApiResponse::json(200, &json!({"syncs": list})))
    }

    pub(crate) async fn get_sync(
        &self,
        project_id: &str,
        sync_id: &str,
    ) -> Result<ApiResponse, ApiError> {
        let s = self.load_sync(project_id, sync_id).await?;
        Ok(ApiResponse::json(200, &sync_json(&s)))
    }

    pub(crate) async fn create_sync(
        &self,
        req: &ApiRequest,
        project_id: &str,
    ) -> Result<ApiResponse, ApiError> {
        let b: CreateSyncBody = parse_body(req)?;
        if !valid_id(&b.cohort_id) {
            return Err(ApiError::invalid(
                "cohort_id must be 1-64 characters of A-Z, a-z, 0-9, _ and -",
            ));
        }
        if !valid_id(&b.advertiser_id) {
            return Err(ApiError::invalid(
                "advertiser_id must be a TikTok advertiser id (a string of digits)",
            ));
        }
        let name = check_name(b.audience_name.as_deref())?;
        check_ratio(b.max_removal_ratio)?;
        check_min_size(b.min_create_size)?;
        let write_mode = b.write_mode.unwrap_or_default();

        let st = &self.deps.state;
        let integration = st
            .get_integration(project_id)
            .await?
            .filter(|i| i.status == IntegrationStatus::Connected)
            .ok_or_else(|| not_connected(project_id))?;
        if integration.mapping.is_none() {
            return Err(ApiError::new(
                ErrorCode::MappingMissing,
                "save the key mapping (PUT .../mapping) before creating a sync",
            ));
        }
        if !integration
            .advertisers
            .iter()
            .any(|a| a.advertiser_id == b.advertiser_id)
        {
            return Err(ApiError::new(
                ErrorCode::AdvertiserNotAuthorized,
                format!(
                    "advertiser {} is not among the ad accounts this project authorized",
                    b.advertiser_id
                ),
            ));
        }
        // Idempotent creation: the same request answers the existing sync.
        let existing = st.list_syncs(project_id).await?.into_iter().find(|s| {
            s.cohort_id == b.cohort_id
                && s.advertiser_id == b.advertiser_id
                && s.write_mode == write_mode
        });
        if let Some(s) = existing {
            return self.existing_answer(s, &b, &name);
        }
        self.check_audience_room(project_id, &b.advertiser_id)
            .await?;

        let now = self.now();
        let sync_id = ulid::Ulid::new().to_string();
        let sync = SyncConfig {
            sync_id: sync_id.clone(),
            project_id: project_id.to_string(),
            cohort_id: b.cohort_id.clone(),
            advertiser_id: b.advertiser_id.clone(),
            cadence: b.cadence,
            write_mode,
            state: SyncState::Active,
            audience_name: name.clone(),
            max_removal_ratio: b.max_removal_ratio.unwrap_or(DEFAULT_MAX_REMOVAL_RATIO),
            min_create_size: b.min_create_size.unwrap_or(DEFAULT_MIN_CREATE_SIZE),
            schedule_name: b.cadence.is_recurring().then(|| schedule_name(&sync_id)),
            committed: None,
            pending_export: None,
            warnings: warnings_for(b.cadence, write_mode),
            created_at: now,
            updated_at: now,
            version: 0,
            progress: Default::default(),
        };
        let created = match st.create_sync(&sync).await? {
            CreateSync::Created(s) => s,
            // A concurrent identical request won the race.
            CreateSync::Exists(s) => return self.existing_answer(s, &b, &name),
        };
        if let Some(rate) = rate_of(created.cadence)
            && let Err(e) = self
                .deps
                .schedules
                .upsert_schedule(project_id, &created.sync_id, rate, true)
                .await
        {
            // No sync without its schedule: undo, and let the caller retry.
            if let Err(undo) = st.delete_sync(project_id, &created.sync_id).await {
                warn!(sync_id = %created.sync_id, error = %undo, "could not undo a sync without schedule");
            }
            return Err(e.into());
        }
        let mut body = sync_json(&created);
        if created.cadence == Cadence::OneTime
            && audience_core::cohort::listing::newest_export(
                &*self.deps.state,
                &*self.deps.cohorts,
                &created.cohort_id,
            )
            .await?
            .is_some()
            && let Err(e) = self.invoke_manual(project_id, &created.sync_id).await
        {
            warn!(sync_id = %created.sync_id, error = %e, "first run not started");
            if let Some(w) = body.get_mut("warnings").and_then(Value::as_array_mut) {
                w.push(json!(format!(
                    "the first run could not be started ({e}); start it with POST .../syncs/{}/run",
                    created.sync_id
                )));
            }
        }
        info!(project_id, sync_id = %created.sync_id, cadence = ?created.cadence, "sync created");
        Ok(ApiResponse::json(201, &body))
    }

    fn existing_answer(
        &self,
        s: SyncConfig,
        b: &CreateSyncBody,
        name: &Option<String>,
    ) -> Result<ApiResponse, ApiError> {
        if same_request(&s, b, name) {
            Ok(ApiResponse::json(200, &sync_json(&s)))
        } else {
            Err(ApiError::new(
                ErrorCode::Conflict,
                format!(
                    "sync {} already syncs cohort {} to advertiser {} ({}) with other settings; \
                     PATCH or DELETE it",
                    s.sync_id,
                    s.cohort_id,
                    s.advertiser_id,
                    serde_json::to_value(s.write_mode)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_string))
                        .unwrap_or_default()
                ),
            ))
        }
    }

    /// A new name for a sync whose audience exists is given to TikTok first (the engine's name, with its
    /// `[as:<sync id>]` suffix); before the audience exists, the name is only stored for its creation.
    async fn rename_on_tiktok(&self, s: &SyncConfig, name: &str) -> Result<(), ApiError> {
        let Some(audience_id) = s.progress.tiktok_audience_id.as_deref() else {
            return Ok(());
        };
        let renamed = SyncConfig {
            audience_name: Some(name.to_string()),
            ..s.clone()
        };
        let full = audience_core::sync::engine::audience_name(&renamed);
        if s.write_mode == WriteMode::Streaming {
            return Err(ApiError::invalid(
                "TikTok renames only customer-file audiences through its API: rename this streaming audience \
                 in TikTok Ads Manager (the name is not changed here)",
            ));
        }
        // A rename is an update call: it spends one of the audience's daily calls, as TikTok counts them.
        let budget = audience_core::sync::EngineSettings::default().daily_budget;
        let key = format!("sync:{}", s.sync_id);
        if let audience_core::ports::BudgetOutcome::Exhausted { used } = self
            .deps
            .state
            .try_consume_daily_call(&key, self.now(), budget)
            .await?
        {
            return Err(ApiError::new(
                ErrorCode::Conflict,
                format!(
                    "this audience used its {used} TikTok update calls of the UTC day; rename it tomorrow"
                ),
            ));
        }
        let conn = self
            .deps
            .vault
            .get_connection(&s.project_id)
            .await?
            .ok_or_else(|| not_connected(&s.project_id))?;
        let token = AccessToken::new(conn.access_token.expose_secret());
        match self
            .deps
            .tiktok
            .rename_audience(&token, &s.advertiser_id, audience_id, &full)
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => Err(self.tiktok_refusal(&s.project_id, &e).await),
        }
    }

    /// A TikTok error as the API's: a refused token marks the integration `reconnect_required` (the rule a
    /// run applies, `sync::reconnect`), anything else is `tiktok_error`.
    async fn tiktok_refusal(&self, project_id: &str, e: &audience_tiktok::TikTokError) -> ApiError {
        if e.action() != audience_tiktok::ErrorAction::ReconnectRequired {
            return ApiError::tiktok(e);
        }
        let (st, sc) = (&*self.deps.state, &*self.deps.schedules);
        if let Err(pe) =
            audience_core::sync::reconnect::require_reconnect(st, sc, project_id, self.now()).await
        {
            return pe.into();
        }
        ApiError::new(
            ErrorCode::ReconnectRequired,
            format!(
                "TikTok refused this project's token ({}): reconnect TikTok (POST \
                 /v1/projects/{project_id}/connect or the console), then try again",
                e.message()
            ),
        )
    }

    /// TikTok keeps at most 400 audiences per advertiser: count them before adding one more.
    async fn check_audience_room(
        &self,
        project_id: &str,
        advertiser_id: &str,
    ) -> Result<(), ApiError> {
        let conn = self
            .deps
            .vault
            .get_connection(project_id)
            .await?
            .ok_or_else(|| not_connected(project_id))?;
        let token = AccessToken::new(conn.access_token.expose_secret());
        let list = match self.deps.tiktok.list_audiences(&token, advertiser_id).await {
            Ok(l) => l,
            Err(e) => return Err(self.tiktok_refusal(project_id, &e).await),
        };
        let n = list.data.len();
        if n >= MAX_AUDIENCES_PER_ADVERTISER {
            return Err(ApiError::new(
                ErrorCode::AudienceLimit,
                format!(
                    "advertiser {advertiser_id} has {n} audiences; TikTok allows {MAX_AUDIENCES_PER_ADVERTISER} \
                     (delete some on TikTok first)"
                ),
            ));
        }
        Ok(())
    }

    pub(crate) async fn patch_sync(
        &self,
        req: &ApiRequest,
        project_id: &str,
        sync_id: &str,
    ) -> Result<ApiResponse, ApiError> {
        let b: PatchSyncBody = parse_body(req)?;
        check_ratio(b.max_removal_ratio)?;
        check_min_size(b.min_create_size)?;
        let new_name = check_name(b.audience_name.as_deref())?;
        let before = self.load_sync(project_id, sync_id).await?;
        if let Some(n) = &new_name
            && before.audience_name.as_ref() != Some(n)
        {
            self.rename_on_tiktok(&before, n).await?;
        }
        let updated = update_sync_with(self.deps.state.as_ref(), project_id, sync_id, |s| {
            if let Some(c) = b.cadence {
                // A completed one-time sync given another cadence runs again: `Completed` is derived from
                // the cadence and the engine's `one_time_done` (`effective_state`), so the new cadence is
                // enough; a `completed` stored by an older version is cleared so it cannot come back.
                if c != s.cadence && s.state == SyncState::Completed {
                    s.state = SyncState::Active;
                }
                s.cadence = c;
                s.schedule_name = c.is_recurring().then(|| schedule_name(&s.sync_id));
                s.warnings = warnings_for(c, s.write_mode);
            }
            match b.paused {
                Some(true) if s.state == SyncState::Active => s.state = SyncState::Paused,
                Some(false) if s.state == SyncState::Paused => s.state = SyncState::Active,
                _ => {}
            }
            if let Some(r) = b.max_removal_ratio {
                s.max_removal_ratio = r;
            }
            if let Some(n) = b.min_create_size {
                s.min_create_size = n;
            }
            if let Some(n) = &new_name {
                s.audience_name = Some(n.clone());
            }
            s.updated_at = chrono::Utc::now();
        })
        .await?;
        let integration = self
            .deps
            .state
            .get_integration(project_id)
            .await?
            .map_or(IntegrationStatus::NotConnected, |i| i.status);
        // The schedule follows the sync: present for hourly/daily, enabled by the one rule.
        match rate_of(updated.cadence) {
            Some(rate) => {
                let enabled = updated.schedule_enabled(integration);
                self.deps
                    .schedules
                    .upsert_schedule(project_id, sync_id, rate, enabled)
                    .await?;
            }
            None if before.cadence.is_recurring() => {
                self.deps.schedules.delete_schedule(sync_id).await?;
            }
            None => {}
        }
        let mut body = sync_json(&updated);
        // Resumed: exports that arrived while paused are applied now, not at the next upload or schedule.
        let resumed = before.effective_state() == SyncState::Paused
            && updated.effective_state() == SyncState::Active;
        if resumed
            && integration == IntegrationStatus::Connected
            && let Err(e) = self.invoke_manual(project_id, sync_id).await
        {
            warn!(sync_id, error = %e, "run after resume not started");
            if let Some(w) = body.get_mut("warnings").and_then(Value::as_array_mut) {
                w.push(json!(format!(
                    "the run applying exports that arrived while paused could not be started ({e}); \
                     start it with POST .../syncs/{sync_id}/run"
                )));
            }
        }
        Ok(ApiResponse::json(200, &body))
    }

    /// Starts a run now (the runner applies the cohort's newest export).
    async fn invoke_manual(&self, project_id: &str, sync_id: &str) -> Result<(), PortError> {
        let t = Trigger::Manual {
            project_id: project_id.to_string(),
            sync_id: sync_id.to_string(),
        };
        self.deps.invoker.invoke_async(&t.to_json()).await
    }

    pub(crate) async fn delete_sync(
        &self,
        project_id: &str,
        sync_id: &str,
    ) -> Result<ApiResponse, ApiError> {
        let s = self.load_sync(project_id, sync_id).await?;
        self.remove_sync(&s).await?;
        Ok(ApiResponse::empty(204))
    }

    /// Schedule, snapshots and reports (every version), then the sync with its runs, then the objects again.
    /// The TikTok audience is kept.
    pub(crate) async fn remove_sync(&self, s: &SyncConfig) -> Result<(), ApiError> {
        self.deps.schedules.delete_schedule(&s.sync_id).await?;
        self.deps
            .cohorts
            .delete_sync_objects(&s.project_id, &s.sync_id)
            .await?;
        self.deps
            .state
            .delete_sync(&s.project_id, &s.sync_id)
            .await?;
        // Once more now that the record is gone: a run in flight may have written a snapshot or report since
        // the first pass (from here on its commit fails: the sync is not found).
        self.deps
            .cohorts
            .delete_sync_objects(&s.project_id, &s.sync_id)
            .await?;
        info!(project_id = %s.project_id, sync_id = %s.sync_id, "sync deleted (audience kept)");
        Ok(())
    }

    pub(crate) async fn run_sync(
        &self,
        project_id: &str,
        sync_id: &str,
    ) -> Result<ApiResponse, ApiError> {
        let s = self.load_sync(project_id, sync_id).await?;
        let connected = self
            .deps
            .state
            .get_integration(project_id)
            .await?
            .is_some_and(|i| i.status == IntegrationStatus::Connected);
        if !connected {
            return Err(not_connected(project_id));
        }
        self.invoke_manual(project_id, &s.sync_id).await?;
        Ok(ApiResponse::json(202, &json!({"accepted": true})))
    }

    pub(crate) async fn list_runs(
        &self,
        req: &ApiRequest,
        project_id: &str,
        sync_id: &str,
    ) -> Result<ApiResponse, ApiError> {
        let limit = match req.query_param("limit") {
            None => DEFAULT_RUNS_PAGE,
            Some(v) => match v.parse::<u32>() {
                Ok(n) if (1..=MAX_RUNS_PAGE).contains(&n) => n,
                _ => {
                    return Err(ApiError::invalid(format!(
                        "limit must be a whole number from 1 to {MAX_RUNS_PAGE}"
                    )));
                }
            },
        };
        let cursor = req.query_param("cursor").filter(|c| !c.is_empty());
        if cursor.is_some_and(|c| !valid_id(c)) {
            return Err(ApiError::invalid(
                "cursor must be a next_cursor of a previous page",
            ));
        }
        let state = match req.query_param("state").filter(|v| !v.is_empty()) {
            None => None,
            Some(v) => Some(
                RunState::ALL
                    .into_iter()
                    .find(|st| st.as_str() == v)
                    .ok_or_else(|| {
                        let all: Vec<&str> = RunState::ALL.map(RunState::as_str).to_vec();
                        ApiError::invalid(format!(
                            "state must be a run state ({}), not {v:?}",
                            all.join(", ")
                        ))
                    })?,
            ),
        };
        let collapse = match req.query_param("collapse") {
            None | Some("true") => true,
            Some("false") => false,
            Some(_) => return Err(ApiError::invalid("collapse must be true or false")),
        };
        let owner = self.runs_owner(project_id, sync_id).await?;
        let (runs, next_cursor) = self.runs_page(&owner, limit, cursor, state).await?;
        let runs = if collapse {
            collapse_up_to_date(&runs)
        } else {
            runs.iter().map(run_json).collect()
        };
        Ok(ApiResponse::json(
            200,
            &json!({"runs": runs, "next_cursor": next_cursor}),
        ))
    }

    /// Up to `limit` runs (of `state`, when given), newest first, reading the store's pages until enough
    /// match; the cursor continues after the last run read.
    async fn runs_page(
        &self,
        sync_id: &str,
        limit: u32,
        cursor: Option<&str>,
        state: Option<RunState>,
    ) -> Result<(Vec<RunLedger>, Option<String>), ApiError> {
        let Some(state) = state else {
            let page = self.deps.state.list_runs(sync_id, limit, cursor).await?;
            return Ok((page.runs, page.next_cursor));
        };
        let mut out = Vec::new();
        let mut cursor = cursor.map(str::to_string);
        // A bounded walk: a rare state in a long history answers a short page with a cursor, not a timeout.
        for _ in 0..MAX_FILTER_PAGES {
            let page = self
                .deps
                .state
                .list_runs(sync_id, limit, cursor.as_deref())
                .await?;
            for r in page.runs {
                if out.len() == limit as usize {
                    return Ok((out, cursor));
                }
                // The cursor is the last run read (matching or not): the next page starts after it.
                cursor = Some(r.run_id.clone());
                if r.state == state {
                    out.push(r);
                }
            }
            if page.next_cursor.is_none() {
                return Ok((out, None));
            }
        }
        Ok((out, cursor))
    }

    pub(crate) async fn get_run(
        &self,
        project_id: &str,
        sync_id: &str,
        run_id: &str,
    ) -> Result<ApiResponse, ApiError> {
        let owner = self.runs_owner(project_id, sync_id).await?;
        let not_found = || ApiError::not_found(format!("no run {run_id} of sync {sync_id}"));
        if !valid_id(run_id) {
            return Err(not_found());
        }
        let run = self
            .deps
            .state
            .get_run(&owner, run_id)
            .await?
            .filter(|r| r.project_id == project_id)
            .ok_or_else(not_found)?;
        Ok(ApiResponse::json(200, &run_json(&run)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hourly_customer_file_warns() {
        assert_eq!(
            warnings_for(Cadence::Hourly, WriteMode::CustomerFile).len(),
            1
        );
        assert!(warnings_for(Cadence::Hourly, WriteMode::Streaming).is_empty());
        assert!(warnings_for(Cadence::Daily, WriteMode::CustomerFile).is_empty());
    }

    #[test]
    fn ratio_and_size_bounds() {
        assert!(check_ratio(Some(1.5)).is_err());
        assert!(check_ratio(Some(f64::NAN)).is_err());
        assert!(check_ratio(Some(0.0)).is_ok());
        assert!(check_min_size(Some(0)).is_err());
        assert!(check_min_size(None).is_ok());
    }
}
