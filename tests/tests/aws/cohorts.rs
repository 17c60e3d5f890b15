use std::io::Read;
use std::time::Duration;

use audience_aws::S3CohortStore;
use audience_core::digests::snapshot::{read_snapshot, write_snapshot};
use audience_core::digests::{Digest, DigestSet};
use audience_core::identifiers::KeyKind;
use audience_core::ports::{CohortStore, PortError};
use audience_sync_tests::TestEnv;
use aws_sdk_s3::primitives::ByteStream;

async fn put(env: &TestEnv, key: &str, body: &[u8]) {
    env.clients
        .s3
        .put_object()
        .bucket(&env.bucket)
        .key(key)
        .body(ByteStream::from(body.to_vec()))
        .send()
        .await
        .unwrap_or_else(|e| panic!("put {key}: {e:?}"));
}

fn store(env: &TestEnv) -> S3CohortStore {
    S3CohortStore::new(
        env.clients.s3.clone(),
        env.bucket.clone(),
        "cohorts",
        "snap",
        "reports",
    )
}

#[tokio::test]
async fn newest_existing_export_among_many_keys() {
    let env = TestEnv::new().await.expect("env");
    let newest = "cohorts/Ab12cd_2026-03-01T11-15-45_existing.csv.gz";
    let keys = [
        "cohorts/Ab12cd_2026-03-01T10:00_existing.csv",
        "cohorts/Ab12cd_2026-03-01T10-30_existing_rk1.csv",
        "cohorts/Ab12cd_2026-03-01T11:15:30_existing_my routing.csv",
        newest,
        "cohorts/Ab12cd_2026-03-01T11:15_existing_late.csv",
        // Newer, but not the complete membership.
        "cohorts/Ab12cd_2026-03-01T12:00_entering.csv",
        "cohorts/Ab12cd_2026-03-01T12:00_exiting_rk1.csv",
        // Newer, other cohorts (one sharing a prefix of the id).
        "cohorts/Xy99_2026-03-02T00:00_existing.csv",
        "cohorts/Ab12cdE_2026-03-02T00:00_existing.csv",
        // Not Amplitude's naming.
        "cohorts/notes.txt",
        "cohorts/Ab12cd_2026-13-01T10:00_existing.csv",
        "cohorts/Ab12cd_2026-03-03T10:00_existing.json",
        // Outside the cohort prefix.
        "elsewhere/Ab12cd_2026-03-05T00:00_existing.csv",
        "cohortsX/Ab12cd_2026-03-05T00:00_existing.csv",
        // Amplitude's own form: a leading integer and a sub-path.
        "cohorts/amp/187520_Lz7_2026-03-01T09:00_existing_rk.csv",
        "cohorts/amp/187520_Lz7_2026-03-01T10:00_existing_rk.csv",
        "cohorts/amp/187520_Lz7_2026-03-01T10:00_entering_rk.csv",
    ];
    for k in keys {
        put(&env, k, b"amplitude_id,user_id,email\n1,u1,a@example.com\n").await;
    }
    // Enough other keys that a whole listing takes several pages.
    for i in 0..40 {
        put(
            &env,
            &format!(
                "cohorts/filler/F{i}_2026-03-01T09:{:02}_existing.csv",
                i % 60
            ),
            b"x\n",
        )
        .await;
    }
    let s = store(&env).with_list_page_size(3);
    let found = s
        .newest_existing_export("Ab12cd", None)
        .await
        .unwrap()
        .expect("an export");
    assert_eq!(found.meta.key, newest);
    assert_eq!(found.name.cohort_id, "Ab12cd");
    assert!(found.name.gzip);
    assert_eq!(
        found.name.exported_at.to_rfc3339(),
        "2026-03-01T11:15:45+00:00"
    );
    // Only `cohorts/Ab12cd_` was listed (its 9 keys, over 3 pages), not the 55 under the prefix.
    assert_eq!(s.listed_keys(), 9);
    let head = s.head(newest).await.unwrap().expect("head");
    assert_eq!(found.meta.etag, head.etag);
    assert_eq!(found.meta.size, head.size);
    assert_eq!(found.to_export_ref().s3_key, newest);

    let routed = s
        .newest_existing_export("Xy99", None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        routed.meta.key,
        "cohorts/Xy99_2026-03-02T00:00_existing.csv"
    );
    assert!(
        s.newest_existing_export("NoSuchCohort", None)
            .await
            .unwrap()
            .is_none()
    );

    // The leading-integer form under a sub-path: found by one whole listing while nothing is known...
    let s = store(&env).with_list_page_size(7);
    let first = s
        .newest_existing_export("Lz7", None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        first.meta.key,
        "cohorts/amp/187520_Lz7_2026-03-01T10:00_existing_rk.csv"
    );
    assert_eq!(first.name.leading.as_deref(), Some("187520"));
    assert_eq!(s.listed_keys(), 55, "the whole prefix, once");
    // ...then, with it remembered, only that cohort's keys from its hour on.
    put(
        &env,
        "cohorts/amp/187520_Lz7_2026-03-01T11-00_existing_rk.csv",
        b"x\n",
    )
    .await;
    let s = store(&env);
    let next = s
        .newest_existing_export("Lz7", Some(&first.meta.key))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        next.meta.key,
        "cohorts/amp/187520_Lz7_2026-03-01T11-00_existing_rk.csv"
    );
    assert_eq!(s.listed_keys(), 3, "the 10:00 pair and the new export");

    // An empty cohort prefix: the bucket root.
    let root = S3CohortStore::new(
        env.clients.s3.clone(),
        env.bucket.clone(),
        "",
        "snap",
        "reports",
    );
    let found = root
        .newest_existing_export("Ab12cd", None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        found.meta.key, "cohortsX/Ab12cd_2026-03-05T00:00_existing.csv",
        "nothing at the root itself: the whole bucket"
    );
}

