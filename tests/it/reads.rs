//! The read limits through the real app: selections that would load too many request rows or too
//! long a window of them, and calls past the read timeout, each answered with what to narrow,
//! on the API as JSON and on the pages as the error page.

use std::time::Duration;

use serde_json::Value as Json;

use crate::compare::{PER_VERSION, send_both_versions};
use crate::ingest::{assert_login_stored, login_request, post};
use crate::support::{http_client, spawn_app_with};

async fn get(url: String) -> (u16, String) {
    let res = http_client().get(url).send().await.unwrap();
    (res.status().as_u16(), res.text().await.unwrap())
}

fn error_of(body: &str) -> String {
    let json: Json = serde_json::from_str(body).unwrap_or_else(|_| panic!("not JSON: {body}"));
    json["error"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn selections_past_the_read_limits_are_refused_saying_what_to_narrow() {
    let app = spawn_app_with(|config| {
        // One endpoint's requests of one version fit; a whole service's do not.
        config.reads.max_request_rows = PER_VERSION as usize;
        config.reads.max_request_window = Duration::from_secs(3 * 3_600);
    })
    .await;
    let now_ms = send_both_versions(&app).await / 1_000_000;
    let compare = |query: &str| format!("{}/api/v1/compare?service=shop&{query}", app.ui_url);
    let one_host = "baseline=version:1.0,host.name:web-1&candidate=version:1.1,host.name:web-1";
    let (status, body) = app
        .eventually(Duration::from_secs(30), || async {
            let answer = get(compare(&format!("endpoint=POST%20/login&{one_host}"))).await;
            let json: Json = serde_json::from_str(&answer.1).ok()?;
            (json["candidate"]["requests"] == PER_VERSION / 2).then_some(answer)
        })
        .await;
    assert_eq!(status, 200, "{body}");

    // Every endpoint of the service: more request rows than allowed.
    let (status, body) = get(compare(one_host)).await;
    assert_eq!(status, 422, "{body}");
    let error = error_of(&body);
    assert!(
        error.contains(&format!("more than {PER_VERSION} requests")),
        "{error}"
    );
    assert!(error.contains("narrow"), "{error}");

    // A window of request rows longer than allowed, however few rows it holds.
    let (status, body) = get(compare(&format!(
        "endpoint=POST%20/login&baseline=version:1.0,host.name:web-1&candidate=window:0..{now_ms},host.name:web-1"
    )))
    .await;
    assert_eq!(status, 422, "{body}");
    assert!(error_of(&body).contains("narrow its window"), "{body}");

    // Selections from rollups are not request rows: the whole service by version answers.
    let (status, body) = get(compare("baseline=version:1.0&candidate=version:1.1")).await;
    assert_eq!(status, 200, "{body}");

    // The page says the same on the error page.
    let (status, page) = get(format!("{}/compare?service=shop&{one_host}", app.ui_url)).await;
    assert_eq!(status, 422);
    assert!(page.contains("Too much to read"), "{page}");
    assert!(
        page.contains("narrow its window or select fewer endpoints"),
        "{page}"
    );
    app.stop().await;
}

#[tokio::test]
async fn calls_past_the_read_timeout_are_503_and_ingest_goes_on() {
    // A timeout of zero: every call that waits for the store at all runs out.
    let app = spawn_app_with(|config| config.reads.timeout = Duration::ZERO).await;
    let (status, body) = get(format!("{}/api/v1/endpoints", app.ui_url)).await;
    assert_eq!(status, 503, "{body}");
    assert!(error_of(&body).contains("narrow the window"), "{body}");
    let (status, page) = get(format!("{}/", app.ui_url)).await;
    assert_eq!(status, 503);
    assert!(page.contains("Took too long"), "{page}");
    // Probes and metrics are not reads of the store's data; ingest is not held up.
    assert_eq!(get(format!("{}/healthz", app.ui_url)).await.0, 200);
    assert_eq!(get(format!("{}/metrics", app.ui_url)).await.0, 200);
    let res = post(
        &app.otlp_http_url,
        "application/x-protobuf",
        prost::Message::encode_to_vec(&login_request(61)),
    )
    .await;
    assert_eq!(res.status(), 200);
    assert_login_stored(&app.store, 61).await;
    app.stop().await;
}
