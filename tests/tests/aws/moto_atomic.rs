//! Contract: the moto the tests run on grants a conditional write to exactly one of two racing writers, as
//! DynamoDB does. Bare moto fails this (its server threads do not lock between checking a
//! `ConditionExpression` and writing): `ATOMIC_MOTO_DISABLE=1 cargo test -p audience-sync-tests --test aws
//! moto_atomic` shows it; the launcher (`tests/moto/atomic_moto.py`) makes it pass.

use std::sync::Arc;

use audience_aws::provision;
use audience_sync_tests::{clients, unique_name};
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::AttributeValue;
use tokio::sync::Barrier;

// Bare moto loses about 1 round in 100 on this machine: 1,000 rounds make its failure all but certain.
/// Each round races two writers on each of `ITEMS` items at once: more requests in flight widen bare moto's
/// window (it loses about 1 contest in 100 here), and 1,000 contests make its failure all but certain.
const ROUNDS: usize = 250;
const ITEMS: usize = 4;

fn s(v: &str) -> AttributeValue {
    AttributeValue::S(v.to_string())
}

/// One writer's attempt: the lease-grant shape of `acquire_lease` (`SET holder` only if nobody holds it) on an
/// item that exists. `Ok(true)` = won, `Ok(false)` = condition failed.
async fn try_take(client: &Client, table: &str, pk: &str, me: &str) -> Result<bool, String> {
    let res = client
        .update_item()
        .table_name(table)
        .key("pk", s(pk))
        .key("sk", s("LEASE"))
        .update_expression("SET holder = :me ADD grants :one")
        .condition_expression("attribute_exists(pk) AND attribute_not_exists(holder)")
        .expression_attribute_values(":me", s(me))
        .expression_attribute_values(":one", AttributeValue::N("1".into()))
        .send()
        .await;
    match res {
        Ok(_) => Ok(true),
        Err(e) => match e.as_service_error() {
            Some(se) if se.is_conditional_check_failed_exception() => Ok(false),
            _ => Err(format!("{e:?}")),
        },
    }
}

// Two worker threads: the writers are signed and sent in parallel, not interleaved on one thread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_conditional_writers_on_one_item_exactly_one_wins_every_time() {
    // Two SDK clients: separate connection pools, so the two requests reach moto on separate connections (and
    // so separate server threads) at the same moment.
    let (a, b) = (clients().await.dynamodb, clients().await.dynamodb);
    let table = unique_name("atomic");
    provision::create_table(&a, &table).await.expect("table");
    let barrier = Arc::new(Barrier::new(2 * ITEMS));
    let mut double_wins = Vec::new();
    for round in 0..ROUNDS {
        let keys: Vec<String> = (0..ITEMS).map(|i| format!("round-{round}-{i}")).collect();
        for pk in &keys {
            a.put_item()
                .table_name(&table)
                .item("pk", s(pk))
                .item("sk", s("LEASE"))
                .send()
                .await
                .expect("seed item");
        }
        let mut tasks = Vec::new();
        for pk in &keys {
            for (client, me) in [(a.clone(), "writer-a"), (b.clone(), "writer-b")] {
                let (barrier, table, pk) = (barrier.clone(), table.clone(), pk.clone());
                tasks.push(tokio::spawn(async move {
                    barrier.wait().await;
                    (pk.clone(), try_take(&client, &table, &pk, me).await)
                }));
            }
        }
        let mut wins = std::collections::BTreeMap::<String, usize>::new();
        for t in tasks {
            let (pk, won) = t.await.expect("task");
            *wins.entry(pk).or_default() += usize::from(won.expect("write answered"));
        }
        for pk in &keys {
            // What the item says must agree: one grant, not two applied one over the other.
            let item = a
                .get_item()
                .table_name(&table)
                .key("pk", s(pk))
                .key("sk", s("LEASE"))
                .consistent_read(true)
                .send()
                .await
                .expect("read back")
                .item
                .unwrap_or_default();
            let grants = match item.get("grants") {
                Some(AttributeValue::N(n)) => n.clone(),
                other => format!("{other:?}"),
            };
            let won = wins.get(pk).copied().unwrap_or(0);
            if won != 1 || grants != "1" {
                double_wins.push(format!("{pk}: {won} winners, grants {grants}"));
            }
        }
    }
    assert!(
        double_wins.is_empty(),
        "{} of {} contests did not have exactly one winner (is moto started without the launcher?): {:?}",
        double_wins.len(),
        ROUNDS * ITEMS,
        &double_wins[..double_wins.len().min(10)]
    );
}