#[tokio::test]
async fn same_timestamp_the_later_upload_wins() {
    let env = TestEnv::new().await.expect("env");
    put(&env, "cohorts/T1_2026-03-01T10:00_existing_zzz.csv", b"a\n").await;
    // S3's LastModified has one-second resolution.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    put(
        &env,
        "cohorts/T1_2026-03-01T10-00-00_existing_aaa.csv",
        b"b\n",
    )
    .await;
    let found = store(&env)
        .newest_existing_export("T1", None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        found.meta.key,
        "cohorts/T1_2026-03-01T10-00-00_existing_aaa.csv"
    );
}

#[tokio::test]
async fn open_streams_an_object_with_its_metadata() {
    let env = TestEnv::new().await.expect("env");
    let key = "cohorts/with space/Ab_2026-03-01T10:00_existing.csv";
    let body: Vec<u8> = (0..200_000u32)
        .flat_map(|i| format!("{i},user{i}\n").into_bytes())
        .collect();
    put(&env, key, &body).await;
    let s = store(&env);
    let reader = s.open(key).await.unwrap();
    assert_eq!(reader.meta.size, body.len() as u64);
    assert_eq!(reader.meta.etag, s.head(key).await.unwrap().unwrap().etag);
    assert!(reader.meta.last_modified.is_some());
    let mut got = Vec::new();
    let mut r = reader.body;
    let got = tokio::task::spawn_blocking(move || r.read_to_end(&mut got).map(|_| got))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, body);
    assert!(matches!(
        s.open("cohorts/missing.csv").await,
        Err(PortError::NotFound(_))
    ));
    assert!(s.head("cohorts/missing.csv").await.unwrap().is_none());
}

fn digest_set(seed: u8, n: u32) -> DigestSet {
    let v: Vec<Digest> = (0..n)
        .map(|i| {
            let mut d = [seed; 32];
            d[..4].copy_from_slice(&i.to_be_bytes());
            Digest(d)
        })
        .collect();
    DigestSet::from_unsorted(v).0
}

