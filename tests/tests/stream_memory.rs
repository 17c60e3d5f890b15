//! Measures that streaming a large S3 object through `CohortStore::open` keeps memory bounded. Its own test
//! binary (own process), so no other test's allocations move the peak.
//!
//! Size: `STREAM_TEST_MB` (default 200, the figure). The figure is printed (run with `--nocapture`).

use std::io::{Read, Write};

use audience_aws::S3CohortStore;
use audience_core::ports::CohortStore;
use audience_sync_tests::{TestEnv, memory};
use aws_sdk_s3::primitives::ByteStream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_a_large_object_keeps_memory_bounded() {
    let mb: u64 = std::env::var("STREAM_TEST_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let size = mb * 1024 * 1024;
    let env = TestEnv::new().await.expect("env");
    let key = "cohorts/Big1_2026-03-01T10:00_existing.csv";

    // Generate the object on disk and upload it streamed, so the upload itself does not inflate the peak.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.csv");
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
        let mut line = 0u64;
        let mut written = 0u64;
        while written < size {
            let row = format!("{line},user{line},user{line}@example.com\n");
            f.write_all(row.as_bytes()).unwrap();
            written += row.len() as u64;
            line += 1;
        }
        f.flush().unwrap();
    }
    let len = std::fs::metadata(&path).unwrap().len();
    env.clients
        .s3
        .put_object()
        .bucket(&env.bucket)
        .key(key)
        .content_length(len as i64)
        .body(ByteStream::from_path(&path).await.unwrap())
        .send()
        .await
        .unwrap();

    let store = S3CohortStore::new(
        env.clients.s3.clone(),
        env.bucket.clone(),
        "cohorts",
        "snap",
        "reports",
    );
    let reset = memory::reset_peak();
    let before = memory::peak_rss_kib().unwrap_or(0);
    let reader = store.open(key).await.unwrap();
    assert_eq!(reader.meta.size, len);
    let mut body = reader.body;
    // Read like the pipeline does: a blocking thread, a small buffer, checksum every byte.
    let (read, crc) = tokio::task::spawn_blocking(move || {
        let mut buf = vec![0u8; 64 * 1024];
        let mut total = 0u64;
        let mut crc = 0u32;
        loop {
            let n = body.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            total += n as u64;
            crc = buf[..n]
                .iter()
                .fold(crc, |c, b| c.rotate_left(5) ^ u32::from(*b));
        }
        (total, crc)
    })
    .await
    .unwrap();
    let after = memory::peak_rss_kib().unwrap_or(0);
    let expected_crc = {
        let mut f = std::fs::File::open(&path).unwrap();
        let mut buf = vec![0u8; 64 * 1024];
        let mut crc = 0u32;
        loop {
            let n = f.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            crc = buf[..n]
                .iter()
                .fold(crc, |c, b| c.rotate_left(5) ^ u32::from(*b));
        }
        crc
    };
    assert_eq!(read, len);
    assert_eq!(crc, expected_crc);
    let growth_mib = after.saturating_sub(before) as f64 / 1024.0;
    eprintln!(
        "streamed {:.1} MiB from S3 (moto): peak RSS before {:.1} MiB, after {:.1} MiB, growth {growth_mib:.1} MiB \
         (peak reset: {reset})",
        len as f64 / 1048576.0,
        before as f64 / 1024.0,
        after as f64 / 1024.0
    );
    assert!(
        reset,
        "cannot reset VmHWM on this kernel: the measurement would include the setup"
    );
    // Bounded: a small fraction of the object, whatever its size.
    assert!(
        growth_mib < 32.0,
        "peak RSS grew by {growth_mib:.1} MiB while streaming {mb} MiB"
    );

    // Control: the same measurement sees a whole-object read (so the bound above is not vacuous).
    let control_key = "cohorts/Big1_2026-03-01T11:00_existing.csv";
    let control: Vec<u8> = vec![b'x'; 48 * 1024 * 1024];
    env.clients
        .s3
        .put_object()
        .bucket(&env.bucket)
        .key(control_key)
        .body(ByteStream::from(control))
        .send()
        .await
        .unwrap();
    assert!(memory::reset_peak());
    let before = memory::peak_rss_kib().unwrap_or(0);
    let whole = env
        .clients
        .s3
        .get_object()
        .bucket(&env.bucket)
        .key(control_key)
        .send()
        .await
        .unwrap()
        .body
        .collect()
        .await
        .unwrap()
        .into_bytes();
    let control_growth = memory::peak_rss_kib().unwrap_or(0).saturating_sub(before) as f64 / 1024.0;
    eprintln!(
        "control: reading a {} MiB object whole grew the peak by {control_growth:.1} MiB",
        whole.len() >> 20
    );
    assert!(
        control_growth > 40.0,
        "the peak measurement missed a 48 MiB buffer ({control_growth:.1} MiB)"
    );
}
