//! When the engine notifies: a failed run (not its identical repeats), the integration becoming
//! `reconnect_required` (once), a guard hold (once until another outcome), repeated holds (at the threshold).

use super::*;
use crate::notify::NoticeKind;
use crate::ports::memory::RecordingNotifier;

async fn notified(mode: WriteMode, instant: bool) -> (T, Arc<RecordingNotifier>) {
    let (mut t, _) = world_with(mode, instant).await;
    let n = Arc::new(RecordingNotifier::new());
    t.engine = t.engine.with_notifier(n.clone());
    (t, n)
}

fn kinds(n: &RecordingNotifier) -> Vec<NoticeKind> {
    n.notices().iter().map(|x| x.kind).collect()
}

#[tokio::test]
async fn guard_hold_is_told_once_until_another_outcome() {
    let (t, n) = notified(WriteMode::Streaming, true).await;
    let k1 = t.upload(1, 0..100);
    t.upload_event(&k1).await;
    assert!(n.notices().is_empty(), "a success tells nothing");
    // 95 of 100 leave: above the sync's 90 % mass-removal guard.
    let k2 = t.upload(2, 0..5);
    let out = t.upload_event(&k2).await;
    assert!(
        matches!(
            &out[..],
            [Outcome::Run {
                state: RunState::HeldForReview,
                ..
            }]
        ),
        "{out:?}"
    );
    assert_eq!(kinds(&n), vec![NoticeKind::HeldForReview]);
    let notice = &n.notices()[0];
    assert_eq!(
        (notice.project_id.as_str(), notice.sync_id.as_str()),
        ("p1", "s1")
    );
    assert_eq!(notice.cohort_id, "coh");
    assert_eq!(notice.removes.planned, 95);
    let body = notice.to_json();
    assert_eq!(body["event"], "held_for_review");
    let text = body["text"].as_str().unwrap();
    assert!(text.contains("s1") && text.contains("held"), "{text}");
    assert!(
        !text.contains("tok") && !text.contains("example.com"),
        "{text}"
    );
    // The same hold again: not told twice.
    let k3 = t.upload(3, 0..6);
    t.upload_event(&k3).await;
    assert_eq!(n.notices().len(), 1);
}

#[tokio::test]
async fn reconnect_required_is_told_once() {
    let (t, n) = notified(WriteMode::Streaming, true).await;
    let k1 = t.upload(1, 0..100);
    // The token is gone from the vault: the run fails and the integration needs a reconnect.
    t.engine.deps.vault.delete_connection("p1").await.unwrap();
    let out = t.upload_event(&k1).await;
    assert!(
        matches!(
            &out[..],
            [Outcome::Run {
                state: RunState::Failed,
                ..
            }]
        ),
        "{out:?}"
    );
    assert_eq!(kinds(&n), vec![NoticeKind::ReconnectRequired]);
    assert!(
        n.notices()[0].to_json()["text"]
            .as_str()
            .unwrap()
            .contains("reconnect")
    );
    // Later runs are skipped while reconnect_required: nothing more is told.
    let k2 = t.upload(2, 0..100);
    t.upload_event(&k2).await;
    t.run(serde_json::json!({"trigger": "manual", "project_id": "p1", "sync_id": "s1"}))
        .await;
    assert_eq!(n.notices().len(), 1);
}

#[tokio::test]
async fn a_failure_is_told_but_not_its_identical_repeat() {
    let (t, n) = notified(WriteMode::Streaming, true).await;
    let k1 = t.upload(1, 0..100);
    // Reconnected without a mapping: the run fails with "no key mapping".
    t.state.delete_integration("p1").await.unwrap();
    t.state
        .record_connection("p1", &[], &[31], t.clock.now())
        .await
        .unwrap();
    t.upload_event(&k1).await;
    assert_eq!(kinds(&n), vec![NoticeKind::RunFailed]);
    assert!(
        n.notices()[0]
            .reason
            .as_deref()
            .unwrap()
            .contains("mapping")
    );
    t.upload_event(&k1).await;
    assert_eq!(n.notices().len(), 1, "the same failure again");
}

#[tokio::test]
async fn repeated_holds_are_told_at_the_threshold() {
    // Customer files: right after the create TikTok processes, so the next exports apply nothing.
    let (t, n) = notified(WriteMode::CustomerFile, false).await;
    let k1 = t.upload(1, 0..100);
    t.upload_event(&k1).await;
    let mut states = Vec::new();
    for hour in 2..7 {
        let k = t.upload(hour, 0..(100 + hour));
        for o in t.upload_event(&k).await {
            if let Outcome::Run { state, .. } = o {
                states.push(state);
            }
        }
        t.advance(60);
    }
    assert!(states.iter().all(|s| *s == RunState::Held), "{states:?}");
    let told = n.notices();
    assert_eq!(kinds(&n), vec![NoticeKind::RepeatedHolds], "{told:?}");
    assert_eq!(told[0].consecutive_holds, 3);
}