#[tokio::test]
async fn snapshot_round_trip_and_versions() {
    let env = TestEnv::new().await.expect("env");
    let s = store(&env);
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, set: &DigestSet| {
        let path = dir.path().join(name);
        let f = std::fs::File::create(&path).unwrap();
        write_snapshot(std::io::BufWriter::new(f), KeyKind::Email, set)
            .unwrap()
            .into_inner()
            .unwrap();
        path
    };
    let first = digest_set(1, 5000);
    let second = digest_set(2, 300);
    let r1 = s
        .put_snapshot("proj1", "SYNC1", "RUN1-1", &write("a.snap", &first))
        .await
        .unwrap();
    assert_eq!(r1.key, "snap/proj1/SYNC1/RUN1-1.snapshot");
    assert_eq!(
        r1.size,
        std::fs::metadata(dir.path().join("a.snap")).unwrap().len()
    );
    assert!(r1.version_id.is_some(), "the bucket is versioned");
    // Every snapshot has a name of its own: nothing is overwritten (no noncurrent committed version).
    let r2 = s
        .put_snapshot("proj1", "SYNC1", "RUN2-1", &write("b.snap", &second))
        .await
        .unwrap();
    assert_eq!(r2.key, "snap/proj1/SYNC1/RUN2-1.snapshot");

    let read = |reader: audience_core::ports::ObjectReader| {
        tokio::task::spawn_blocking(move || read_snapshot(reader.body, KeyKind::Email))
    };
    // Each pointer reads back exactly its own version.
    let got1 = read(s.open_snapshot(&r1).await.unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got1, first);
    let got2 = read(s.open_snapshot(&r2).await.unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got2, second);
    // A ref whose ETag does not match the stored version is refused.
    let mut wrong = r1.clone();
    wrong.etag = Some("\"0000\"".into());
    assert!(matches!(
        s.open_snapshot(&wrong).await,
        Err(PortError::Corrupt(_))
    ));

    // JSON reports.
    let report = serde_json::json!({"run_id": "R1", "rows": 10, "skipped": {"invalid_email": 1}});
    let key = s
        .put_run_report("proj1", "SYNC1", "R1", &report)
        .await
        .unwrap();
    assert_eq!(key, "reports/proj1/SYNC1/runs/R1.json");
    assert_eq!(s.get_report(&key).await.unwrap(), Some(report.clone()));
    let pkey = s.put_preview_report("proj1", "PV1", &report).await.unwrap();
    assert_eq!(pkey, "reports/proj1/previews/PV1.json");
    assert!(s.get_report("reports/none.json").await.unwrap().is_none());

    // One snapshot removed for good (every version of its key), its neighbours kept.
    let r10 = s
        .put_snapshot("proj1", "SYNC1", "RUN1-10", &write("d.snap", &second))
        .await
        .unwrap();
    let again = s
        .put_snapshot("proj1", "SYNC1", "RUN1-1", &write("e.snap", &second))
        .await
        .unwrap();
    assert_eq!(again.key, r1.key);
    s.delete_snapshot(&r1).await.unwrap();
    let left = env
        .clients
        .s3
        .list_object_versions()
        .bucket(&env.bucket)
        .prefix("snap/proj1/SYNC1/")
        .send()
        .await
        .unwrap();
    assert!(
        left.delete_markers().is_empty(),
        "removed for good, not hidden"
    );
    let mut left: Vec<&str> = left.versions().iter().filter_map(|v| v.key()).collect();
    left.sort();
    assert_eq!(
        left,
        vec![r10.key.as_str(), r2.key.as_str()],
        "both versions of run1-1 gone, the others kept"
    );
    s.delete_snapshot(&r1).await.unwrap();
    assert_eq!(
        read(s.open_snapshot(&r10).await.unwrap())
            .await
            .unwrap()
            .unwrap(),
        second
    );
    // A run report removed (its ledger was refused), the others kept; missing is fine.
    let key2 = s
        .put_run_report("proj1", "SYNC1", "R2", &report)
        .await
        .unwrap();
    s.delete_run_report("proj1", "SYNC1", "R2").await.unwrap();
    s.delete_run_report("proj1", "SYNC1", "R2").await.unwrap();
    assert!(s.get_report(&key2).await.unwrap().is_none());
    assert_eq!(s.get_report(&key).await.unwrap(), Some(report.clone()));
    let versions = env
        .clients
        .s3
        .list_object_versions()
        .bucket(&env.bucket)
        .prefix(&key2)
        .send()
        .await
        .unwrap();
    assert!(versions.versions().is_empty() && versions.delete_markers().is_empty());

    // Deleting the sync's objects removes every snapshot version and its reports, nothing else.
    s.delete_sync_objects("proj1", "SYNC1").await.unwrap();
    assert!(matches!(
        s.open_snapshot(&r1).await,
        Err(PortError::NotFound(_)) | Err(PortError::Unavailable { .. })
    ));
    assert!(matches!(
        s.open_snapshot(&r2).await,
        Err(PortError::NotFound(_)) | Err(PortError::Unavailable { .. })
    ));
    let versions = env
        .clients
        .s3
        .list_object_versions()
        .bucket(&env.bucket)
        .prefix("snap/proj1/SYNC1/")
        .send()
        .await
        .unwrap();
    assert!(versions.versions().is_empty() && versions.delete_markers().is_empty());
    assert!(s.get_report(&key).await.unwrap().is_none());
    assert_eq!(s.get_report(&pkey).await.unwrap(), Some(report));
}

