//! `bottleneck reload`: asks a running server to re-read its config file's budgets, SLOs and
//! webhooks (the same as sending it SIGHUP).
//!
//! Invariant: a file that does not parse changes nothing on the server; this exits 2 with its error.

use anyhow::{Context, bail};
use serde_json::Value;

use crate::cli::Outcome;

/// `reload`'s flags.
#[derive(Debug, Clone, clap::Args)]
pub struct ReloadArgs {
    /// The server's UI and API address.
    #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// A file holding an admin token, for a server with `[auth] admin_tokens`.
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<std::path::PathBuf>,
}

/// Posts the reload and prints what is in force.
pub async fn run(args: ReloadArgs) -> anyhow::Result<Outcome> {
    let client = crate::cli::api_client(args.token_file.as_deref())?;
    let endpoint = format!("{}/api/v1/reload", args.url.trim_end_matches('/'));
    let res = client
        .post(&endpoint)
        .send()
        .await
        .with_context(|| format!("asking {endpoint}"))?;
    let status = res.status();
    let body: Value = res.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        let error = body["error"].as_str().unwrap_or("no error message");
        bail!("reload refused ({status}): {error}");
    }
    println!(
        "reloaded: {} budgets, {} SLOs, {} webhooks",
        body["budgets"], body["slos"], body["webhooks"]
    );
    Ok(Outcome::Ok)
}
