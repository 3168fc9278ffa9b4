//! Every file of `static/` is served byte for byte, with its MIME type and a long cache life.

use crate::support::{http_client, spawn_app};

fn mime_for(name: &str) -> &'static str {
    match name.rsplit('.').next() {
        Some("css") => "text/css",
        Some("js") => "text/javascript",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        other => panic!("static/{name}: no MIME type known for {other:?}; add it to assets.rs"),
    }
}

#[tokio::test]
async fn every_static_file_is_served_byte_for_byte() {
    let app = spawn_app().await;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("static");
    let mut n_files = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let entry = entry.unwrap();
        if !entry.file_type().unwrap().is_file() {
            continue;
        }
        let name = entry.file_name().into_string().unwrap();
        let on_disk = std::fs::read(entry.path()).unwrap();
        let res = http_client()
            .get(format!("{}/static/{name}", app.ui_url))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "static/{name} is not served");
        let content_type = res.headers()["content-type"].to_str().unwrap().to_owned();
        assert!(
            content_type.starts_with(mime_for(&name)),
            "static/{name} served as {content_type}"
        );
        let cache = res.headers()["cache-control"].to_str().unwrap().to_owned();
        assert_eq!(cache, "public, max-age=31536000, immutable");
        assert_eq!(
            res.bytes().await.unwrap().as_ref(),
            on_disk.as_slice(),
            "static/{name}"
        );
        n_files += 1;
    }
    assert!(n_files >= 3, "static/ has app.css, app.js and the favicon");
    let missing = http_client()
        .get(format!("{}/static/nothing.css", app.ui_url))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    app.stop().await;
}
