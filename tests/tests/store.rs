//! The controller's result writer on SQLite and on PostgreSQL: results submitted together are
//! written in batches (one INSERT, one SELECT, one UPDATE per batch), and the batch must still
//! apply them in order: a status change is reported for exactly the results that change their
//! gateway's status, `status_since` is the time of the last change, the last counters stick.
//! Policies published at once (two operators, two replicas) get distinct versions.

use std::sync::Arc;

use gw_controller::{
    Controller, Settings,
    pki::Pki,
    store::{NewResult, Store},
};
use gw_tests::fleet::fresh_postgres;

/// Statuses of gateway `a`'s results, in submission order: runs of equal statuses, so some
/// results change the status and most do not.
fn pattern(i: usize) -> &'static str {
    match (i / 7) % 3 {
        0 => "affirming",
        1 => "warning",
        _ => "contraindicated",
    }
}

async fn results_in_batches_apply_in_order(url: &str) {
    let store = Store::open(url).await.expect("open the store");
    for (n, id) in ["a", "b"].iter().enumerate() {
        let key = [n as u8 + 1; 32];
        store
            .insert_gateway(id, &key, &key, None, "hypervisor")
            .await
            .expect("insert gateway");
    }
    // 600 results submitted at once (the current-thread runtime runs the spawned tasks in
    // order, so they queue for the writer in submission order) (more than one batch of 512): `a` alternates runs of
    // statuses and `b` is always affirming.
    let mut jobs = Vec::new();
    for i in 0..600usize {
        let (id, status) = match i % 3 {
            0 | 1 => ("a", pattern(i)),
            _ => ("b", "affirming"),
        };
        let counters = (i % 5 != 0).then_some((7, i as u64));
        let store = store.clone();
        jobs.push(tokio::spawn(async move {
            store
                .record(NewResult::new(
                    id,
                    1_000 + i as i64,
                    status,
                    &serde_json::json!({ "n": i }),
                    counters,
                ))
                .await
        }));
    }
    let mut changed = Vec::new();
    for j in jobs {
        changed.push(j.await.expect("join").expect("record"));
    }

    // Expected, replaying the results one by one.
    let mut status = std::collections::HashMap::from([("a", "none"), ("b", "none")]);
    let mut since = std::collections::HashMap::new();
    for (i, got) in changed.iter().enumerate() {
        let (id, s) = match i % 3 {
            0 | 1 => ("a", pattern(i)),
            _ => ("b", "affirming"),
        };
        let prev = status.insert(id, s).expect("known gateway");
        if prev != s {
            since.insert(id, 1_000 + i as i64);
        }
        let want = prev != s;
        assert_eq!(*got, want, "result {i} ({id}, {s})");
    }
    // `b` once; `a` from none, then at each of the 85 boundaries of the runs of 7.
    assert_eq!(changed.iter().filter(|c| **c).count(), 1 + 1 + 85);

    let a = store.gateway("a").await.unwrap().unwrap();
    assert_eq!(a.status, status["a"]);
    assert_eq!(a.status_since, since["a"]);
    assert_eq!(a.last_result_at, Some(1_000 + 598));
    // The last result of `a` with counters: 598 % 5 != 0.
    assert_eq!(a.last_counters, Some((7, 598)));
    let b = store.gateway("b").await.unwrap().unwrap();
    assert_eq!((b.status.as_str(), b.status_since), ("affirming", 1_002));
    // 599 % 5 == 4: counters; b's last result is 599.
    assert_eq!(b.last_counters, Some((7, 599)));
    assert_eq!(store.result_count().await.unwrap(), 600);
    let history = store.history("a", 1).await.unwrap();
    assert_eq!(history[0].ear["n"], 598, "{:?}", history[0]);
}

#[tokio::test]
async fn sqlite_writer_applies_batched_results_in_order() {
    let dir = tempfile::tempdir().unwrap();
    results_in_batches_apply_in_order(&format!("sqlite://{}", dir.path().join("c.db").display()))
        .await;
}

#[tokio::test]
async fn postgres_writer_applies_batched_results_in_order() {
    results_in_batches_apply_in_order(&fresh_postgres("writer")).await;
}

/// Publish a gateway's policy `n` times at once through `ctls` (round robin): every publish
/// succeeds, with versions 1..=n (a publish that loses the race for a version compiles again).
async fn concurrent_publishes_get_distinct_versions(ctls: &[Arc<Controller>], n: usize) {
    ctls[0]
        .store
        .insert_gateway("gw-pub", &[9; 32], &[9; 32], None, "hypervisor")
        .await
        .expect("insert gateway");
    let mut jobs = Vec::new();
    for i in 0..n {
        let ctl = ctls[i % ctls.len()].clone();
        jobs.push(tokio::spawn(
            async move { ctl.publish_policy("gw-pub").await },
        ));
    }
    let mut versions = Vec::new();
    for j in jobs {
        versions.push(j.await.expect("join").expect("publish"));
    }
    versions.sort_unstable();
    assert_eq!(versions, (1..=n as u64).collect::<Vec<_>>());
    let latest = ctls[0]
        .store
        .latest_policy("gw-pub")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(latest.version, n as u64);
}

async fn controller(url: &str, dir: &std::path::Path) -> Arc<Controller> {
    let store = Store::open(url).await.expect("open the store");
    let pki = Pki::load_or_create(dir, &["localhost".into()]).expect("keys");
    Controller::new(store, pki, Settings::default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_concurrent_publishes_get_distinct_versions() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("c.db").display());
    let ctl = controller(&url, dir.path()).await;
    concurrent_publishes_get_distinct_versions(&[ctl], 8).await;
}

/// Two replicas on one PostgreSQL database publishing for the same gateway at the same time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_replicas_publishing_at_once_get_distinct_versions() {
    let dir = tempfile::tempdir().unwrap();
    let url = fresh_postgres("publish");
    let one = controller(&url, dir.path()).await;
    let two = controller(&url, dir.path()).await;
    concurrent_publishes_get_distinct_versions(&[one, two], 8).await;
}
