//! A failed analysis commit on SQLite (the database busy past its timeout, as another process
//! holding the write lock makes it; a full disk fails the same way) loses the analysis, not the
//! spans: the blocks of the failed batch are read back from the store and analysed again once
//! commits work, without a restart.

use std::time::Duration;

use sqlx::Connection;

use crate::ingest::login_request;
use crate::support::{TestApp, json_at, spawn_app_on};

async fn export(app: &TestApp, seed: u8) {
    app.export(prost::Message::encode_to_vec(&login_request(seed)))
        .await;
}

/// The requests of `POST /login` of all time, once there are `n`.
async fn logins(app: &TestApp, n: u64, limit: Duration) {
    app.eventually(limit, || async {
        let url = format!("{}/api/v1/endpoints?service=auth&from=0", app.ui_url);
        let body = json_at(url).await?;
        (body["endpoints"][0]["requests"].as_u64() == Some(n)).then_some(())
    })
    .await
}

#[tokio::test]
async fn a_failed_analysis_commit_on_sqlite_is_analysed_again_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let db_path = dir.path().join("busy.db");
    let app = spawn_app_on(&db_path, |_| {}).await;
    export(&app, 1).await;
    logins(&app, 1, Duration::from_secs(30)).await;

    // Another process takes the write lock right after the next exports are committed, so their
    // analysis commit waits out the busy timeout and fails.
    let mut other = sqlx::SqliteConnection::connect(&format!("sqlite://{}", db_path.display()))
        .await
        .unwrap();
    for seed in 2..=11 {
        export(&app, seed).await;
    }
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut other)
        .await
        .unwrap();
    app.eventually(Duration::from_secs(60), || async {
        (app.counter("bottleneck_analysis_commit_failures_total")
            .await
            > 0)
        .then_some(())
    })
    .await;
    sqlx::query("ROLLBACK").execute(&mut other).await.unwrap();

    // No new export and no restart: the failed batch's requests are analysed all the same.
    logins(&app, 11, Duration::from_secs(60)).await;
    app.stop().await;
}