/// Every version (and delete marker) stored under a prefix, as `(key, version id)`.
async fn all_versions(env: &TestEnv, prefix: &str) -> Vec<(String, String)> {
    let out = env
        .clients
        .s3
        .list_object_versions()
        .bucket(&env.bucket)
        .prefix(prefix)
        .send()
        .await
        .unwrap_or_else(|e| panic!("list versions {prefix}: {e:?}"));
    let versions = out
        .versions()
        .iter()
        .map(|v| (v.key(), v.version_id()))
        .chain(
            out.delete_markers()
                .iter()
                .map(|m| (m.key(), m.version_id())),
        );
    versions
        .map(|(k, v)| {
            (
                k.unwrap_or_default().to_string(),
                v.unwrap_or_default().to_string(),
            )
        })
        .collect()
}

fn snapshot_file(dir: &std::path::Path, name: &str, set: &DigestSet) -> std::path::PathBuf {
    let path = dir.join(name);
    let f = std::fs::File::create(&path).unwrap();
    write_snapshot(std::io::BufWriter::new(f), KeyKind::Email, set)
        .unwrap()
        .into_inner()
        .unwrap();
    path
}

/// The lost-base case of issue 12 item 7: a run writes a snapshot it never commits. The committed snapshot
/// must stay the current version of its own key (a lifecycle rule on noncurrent versions cannot touch it).
#[tokio::test]
async fn an_uncommitted_snapshot_never_makes_the_committed_one_noncurrent() {
    let env = TestEnv::new().await.expect("env");
    let s = store(&env);
    let dir = tempfile::tempdir().unwrap();
    let committed = s
        .put_snapshot(
            "p1",
            "S1",
            "RUNA-1",
            &snapshot_file(dir.path(), "a", &digest_set(1, 10)),
        )
        .await
        .unwrap();
    let uncommitted = s
        .put_snapshot(
            "p1",
            "S1",
            "RUNB-2",
            &snapshot_file(dir.path(), "b", &digest_set(2, 10)),
        )
        .await
        .unwrap();
    assert_ne!(committed.key, uncommitted.key, "one key per snapshot");
    let versions = all_versions(&env, "snap/p1/S1/").await;
    assert_eq!(versions.len(), 2, "{versions:?}");
    let head = s.head(&committed.key).await.unwrap().expect("committed");
    assert_eq!(
        head.version_id, committed.version_id,
        "the committed snapshot is still its key's current version"
    );
    // Names that could reach another key are refused before anything is written.
    for bad in ["", "a/b", "../S2/x", "a.b", &"x".repeat(129), "é"] {
        let r = s
            .put_snapshot(
                "p1",
                "S1",
                bad,
                &snapshot_file(dir.path(), "c", &digest_set(3, 1)),
            )
            .await;
        assert!(matches!(r, Err(PortError::Invalid(_))), "{bad:?}: {r:?}");
    }
    assert_eq!(all_versions(&env, "snap/").await.len(), 2);
}

