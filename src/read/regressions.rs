//! Regression events: the feed the regression finder writes, read in pages of ids.
//!
//! Invariant: reads only; an event's figures are as the finder stored them.

use std::collections::VecDeque;

use crate::store::{RegressionRecord, Store, StoreError, Window};

/// Events fetched per store read while looking for the newest ones.
const REGRESSION_PAGE: i64 = 1000;

/// The newest regression events (at most `limit`, newest first) detected in the window, of a
/// service and optionally one endpoint: the pages' banners. Reads the same feed as
/// [`regressions`].
pub async fn recent_regressions(
    store: &Store,
    window: Window,
    service: Option<&str>,
    endpoint: Option<&str>,
    limit: usize,
) -> Result<Vec<RegressionRecord>, StoreError> {
    let mut newest: VecDeque<RegressionRecord> = VecDeque::new();
    let mut after = 0;
    loop {
        let page = store.regressions(after, REGRESSION_PAGE, service).await?;
        let full = page.len() as i64 == REGRESSION_PAGE;
        for record in page {
            after = after.max(record.id);
            let in_window =
                (window.from_unix_ns..=window.to_unix_ns).contains(&record.detected_unix_ns);
            if in_window && endpoint.is_none_or(|name| record.endpoint == name) {
                newest.push_back(record);
                if newest.len() > limit {
                    newest.pop_front();
                }
            }
        }
        if !full {
            break;
        }
    }
    Ok(newest.into_iter().rev().collect())
}

/// Events after `after_id`, oldest first, optionally of one service.
pub async fn regressions(
    store: &Store,
    after_id: i64,
    limit: i64,
    service: Option<&str>,
) -> Result<Vec<RegressionRecord>, StoreError> {
    store.regressions(after_id, limit, service).await
}
