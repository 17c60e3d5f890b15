//! Plan: read the export whole, load what the audience holds as far as we know (the committed snapshot)
//! and what is uncertain (writes that got no answer), diff, and pass the guards. Then apply and commit.

use tracing::warn;

use super::lease::RunDone;
use super::prepare::{Ctx, Ready};
use super::settle::{SettleRules, settle};
use super::{Engine, EngineError};
use crate::cohort::reader::{CohortDigests, digest_reader_with};
use crate::digests::merge::{self, ChangeLists};
use crate::digests::snapshot::SnapshotReader;
use crate::digests::{Sorted, SortedWriter};
use crate::identifiers::Normalizer;
use crate::model::{ExportRef, KeyMapping, RunState, SnapshotRef, SyncConfig};
use crate::ports::PortError;
use crate::sync::guards::{self, GuardInput, GuardSettings, Verdict};

/// A run that ends before apply: its state, reason, and whether a plan was made (a guard refused it).
type Refusal = (RunState, String, bool);

/// What one run sends: the diff of the cohort against the base, plus every uncertain digest in the
/// cohort's direction (APPEND/add if in the cohort, REMOVE/delete if not; both idempotent on TikTok).
pub(super) struct Plan {
    pub export: ExportRef,
    pub base: Sorted,
    pub uncertain: Sorted,
    pub adds: Sorted,
    pub removes: Sorted,
    pub note: Option<String>,
}

/// What the audience holds as far as the sync knows.
pub(super) struct Known {
    pub base: Sorted,
    pub uncertain: Sorted,
    /// Why the base was discarded, if it was.
    pub note: Option<String>,
    pub audience: bool,
}

/// A plan's changes and the guards' verdict on them.
pub(super) struct Assessment {
    pub adds: Sorted,
    pub removes: Sorted,
    pub verdict: Verdict,
    /// The removal guard's measure: committed users not in the cohort (uncertain re-sends excluded).
    pub cohort_removes: u64,
    pub guards: GuardSettings,
}

impl Engine {
    pub(super) async fn plan_and_apply(
        &self,
        mut ctx: Ctx<'_>,
        ready: Ready,
    ) -> Result<RunDone, EngineError> {
        // Visible as running, with its export: a run that dies from here on is continued by the sweeper.
        if !self
            .deps
            .state
            .put_run(&ctx.tenure.fence, &ctx.ledger)
            .await?
        {
            return Ok(self.fenced(&ctx, "the ledger was refused before the run began"));
        }
        let plan = match self.plan(&mut ctx, &ready).await? {
            Ok(p) => p,
            Err((state, reason, planned)) => {
                return self.finish_quiet(ctx, state, Some(reason), planned).await;
            }
        };
        // Before the first write: everything this run may send is uncertain until answered, so a run that
        // dies mid-apply leaves nothing unaccounted for.
        let intent = if plan.adds.is_empty() && plan.removes.is_empty() {
            None
        } else {
            let (u, a, r) = (
                plan.uncertain.clone(),
                plan.adds.clone(),
                plan.removes.clone(),
            );
            let all = move || merge::union(merge::union(u.iter()?, a.iter()?)?, r.iter()?);
            Some(
                self.write_uncertain(&mut ctx, all, &ready.mapping, "intent")
                    .await?,
            )
        };
        if intent.as_ref().is_some_and(|w| !w.saved) {
            return Ok(self.fenced(
                &ctx,
                "the sync was deleted or taken over before the first write",
            ));
        }
        let prior_holds = ctx.sync.progress.consecutive_holds;
        let applied = self.apply(&mut ctx, &plan, &ready).await?;
        let settled = settle(
            &applied.tally,
            &SettleRules {
                now: self.now(),
                retry_after_failure: super::settings::chrono(self.settings.retry_after_failure),
                holds_before_warning: self.settings.holds_before_warning,
                prior_holds,
            },
        );
        let work = super::commit::Work {
            plan: &plan,
            applied: &applied,
            mapping: &ready.mapping,
        };
        self.commit(ctx, Some(work), settled, None).await
    }

