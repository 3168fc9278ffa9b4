//! Retention on a running app: blocks received before the retention window go (on PostgreSQL,
//! as whole day partitions), recent ones stay, and exports keep being acknowledged meanwhile.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bottleneck::config::RetentionConfig;
use bottleneck::store::{block, retention};
use collector::model::TraceId;
use collector::otlp::decode;
use prost::Message;

use crate::ingest::login_request;
use crate::support::{http_client, spawn_app_with};

const DAY_NS: u64 = 86_400_000_000_000;

#[tokio::test]
async fn old_data_goes_recent_stays_and_ingest_goes_on() {
    // The app's own retention task keeps everything; the test runs its pass itself.
    let app =
        spawn_app_with(|config| config.retention.spans = Duration::from_secs(3_650 * 86_400)).await;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let old = now - 10 * DAY_NS;
    // The partitions of the old days, as the maintenance task created them back then.
    app.store.maintain_partitions(old).await.unwrap();
    let old_trace =
        |idx: u8| TraceId([idx, 0xee, 0xee, 0xee, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
    for idx in 0..20u8 {
        let mut spans = decode::spans(login_request(3)).spans;
        for span in &mut spans {
            span.trace_id = old_trace(idx);
        }
        app.store
            .insert_blocks(&[block::encode(spans.clone(), old)])
            .await
            .unwrap();
    }

    let url = app.otlp_http_url.clone();
    let ingest = tokio::spawn(async move {
        for seed in 1..=40u8 {
            let res = http_client()
                .post(format!("{url}/v1/traces"))
                .header("content-type", "application/x-protobuf")
                .body(login_request(seed).encode_to_vec())
                .send()
                .await
                .unwrap();
            assert_eq!(
                res.status(),
                200,
                "exports are acknowledged during retention"
            );
        }
    });
    let config = RetentionConfig {
        spans: Duration::from_secs(7 * 86_400),
        rollups: Duration::from_secs(90 * 86_400),
        interval: Duration::from_secs(3_600),
    };
    let report = retention::apply(&app.store, &config, now).await.unwrap();
    ingest.await.unwrap();
    assert!(report.blocks >= 20, "{report:?}");

    for idx in 0..20u8 {
        assert!(app.store.trace(old_trace(idx)).await.unwrap().is_none());
    }
    for seed in 1..=40u8 {
        assert_eq!(
            app.store
                .trace(TraceId([seed; 16]))
                .await
                .unwrap()
                .map(|spans| spans.len()),
            Some(2),
            "recent trace {seed} kept"
        );
    }
    app.stop().await;
}
