use std::time::{Duration, Instant};

use audience_aws::DynamoRateGate;
use audience_core::ports::RateGate;
use audience_sync_tests::{TestEnv, unique_name};

/// Largest number of timestamps in any half-open window `[t, t + width)`.
fn max_in_window(sorted: &[Instant], width: Duration) -> usize {
    let mut best = 0;
    let mut j = 0;
    for i in 0..sorted.len() {
        while j < sorted.len() && sorted[j] < sorted[i] + width {
            j += 1;
        }
        best = best.max(j - i);
    }
    best
}

#[test]
fn window_counting_is_right() {
    let t = Instant::now();
    let at = |ms: u64| t + Duration::from_millis(ms);
    let v = vec![at(0), at(100), at(999), at(1000), at(1500)];
    assert_eq!(max_in_window(&v, Duration::from_secs(1)), 3);
}

#[tokio::test]
async fn three_runners_share_the_app_wide_rate() {
    let env = TestEnv::new().await.expect("test env");
    let app = unique_name("app");
    let rate = 20.0;
    let per_task = 15;
    let mut handles = Vec::new();
    for _ in 0..3 {
        // One gate per task, as separate Lambda processes would have: they share only the DynamoDB item.
        let gate = DynamoRateGate::new(env.clients.dynamodb.clone(), env.table.clone(), &app, rate);
        handles.push(tokio::spawn(async move {
            let mut stamps = Vec::new();
            for _ in 0..per_task {
                gate.acquire().await.expect("acquire");
                stamps.push(Instant::now());
            }
            stamps
        }));
    }
    let mut per_task_stamps = Vec::new();
    for h in handles {
        per_task_stamps.push(h.await.unwrap());
    }
    // The three drew on the limiter at the same time (their grant periods overlap), so the shared item, not
    // turn-taking, is what kept them apart.
    let latest_first = per_task_stamps.iter().map(|v| v[0]).max().unwrap();
    let earliest_last = per_task_stamps
        .iter()
        .map(|v| *v.last().unwrap())
        .min()
        .unwrap();
    assert!(
        latest_first < earliest_last,
        "the tasks did not run concurrently"
    );
    let mut all: Vec<Instant> = per_task_stamps.into_iter().flatten().collect();
    all.sort();
    assert_eq!(all.len(), 3 * per_task);
    let max = max_in_window(&all, Duration::from_secs(1));
    let span = *all.last().unwrap() - all[0];
    eprintln!(
        "app-wide limiter: {} grants over {span:?}, at most {max} in any sliding second (rate {rate})",
        all.len()
    );
    assert!(
        max <= rate as usize,
        "{max} requests within one second, limit {rate}"
    );
}