/// `delete_snapshot` removes every version of that one key (a PUT retried after a lost answer leaves two,
/// a plain delete would leave the hashed identifiers behind a delete marker), and nothing else.
#[tokio::test]
async fn delete_snapshot_removes_every_version_of_its_key_only() {
    let env = TestEnv::new().await.expect("env");
    let s = store(&env);
    let dir = tempfile::tempdir().unwrap();
    let file = snapshot_file(dir.path(), "a", &digest_set(1, 50));
    let first = s.put_snapshot("p1", "S1", "RUN1-1", &file).await.unwrap();
    // The same name again (a retried PUT) and a plain delete marker on top: three entries for one key.
    let again = s.put_snapshot("p1", "S1", "RUN1-1", &file).await.unwrap();
    assert_eq!(again.key, first.key);
    env.clients
        .s3
        .delete_object()
        .bucket(&env.bucket)
        .key(&first.key)
        .send()
        .await
        .unwrap();
    // Neighbours that must survive: a name next to it, another sync's snapshot, a report.
    let longer = s.put_snapshot("p1", "S1", "RUN1-10", &file).await.unwrap();
    let other = s.put_snapshot("p1", "S2", "RUN1-1", &file).await.unwrap();
    let report = s
        .put_run_report("p1", "S1", "RUN1", &serde_json::json!({"rows": 1}))
        .await
        .unwrap();
    assert_eq!(all_versions(&env, &first.key).await.len(), 3);
    s.delete_snapshot(&first).await.unwrap();
    let left = all_versions(&env, "snap/").await;
    let keys: Vec<&str> = left.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, [longer.key.as_str(), other.key.as_str()], "{left:?}");
    assert!(s.get_report(&report).await.unwrap().is_some());
    // Missing is fine; a ref outside the snapshot prefix is refused (never an export).
    s.delete_snapshot(&first).await.unwrap();
    let mut export = first.clone();
    export.key = "cohorts/Ab12cd_2026-03-01T10:00_existing.csv".into();
    assert!(matches!(
        s.delete_snapshot(&export).await,
        Err(PortError::Invalid(_))
    ));
}

/// The snapshot contract both adapters keep (the engine's tests and the simulation run on the memory one):
/// one key per name, names checked, delete removes it for good, refs outside the snapshots refused.
async fn snapshot_contract(s: &dyn CohortStore, dir: &std::path::Path) {
    let file = snapshot_file(dir, "contract", &digest_set(7, 20));
    let a = s.put_snapshot("pc", "SC", "RUNA-1", &file).await.unwrap();
    let b = s
        .put_snapshot("pc", "SC", "uncertain-RUNA-1", &file)
        .await
        .unwrap();
    assert!(a.key.ends_with("/pc/SC/RUNA-1.snapshot"), "{}", a.key);
    assert!(
        b.key.ends_with("/pc/SC/uncertain-RUNA-1.snapshot"),
        "{}",
        b.key
    );
    for bad in ["", "a/b", "..", "a b", &"x".repeat(129)] {
        let r = s.put_snapshot("pc", "SC", bad, &file).await;
        assert!(matches!(r, Err(PortError::Invalid(_))), "{bad:?}: {r:?}");
    }
    assert!(
        s.put_snapshot("pc", "SC", &"x".repeat(128), &file)
            .await
            .is_ok()
    );
    s.delete_snapshot(&a).await.unwrap();
    assert!(matches!(
        s.open_snapshot(&a).await,
        Err(PortError::NotFound(_))
    ));
    assert!(s.open_snapshot(&b).await.is_ok(), "only that snapshot");
    s.delete_snapshot(&a).await.unwrap(); // missing is fine
    let mut outside = b.clone();
    outside.key = "cohorts/x_2026-03-01T10:00_existing.csv".into();
    assert!(matches!(
        s.delete_snapshot(&outside).await,
        Err(PortError::Invalid(_))
    ));
}

#[tokio::test]
async fn snapshot_contract_on_s3_and_in_memory() {
    let env = TestEnv::new().await.expect("env");
    let dir = tempfile::tempdir().unwrap();
    snapshot_contract(&store(&env), dir.path()).await;
    snapshot_contract(
        &audience_core::ports::memory::MemoryCohortStore::default(),
        dir.path(),
    )
    .await;
}
