//! A preview against a sync is the run's own plan: at every step its verdict and counts are what the run
//! that follows does with the same file.

use serde_json::{Value, json};

use crate::model::PreviewState;

use super::*;

impl T {
    /// `user_id,email` rows for `users`, then `broken` rows with no email field (`malformed_row`).
    fn upload_with_broken(&self, hour: u32, users: std::ops::Range<u32>, broken: u32) -> String {
        let key = format!("cohorts/coh_2026-11-20T{hour:02}:00_existing_x.csv");
        let mut body = String::from("user_id,email\n");
        for i in users {
            body.push_str(&format!("a{i},u{i}@example.com\n"));
        }
        for i in 0..broken {
            body.push_str(&format!("b{i}\n"));
        }
        self.cohorts.put_object(&key, body.into_bytes());
        key
    }

    async fn preview(&self, id: &str, key: &str, sync_id: Option<&str>) -> (PreviewState, Value) {
        let mut trigger =
            json!({"trigger": "preview", "project_id": "p1", "preview_id": id, "s3_key": key});
        if let Some(s) = sync_id {
            trigger["sync_id"] = json!(s);
        }
        self.run(trigger).await;
        let rec = self.state.get_preview("p1", id).await.unwrap().unwrap();
        let body = rec.report.or(rec.error).unwrap_or_default();
        (rec.state, body)
    }

    /// The audience's members (none before it exists).
    async fn size(&self) -> usize {
        match self.sync().await.progress.tiktok_audience_id {
            Some(id) => self.tiktok.members(&id).len(),
            None => 0,
        }
    }

    /// Previews `key` against s1, runs it, and checks the two agree; returns the run's state.
    async fn preview_then_run(&self, id: &str, key: &str) -> (RunState, Value) {
        let (state, report) = self.preview(id, key, Some("s1")).await;
        assert_eq!(state, PreviewState::Done, "{report}");
        let before = self.size().await;
        self.upload_event(key).await;
        let run = self.sync().await.progress.last_run.expect("a run");
        let verdict = &report["verdict"];
        let want = match verdict["outcome"].as_str() {
            Some("would_apply") => RunState::Succeeded,
            _ => serde_json::from_value(verdict["state"].clone()).expect("a refusal's state"),
        };
        assert_eq!(run.state, want, "preview {report} vs run {run:?}");
        assert_eq!(report["adds"], json!(run.adds.planned), "{report}");
        assert_eq!(report["removes"], json!(run.removes.planned), "{report}");
        assert_eq!(report["unique"], json!(run.unique));
        if want != RunState::Succeeded {
            assert_eq!(self.size().await, before, "a refused run sent nothing");
            assert!(
                run.reason.as_deref() == verdict["message"].as_str(),
                "the same guard message: {run:?} vs {verdict}"
            );
        }
        (run.state, report)
    }
}

#[tokio::test]
async fn a_preview_against_a_sync_reaches_the_runs_verdict_and_counts() {
    let (t, _) = world(WriteMode::CustomerFile).await;
    // First a seed run, so the sync has an audience and a committed snapshot (100 users).
    let k0 = t.upload(1, 0..100);
    t.upload_event(&k0).await;
    assert_eq!(t.members().await, want(0..100));
    t.advance(WINDOW + 1);

    // Over the malformed limit: 10 broken rows of 70 (the default limit is 1 %).
    let k = t.upload_with_broken(2, 0..60, 10);
    let (state, r) = t.preview_then_run("PVMAL", &k).await;
    assert_eq!(state, RunState::Failed);
    assert_eq!(r["verdict"]["guard"], "malformed_rows");
    assert_eq!(r["against"]["committed_digests"], 100);

    // Too many removals: 95 of the 100 leave (the sync's max_removal_ratio is 0.9).
    let k = t.upload(3, 95..105);
    let (state, r) = t.preview_then_run("PVREM", &k).await;
    assert_eq!(state, RunState::HeldForReview);
    assert_eq!(r["verdict"]["guard"], "max_removal_ratio");
    assert_eq!(
        (r["adds"].clone(), r["removes"].clone()),
        (json!(5), json!(95))
    );
    assert_eq!(r["against"]["cohort_removes"], 95);
    assert_eq!(r["against"]["guards"]["max_removal_ratio"], 0.9);

    // A clean delta: applied as previewed.
    let k = t.upload(4, 10..130);
    let (state, r) = t.preview_then_run("PVOK", &k).await;
    assert_eq!(state, RunState::Succeeded);
    assert_eq!(
        (r["adds"].clone(), r["removes"].clone()),
        (json!(30), json!(10))
    );
    assert!(
        r["verdict"]["message"]
            .as_str()
            .unwrap()
            .contains("add 30 and remove 10"),
        "{r}"
    );
    // Customer files take one edit per processing window: the removal follows after the window.
    t.settle().await;
    assert_eq!(t.members().await, want(10..130));
    assert_eq!(r["against"]["audience_exists"], true);
}

#[tokio::test]
async fn before_the_first_run_a_sync_preview_uses_its_own_minimum() {
    let (t, _) = world(WriteMode::CustomerFile).await;
    // s1 creates from 10 digests; a new sync's default is 1,000: the two previews differ, the sync's wins.
    let k = t.upload(1, 0..50);
    let (_, generic) = t.preview("PVNEW", &k, None).await;
    assert_eq!(generic["verdict"]["guard"], "min_create_size", "{generic}");
    assert!(generic.get("against").is_none());
    assert!(generic.get("adds").is_none());
    let small = t.upload(2, 0..5);
    let (state, r) = t.preview_then_run("PVSMALL", &small).await;
    assert_eq!(state, RunState::WaitingForMinimum);
    assert_eq!(r["against"]["audience_exists"], false);
    let (state, r) = t.preview_then_run("PVFIRST", &t.upload(3, 0..50)).await;
    assert_eq!(state, RunState::Succeeded);
    assert_eq!(r["adds"], 50);
}

#[tokio::test]
async fn a_preview_against_an_unknown_sync_fails_clearly() {
    let (t, _) = world(WriteMode::CustomerFile).await;
    let k = t.upload(1, 0..20);
    let (state, err) = t.preview("PVNONE", &k, Some("nosuch")).await;
    assert_eq!(state, PreviewState::Failed);
    assert_eq!(err["code"], "not_found");
    assert!(err["message"].as_str().unwrap().contains("nosuch"));
}