    /// Read, base, uncertain, diff, guards. `Err((state, reason, planned))`: the run ends here, nothing
    /// sent (`planned`: a guard refused a plan; else the file could not be read).
    async fn plan(
        &self,
        ctx: &mut Ctx<'_>,
        ready: &Ready,
    ) -> Result<Result<Plan, Refusal>, EngineError> {
        let key = ready.export.s3_key.clone();
        // Read whole before anything else: a broken file never changes an audience.
        let read = match self.read_export(&key, &ready.mapping).await? {
            Ok(r) => r,
            Err(why) => {
                return Ok(Err((
                    RunState::Failed,
                    format!("the export could not be used: {why}"),
                    false,
                )));
            }
        };
        let counts = read.counts();
        ctx.ledger.rows = counts.rows;
        ctx.ledger.valid = counts.valid;
        ctx.ledger.unique = counts.unique;
        ctx.ledger.duplicates = counts.duplicates;
        ctx.ledger.skipped = counts.skipped.clone();
        ctx.sync.progress.used_export = true;

        let known = self.known(&ctx.sync, &ready.mapping).await?;
        let Assessment {
            adds,
            removes,
            verdict,
            ..
        } = self.assess(&ctx.sync, &read, &known).await?;
        let Known {
            base,
            uncertain,
            note,
            ..
        } = known;
        // A continuation's plan is what is left: its totals include what earlier invocations applied.
        ctx.ledger.adds.planned = ctx.ledger.adds.applied + adds.len() as u64;
        ctx.ledger.removes.planned = ctx.ledger.removes.applied + removes.len() as u64;
        ctx.ledger.uncertain_resent = uncertain.len() as u64;
        if let Verdict::Refuse { state, reason, .. } = verdict {
            if state == RunState::WaitingForMinimum {
                ctx.sync.progress.waiting_for_minimum = Some(counts.unique);
            }
            return Ok(Err((state, reason, true)));
        }
        ctx.sync.progress.waiting_for_minimum = None;
        Ok(Ok(Plan {
            export: ready.export.clone(),
            base,
            uncertain,
            adds,
            removes,
            note,
        }))
    }

    /// What the sync's audience holds as far as we know: the committed snapshot and the uncertain set.
    pub(super) async fn known(
        &self,
        sync: &SyncConfig,
        mapping: &KeyMapping,
    ) -> Result<Known, EngineError> {
        let audience = sync.progress.tiktok_audience_id.is_some();
        let (base, note) = if audience {
            self.load_base(sync, mapping).await?
        } else {
            (Sorted::empty(), None)
        };
        // Without an audience (and no create that may have happened) nothing is on TikTok's side.
        let maybe_audience = audience || sync.progress.audience_create_intent.is_some();
        let uncertain = match (&sync.progress.uncertain, maybe_audience) {
            (Some(u), true) => self.load_set(&u.snapshot, mapping).await?,
            _ => Sorted::empty(),
        };
        Ok(Known {
            base,
            uncertain,
            note,
            audience,
        })
    }

    /// The changes a run would send and the guards' verdict under the sync's settings: one function for
    /// runs and previews, so a preview cannot disagree with the run.
    pub(super) async fn assess(
        &self,
        sync: &SyncConfig,
        read: &CohortDigests,
        known: &Known,
    ) -> Result<Assessment, EngineError> {
        let (base, uncertain, cohort) = (
            known.base.clone(),
            known.uncertain.clone(),
            read.set.clone(),
        );
        let spill = self.settings.reader.spill.clone();
        let ChangeLists {
            adds,
            removes,
            cohort_removes,
        } = tokio::task::spawn_blocking(move || merge::changes(&base, &uncertain, &cohort, &spill))
            .await
            .map_err(|e| EngineError::Internal(format!("diff task: {e}")))?
            .map_err(|e| EngineError::Internal(format!("diff: {e}")))?;
        let settings = GuardSettings {
            max_malformed_ratio: self.settings.max_malformed_ratio,
            max_removal_ratio: sync.max_removal_ratio,
            min_create_size: sync.min_create_size,
        };
        let verdict = guards::check(
            &GuardInput {
                stats: &read.stats,
                unique: read.counts().unique,
                base_len: known.base.len() as u64,
                removes: cohort_removes,
                write_mode: sync.write_mode,
                audience_exists: known.audience,
            },
            &settings,
        );
        Ok(Assessment {
            adds,
            removes,
            verdict,
            cohort_removes,
            guards: settings,
        })
    }

