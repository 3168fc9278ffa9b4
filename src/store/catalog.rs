//! What the other tables refer to by id: interned endpoints and resources, and the versions
//! their rollups hold. Written once for both backends (see `portable`).
//!
//! Invariant: an id, once handed out, always names what it was interned for; retention may
//! evict it (`eviction`), and it is never handed out again.

use super::{Backend, StoreError, eviction};

/// The endpoint every endpoint past a service's cap is folded into. Retention never evicts it:
/// it holds the requests of every endpoint that found its service at the cap.
pub const OTHER_ENDPOINT: &str = "other";

/// An interned resource: the full attribute set one process reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceRef {
    /// Its id.
    pub id: i64,
    /// `service.name`.
    pub service: String,
    /// Its attributes, sorted by key.
    pub attributes: Vec<(String, String)>,
}

/// The canonical text of a resource's attributes: `key=value` lines sorted by key, the form the
/// store interns. A backslash, a newline, and `=` in a key are escaped with a backslash, so any
/// attribute reads back as sent.
pub fn canonical_attributes(attributes: &[(String, String)]) -> String {
    fn escape(text: &str, is_key: bool) -> String {
        let mut out = String::with_capacity(text.len());
        for ch in text.chars() {
            match ch {
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '=' if is_key => out.push_str("\\="),
                c => out.push(c),
            }
        }
        out
    }
    let mut lines: Vec<String> = attributes
        .iter()
        .map(|(key, value)| format!("{}={}", escape(key, true), escape(value, false)))
        .collect();
    lines.sort();
    lines.dedup();
    lines.join("\n")
}

/// Reads [`canonical_attributes`] back.
fn parse_canonical(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for line in text.lines() {
        let (mut key, mut value) = (String::new(), String::new());
        let mut in_value = false;
        let mut chars = line.chars();
        while let Some(ch) = chars.next() {
            let target = if in_value { &mut value } else { &mut key };
            match ch {
                '\\' => match chars.next() {
                    Some('n') => target.push('\n'),
                    Some(other) => target.push(other),
                    None => {}
                },
                '=' if !in_value => in_value = true,
                c => target.push(c),
            }
        }
        out.push((key, value));
    }
    out
}

/// An interned endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EndpointRef {
    /// Its id.
    pub id: i64,
    /// `service.name`.
    pub service: String,
    /// The endpoint name.
    pub endpoint: String,
}

portable_api! {
    /// How many retention passes evicted endpoints or resources, or removed rollups: a cache of
    /// the interned ids (and of the versions rollups hold) that was read at another generation
    /// may hold evicted ids and count evicted rows.
    pub async fn eviction_generation(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar(eviction::GENERATION)
            .fetch_optional(self.reader)
            .await?
            .unwrap_or(0))
    }

    /// Every interned endpoint.
    pub async fn endpoints(&self) -> Result<Vec<EndpointRef>, StoreError> {
        const SELECT: &str = "SELECT id, service, endpoint FROM endpoints ORDER BY id";
        let rows: Vec<(i64, String, String)> = sqlx::query_as(SELECT).fetch_all(self.reader).await?;
        Ok(rows
            .into_iter()
            .map(|(id, service, endpoint)| EndpointRef {
                id,
                service,
                endpoint,
            })
            .collect())
    }

    /// Every (service, version) the hourly rollups hold: the versions the analyzer's cap counts,
    /// which leave with their rollups.
    pub async fn service_versions(&self) -> Result<Vec<(String, String)>, StoreError> {
        Ok(sqlx::query_as(eviction::SERVICE_VERSIONS)
            .fetch_all(self.reader)
            .await?)
    }

    /// The id of (service, endpoint), interning it if new.
    pub async fn intern_endpoint(&self, service: &str, endpoint: &str) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar(eviction::INTERN_ENDPOINT)
            .bind(service.to_owned())
            .bind(endpoint.to_owned())
            .fetch_one(self.writer)
            .await?)
    }

    /// Every interned resource.
    pub async fn resources(&self) -> Result<Vec<ResourceRef>, StoreError> {
        const SELECT: &str = "SELECT id, service, attributes FROM resources ORDER BY id";
        let rows: Vec<(i64, String, String)> = sqlx::query_as(SELECT).fetch_all(self.reader).await?;
        Ok(rows
            .into_iter()
            .map(|(id, service, attributes)| ResourceRef {
                id,
                service,
                attributes: parse_canonical(&attributes),
            })
            .collect())
    }

    /// The id of a resource given in [`canonical_attributes`] form, interning it if new.
    pub async fn intern_resource(&self, service: &str, canonical: &str) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar(self.dialect.intern_resource)
            .bind(service.to_owned())
            .bind(canonical.to_owned())
            .fetch_one(self.writer)
            .await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_attributes_round_trip() {
        let attributes = vec![
            ("service.name".to_owned(), "auth".to_owned()),
            ("odd=key".to_owned(), "a\\b\nc=d ü".to_owned()),
            ("host.name".to_owned(), String::new()),
        ];
        let text = canonical_attributes(&attributes);
        assert_eq!(text.lines().count(), 3);
        let mut back = parse_canonical(&text);
        back.sort();
        let mut expected = attributes.clone();
        expected.sort();
        assert_eq!(back, expected);
    }
}
