//! The admin API calls the scenarios make to set a server up (reqwest: they are few, and not
//! timed one by one).

use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;

#[derive(Clone, Debug, Default)]
pub struct Stock {
    pub available: u64,
    pub reserved: u64,
    pub sold: u64,
}

/// An API-key-authenticated client for one server's admin API.
pub struct Admin {
    client: reqwest::Client,
    base: String,
}

/// An id as it goes into a URL path or a CLI argument.
pub fn id_text(id: &Value) -> String {
    match id {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

impl Admin {
    pub fn new(base: &str, key: &str) -> Result<Admin> {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            reqwest::header::AUTHORIZATION,
            reqwest::header::HeaderValue::from_str(&format!("Bearer {key}"))?,
        );
        let client = reqwest::Client::builder()
            .default_headers(headers)
            .timeout(Duration::from_secs(900))
            .build()?;
        Ok(Admin {
            client,
            base: base.to_owned(),
        })
    }

    pub async fn json(resp: reqwest::Response, what: &str) -> Result<Value> {
        let status = resp.status();
        let text = resp.text().await?;
        if !status.is_success() {
            bail!(
                "{what}: {status}: {}",
                text.chars().take(500).collect::<String>()
            );
        }
        serde_json::from_str(&text).with_context(|| format!("{what}: answer is not JSON: {text}"))
    }

    /// `POST /api/v1/admin/products` with this body; the new product's id.
    pub async fn create_product(&self, body: &Value) -> Result<Value> {
        let resp = self
            .client
            .post(format!("{}/api/v1/admin/products", self.base))
            .json(body)
            .send()
            .await?;
        let v = Self::json(resp, "POST /api/v1/admin/products").await?;
        v.get("id")
            .cloned()
            .filter(|id| !id.is_null())
            .ok_or_else(|| anyhow!("product answer has no id: {v}"))
    }

    /// `POST /api/v1/admin/products/{id}/cards`: `(imported, duplicates, rejected)`.
    pub async fn import(&self, product: &Value, body: String) -> Result<(u64, u64, u64)> {
        let resp = self
            .client
            .post(format!(
                "{}/api/v1/admin/products/{}/cards",
                self.base,
                id_text(product)
            ))
            .header(reqwest::header::CONTENT_TYPE, "text/plain; charset=utf-8")
            .body(body)
            .send()
            .await?;
        let v = Self::json(resp, "POST /api/v1/admin/products/{id}/cards").await?;
        import_counts(&v)
    }

    /// `GET /api/v1/admin/products/{id}/stock`.
    pub async fn stock(&self, product: &Value) -> Result<Stock> {
        let resp = self
            .client
            .get(format!(
                "{}/api/v1/admin/products/{}/stock",
                self.base,
                id_text(product)
            ))
            .send()
            .await?;
        let v = Self::json(resp, "GET /api/v1/admin/products/{id}/stock").await?;
        let field = |k: &str| {
            v.get(k)
                .and_then(Value::as_u64)
                .ok_or_else(|| anyhow!("stock answer lacks {k}: {v}"))
        };
        Ok(Stock {
            available: field("available")?,
            reserved: field("reserved")?,
            sold: field("sold")?,
        })
    }
}

/// `(imported, duplicates, rejected)` of an import answer (API or CLI).
pub fn import_counts(v: &Value) -> Result<(u64, u64, u64)> {
    let imported = v
        .get("imported")
        .and_then(Value::as_u64)
        .ok_or_else(|| anyhow!("import answer lacks `imported`: {v}"))?;
    let duplicates = v.get("duplicates").and_then(Value::as_u64).unwrap_or(0);
    let rejected = match v.get("rejected") {
        Some(Value::Array(a)) => a.len() as u64,
        Some(Value::Number(n)) => n.as_u64().unwrap_or(0),
        _ => 0,
    };
    Ok((imported, duplicates, rejected))
}