    /// Streams the object through the pipeline on a blocking thread (gzip by name or by magic bytes).
    /// `Ok(Err(reason))`: the file could not be used (a run state, not an infrastructure failure).
    pub(super) async fn read_export(
        &self,
        key: &str,
        mapping: &KeyMapping,
    ) -> Result<Result<CohortDigests, String>, EngineError> {
        let gzip = key.to_ascii_lowercase().ends_with(".gz");
        let norm =
            match Normalizer::new(mapping.tiktok_key, mapping.default_phone_region.as_deref()) {
                Ok(n) => n,
                Err(e) => return Ok(Err(e.to_string())),
            };
        let object = match self.deps.cohorts.open(key).await {
            Ok(o) => o,
            Err(PortError::NotFound(_)) => return Ok(Err(format!("no object {key}"))),
            Err(e) => return Err(e.into()),
        };
        let column = mapping.amplitude_property.clone();
        let limits = self.settings.reader.clone();
        let read = tokio::task::spawn_blocking(move || {
            digest_reader_with(object.body, gzip, &column, &norm, &limits)
        })
        .await
        .map_err(|e| EngineError::Internal(format!("reader task: {e}")))?;
        Ok(read.map_err(|e| e.to_string()))
    }

    /// The committed snapshot, unless it was made under another rule version or key kind (then the whole
    /// cohort is re-sent, and the note says so).
    async fn load_base(
        &self,
        sync: &SyncConfig,
        mapping: &KeyMapping,
    ) -> Result<(Sorted, Option<String>), EngineError> {
        let Some(pointer) = &sync.committed else {
            return Ok((Sorted::empty(), None));
        };
        match self.read_set(&pointer.snapshot, mapping).await? {
            Ok(set) => Ok((set, None)),
            Err(e) if e.is_incompatible() => Ok((
                Sorted::empty(),
                Some(format!(
                    "the previous snapshot was discarded ({e}); the whole cohort was re-sent"
                )),
            )),
            Err(e) => {
                Err(PortError::Corrupt(format!("snapshot {}: {e}", pointer.snapshot.key)).into())
            }
        }
    }

    /// An uncertain set; an unreadable one is treated as empty (logged): its digests are then only
    /// corrected by the diff, as before uncertain sets existed.
    async fn load_set(&self, r: &SnapshotRef, mapping: &KeyMapping) -> Result<Sorted, EngineError> {
        match self.read_set(r, mapping).await? {
            Ok(s) => Ok(s),
            Err(e) => {
                warn!(error = %e, key = %r.key, "uncertain set unreadable; ignored");
                Ok(Sorted::empty())
            }
        }
    }

    async fn read_set(
        &self,
        r: &SnapshotRef,
        mapping: &KeyMapping,
    ) -> Result<Result<Sorted, crate::digests::snapshot::SnapshotError>, EngineError> {
        let object = self.deps.cohorts.open_snapshot(r).await?;
        let key = mapping.tiktok_key;
        let spill = self.settings.reader.spill.clone();
        // Streamed from S3 into a list that spills like the cohort's: a large base is never whole in memory.
        tokio::task::spawn_blocking(move || {
            let r = SnapshotReader::open(std::io::BufReader::with_capacity(1 << 20, object.body))?;
            r.header().check_compatible(key)?;
            let mut w = SortedWriter::new(&spill);
            for d in r {
                w.push(d?)?;
            }
            Ok(w.finish()?)
        })
        .await
        .map_err(|e| EngineError::Internal(format!("snapshot task: {e}")))
    }
}
