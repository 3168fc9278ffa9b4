use std::pin::Pin;
use std::task::{Context, Poll};

use flate2::Compression;
use flate2::write::GzEncoder;
use http_body::Frame;
use tokio::sync::mpsc;

use super::*;

/// A body whose chunks come from a channel, as a chunked or HTTP/2 body arrives: no length is
/// declared, and it ends when the sender is dropped.
struct Chunks(mpsc::Receiver<Bytes>);

impl http_body::Body for Chunks {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|c| Ok(Frame::data(c))))
    }
}

fn chunks(parts: Vec<Vec<u8>>) -> Chunks {
    let (tx, rx) = mpsc::channel(parts.len().max(1));
    for part in parts {
        tx.try_send(Bytes::from(part)).unwrap();
    }
    Chunks(rx)
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::best());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

const LIMITS: BodyLimits = BodyLimits {
    max_wire_bytes: 8 << 20,
    max_decoded_bytes: 64 << 20,
    max_inflation_ratio: 100,
    deadline: Duration::from_secs(10),
    max_pause: Duration::from_secs(10),
};

fn intake(budget: usize) -> Intake {
    Intake::new(LIMITS, budget)
}

/// Text that compresses about as well as an OTLP export: repeated keys, varying values.
fn export_like(n_bytes: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(n_bytes);
    let mut i = 0u64;
    while out.len() < n_bytes {
        let value = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40;
        out.extend_from_slice(
            format!("db.statement=SELECT * FROM t WHERE id = {value};http.route=/users/{i};")
                .as_bytes(),
        );
        i += 1;
    }
    out.truncate(n_bytes);
    out
}

#[tokio::test]
async fn a_bomb_without_a_length_stops_inflating_at_the_ratio() {
    // 64 MiB of zeros, under the decoded cap, sent in 4 KiB pieces with no declared length.
    let bomb = gzip(&vec![0u8; 64 << 20]);
    let parts: Vec<Vec<u8>> = bomb.chunks(4096).map(<[u8]>::to_vec).collect();
    let intake = intake(256 << 20);
    let err = read(chunks(parts), None, Coding::Gzip, &intake)
        .await
        .unwrap_err();
    assert_eq!(err, BodyError::InflationRatio { ratio: 100 });
    assert!(err.is_too_large());
    assert_eq!(intake.budget.available(), 256 << 20, "all given back");
}

#[tokio::test]
async fn a_body_inflating_at_a_real_exports_ratio_is_read_whole() {
    let data = export_like(6 << 20);
    let compressed = gzip(&data);
    assert!(compressed.len() * 100 > data.len(), "a plausible ratio");
    let parts: Vec<Vec<u8>> = compressed.chunks(16 << 10).map(<[u8]>::to_vec).collect();
    let intake = intake(64 << 20);
    let body = read(chunks(parts), None, Coding::Gzip, &intake)
        .await
        .unwrap();
    assert_eq!(body.bytes, data);
    assert_eq!(body.wire_bytes, compressed.len());
    assert!(intake.budget.available() <= (64 << 20) - data.len());
    drop(body);
    assert_eq!(intake.budget.available(), 64 << 20);
}

#[tokio::test]
async fn past_the_decoded_cap_is_refused() {
    let limits = BodyLimits {
        max_decoded_bytes: 1 << 20,
        ..LIMITS
    };
    let data = export_like(3 << 20);
    let err = read(
        chunks(vec![gzip(&data)]),
        None,
        Coding::Gzip,
        &Intake::new(limits, 64 << 20),
    )
    .await
    .unwrap_err();
    assert_eq!(err, BodyError::DecodedTooLarge { limit: 1 << 20 });
}

#[tokio::test]
async fn a_declared_length_over_the_wire_limit_is_refused_before_reading() {
    let (_tx, rx) = mpsc::channel(1);
    let err = read(
        Chunks(rx),
        Some(9 << 20),
        Coding::Identity,
        &intake(64 << 20),
    )
    .await
    .unwrap_err();
    assert_eq!(err, BodyError::WireTooLarge { limit: 8 << 20 });
    let undeclared = vec![vec![1u8; 5 << 20], vec![1u8; 5 << 20]];
    let err = read(
        chunks(undeclared),
        None,
        Coding::Identity,
        &intake(64 << 20),
    )
    .await
    .unwrap_err();
    assert_eq!(err, BodyError::WireTooLarge { limit: 8 << 20 });
}

