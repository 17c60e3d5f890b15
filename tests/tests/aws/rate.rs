use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_sdk_dynamodb::types::AttributeValue;

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

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64
}

async fn put_tat(env: &TestEnv, app: &str, tat: i64) {
    env.clients
        .dynamodb
        .put_item()
        .table_name(&env.table)
        .item("pk", AttributeValue::S(format!("RATE#{app}")))
        .item("sk", AttributeValue::S("GCRA".into()))
        .item("tat_us", AttributeValue::N(tat.to_string()))
        .send()
        .await
        .expect("put");
}

/// While the gate is busy, each slot is one atomic `ADD`: 20 contenders lose no race and need no restart.
/// (A read and a compare-and-set per slot, as before, made 19 of them lose and retry.)
#[tokio::test]
async fn twenty_contenders_take_slots_of_a_busy_gate_without_conflicts() {
    let env = TestEnv::new().await.expect("test env");
    let app = unique_name("app");
    let rate = 50.0;
    // Busy: the next free slot is a second ahead, far more than any round trip here.
    put_tat(&env, &app, now_us() + 1_000_000).await;
    let gate = DynamoRateGate::new(env.clients.dynamodb.clone(), env.table.clone(), &app, rate);
    let mut handles = Vec::new();
    for _ in 0..20 {
        // Clones share the counters, not any state that spaces the slots: only the DynamoDB item does.
        let gate = gate.clone();
        handles.push(tokio::spawn(async move {
            gate.acquire().await.expect("acquire");
            Instant::now()
        }));
    }
    let mut all = Vec::new();
    for h in handles {
        all.push(h.await.unwrap());
    }
    all.sort();
    let stats = gate.stats();
    assert_eq!(
        (stats.slots, stats.conflicts, stats.restarts),
        (20, 0, 0),
        "{stats:?}"
    );
    // Distinct slots one interval apart: the 20 releases span 19 intervals, less the lateness allowed.
    let span = *all.last().unwrap() - all[0];
    let least = gate.interval() * 19 - Duration::from_millis(40);
    assert!(
        span >= least,
        "20 slots within {span:?}, expected >= {least:?}"
    );
}

/// An idle gate, 20 contenders at once and a rate whose interval (21.6 ms) is shorter than moto's round trip
/// under that load (~100 ms): the gate may go idle again between slots and be restarted, but it never lets
/// more than the rate through in any sliding second, and every contender gets its slots.
#[tokio::test]
async fn twenty_contenders_on_an_idle_gate_slower_than_its_interval_stay_under_the_rate() {
    let env = TestEnv::new().await.expect("test env");
    let app = unique_name("app");
    let rate = 50.0;
    let gate = DynamoRateGate::new(env.clients.dynamodb.clone(), env.table.clone(), &app, rate);
    let mut handles = Vec::new();
    for _ in 0..20 {
        let gate = gate.clone();
        handles.push(tokio::spawn(async move {
            let mut stamps = Vec::new();
            for _ in 0..5 {
                gate.acquire().await.expect("acquire");
                stamps.push(Instant::now());
            }
            stamps
        }));
    }
    let mut all = Vec::new();
    for h in handles {
        all.extend(h.await.unwrap());
    }
    all.sort();
    let stats = gate.stats();
    eprintln!("{stats:?}");
    assert_eq!(stats.slots, 100);
    assert!(stats.restarts >= 1, "{stats:?}");
    let max = max_in_window(&all, Duration::from_secs(1));
    assert!(
        max <= rate as usize,
        "{max} grants in one second at {rate}/s"
    );
}

/// A gate whose next free slot is more than a minute ahead refuses at once with a hint, and does not push
/// the slot further (a refused caller takes nothing).
#[tokio::test]
async fn a_backlogged_gate_refuses_with_a_hint_and_takes_no_slot() {
    let env = TestEnv::new().await.expect("test env");
    let app = unique_name("app");
    let key = format!("RATE#{app}");
    let ahead_us = now_us() + 120_000_000;
    put_tat(&env, &app, ahead_us).await;
    let gate = DynamoRateGate::new(env.clients.dynamodb.clone(), env.table.clone(), &app, 10.0);
    let started = Instant::now();
    let err = gate.acquire().await.expect_err("backlogged");
    assert!(started.elapsed() < Duration::from_secs(30), "it waited");
    let hint = err.retry_after.expect("a hint");
    assert!(
        hint > Duration::from_secs(50) && hint <= Duration::from_secs(60),
        "{hint:?}"
    );
    let item = env
        .clients
        .dynamodb
        .get_item()
        .table_name(&env.table)
        .key("pk", AttributeValue::S(key.clone()))
        .key("sk", AttributeValue::S("GCRA".into()))
        .consistent_read(true)
        .send()
        .await
        .expect("get")
        .item
        .expect("item");
    assert_eq!(
        item.get("tat_us"),
        Some(&AttributeValue::N(ahead_us.to_string()))
    );
    assert_eq!(gate.stats().slots, 0);
}

/// A caller that wakes up long after its slot (here: the only thread blocked for a second) gives the slot
/// up and takes a new one instead of sending late, next to the on-time requests granted after it.
#[test]
fn a_slot_passed_while_the_caller_was_blocked_is_given_up() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let env = TestEnv::new().await.expect("test env");
        let app = unique_name("app");
        // 2/s: a fresh gate's first slot is one interval (540 ms) ahead.
        let gate = DynamoRateGate::new(env.clients.dynamodb.clone(), env.table.clone(), &app, 2.0);
        let waiter = {
            let gate = gate.clone();
            tokio::spawn(async move { gate.acquire().await })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        // Blocks the runtime's only thread past the waiter's slot.
        std::thread::sleep(Duration::from_millis(1_000));
        waiter.await.unwrap().expect("a later slot");
        let stats = gate.stats();
        assert!(stats.late_given_up >= 1, "{stats:?}");
        assert_eq!(stats.slots, 1);
    });
}