#[tokio::test]
async fn the_budget_is_taken_before_reading_and_given_back_after() {
    let intake = intake(1 << 20);
    // A slow body declared at 900 KiB holds its bytes while it has not arrived.
    let (slow_tx, slow_rx) = mpsc::channel(1);
    let slow = tokio::spawn({
        let intake = intake.clone();
        async move { read(Chunks(slow_rx), Some(900 << 10), Coding::Identity, &intake).await }
    });
    while intake.budget.available() > (1 << 20) - (900 << 10) {
        tokio::task::yield_now().await;
    }
    let err = read(
        chunks(vec![vec![1; 200 << 10]]),
        Some(200 << 10),
        Coding::Identity,
        &intake,
    )
    .await
    .unwrap_err();
    assert_eq!(err, BodyError::Busy);
    // A body of unknown length grows its share as it arrives, and is refused once it cannot.
    let err = read(
        chunks(vec![vec![1; 100 << 10], vec![1; 100 << 10]]),
        None,
        Coding::Identity,
        &intake,
    )
    .await
    .unwrap_err();
    assert_eq!(err, BodyError::Busy);
    slow_tx
        .send(Bytes::from(vec![2u8; 900 << 10]))
        .await
        .unwrap();
    drop(slow_tx);
    let slow = slow.await.unwrap().unwrap();
    assert_eq!(slow.bytes.len(), 900 << 10);
    drop(slow);
    let body = read(
        chunks(vec![vec![1; 200 << 10]]),
        None,
        Coding::Identity,
        &intake,
    )
    .await
    .unwrap();
    assert_eq!(body.bytes.len(), 200 << 10);
}

#[tokio::test(start_paused = true)]
async fn a_trickling_body_is_cut_off_at_the_deadline() {
    let limits = BodyLimits {
        deadline: Duration::from_secs(5),
        ..LIMITS
    };
    let intake = Intake::new(limits, 1 << 20);
    let (tx, rx) = mpsc::channel(1);
    // One byte a second: never a long pause, but never done.
    let trickle = tokio::spawn(async move {
        for _ in 0..60 {
            if tx.send(Bytes::from_static(b"x")).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    let started = tokio::time::Instant::now();
    let err = read(Chunks(rx), None, Coding::Identity, &intake)
        .await
        .unwrap_err();
    assert_eq!(err, BodyError::Deadline { secs: 5 });
    assert_eq!(started.elapsed(), Duration::from_secs(5));
    trickle.abort();
}

#[tokio::test]
async fn gzip_that_is_not_gzip_or_is_cut_short_is_corrupt() {
    let err = read(
        chunks(vec![b"plain text".to_vec()]),
        None,
        Coding::Gzip,
        &intake(1 << 20),
    )
    .await
    .unwrap_err();
    assert_eq!(err, BodyError::Corrupt);
    let mut cut = gzip(&export_like(10_000));
    cut.truncate(cut.len() / 2);
    let err = read(chunks(vec![cut]), None, Coding::Gzip, &intake(1 << 20))
        .await
        .unwrap_err();
    assert_eq!(err, BodyError::Corrupt);
}

#[test]
fn a_compressed_message_held_whole_inflates_under_the_ratio() {
    let budget = BodyBudget::new(64 << 20);
    let bomb = gzip(&vec![0u8; 16 << 20]);
    let permit = budget.reserve(bomb.len()).unwrap();
    let err = inflate(&bomb, LIMITS, permit).unwrap_err();
    assert_eq!(err, BodyError::InflationRatio { ratio: 100 });
    let data = export_like(1 << 20);
    let permit = budget.reserve(1).unwrap();
    assert_eq!(inflate(&gzip(&data), LIMITS, permit).unwrap().bytes, data);
}

#[test]
fn codings() {
    assert_eq!(Coding::parse(None), Ok(Coding::Identity));
    assert_eq!(Coding::parse(Some("identity")), Ok(Coding::Identity));
    assert_eq!(Coding::parse(Some("GZIP")), Ok(Coding::Gzip));
    assert_eq!(
        Coding::parse(Some("br")),
        Err(BodyError::UnsupportedEncoding("br".into()))
    );
}

#[tokio::test(start_paused = true)]
async fn a_body_that_stops_arriving_is_cut_off_after_the_pause() {
    let limits = BodyLimits {
        max_pause: Duration::from_secs(3),
        ..LIMITS
    };
    let intake = Intake::new(limits, 1 << 20);
    let (tx, rx) = mpsc::channel(1);
    // Two pieces, then silence with the body still open.
    tx.send(Bytes::from_static(b"xx")).await.unwrap();
    let started = tokio::time::Instant::now();
    let err = read(Chunks(rx), Some(1000), Coding::Identity, &intake)
        .await
        .unwrap_err();
    assert_eq!(
        err,
        BodyError::Stalled {
            paused: Duration::from_secs(3)
        }
    );
    assert_eq!(err.reason(), "body_incomplete");
    assert_eq!(started.elapsed(), Duration::from_secs(3));
    drop(tx);
}
