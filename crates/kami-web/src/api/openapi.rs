//! The OpenAPI document of the contract in API.md, served at
//! `/api/v1/openapi.json`. It is written by hand (the handlers build their
//! JSON with `json!`, so there are no types to derive it from); the test
//! below keeps it in step with the router.

use axum::http::header;
use axum::response::IntoResponse;

use crate::extract::ReadLimited;

pub const DOCUMENT: &str = include_str!("../../api/openapi.json");

pub async fn document(_: ReadLimited) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], DOCUMENT)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    /// Paths the router serves that belong in the document: the JSON API,
    /// the payment callbacks, the operations endpoints and the storefront's
    /// front page (API.md names it).
    fn routed_paths() -> BTreeSet<String> {
        let source = include_str!("../app.rs");
        source
            .split(".route(")
            .skip(1)
            .filter_map(|rest| {
                let rest = rest.trim_start().strip_prefix('"')?;
                Some(rest[..rest.find('"')?].to_string())
            })
            .filter(|p| {
                p.starts_with("/api/")
                    || p.ends_with("/notify")
                    || p.ends_with("/return")
                    || ["/", "/healthz", "/readyz", "/metrics"].contains(&p.as_str())
            })
            // The sandbox's own routes for `/pay/{channel}/…`.
            .filter(|p| p != "/pay/sandbox/notify" && p != "/pay/sandbox/return")
            .collect()
    }

    #[test]
    fn document_is_openapi_and_matches_the_router() {
        let doc: serde_json::Value =
            serde_json::from_str(super::DOCUMENT).expect("openapi.json is JSON");
        assert_eq!(doc["openapi"], "3.1.0");
        let documented: BTreeSet<String> = doc["paths"]
            .as_object()
            .expect("paths")
            .keys()
            .cloned()
            .collect();
        let routed = routed_paths();
        assert!(
            routed.len() >= 15,
            "router scan found too little: {routed:?}"
        );
        let undocumented: Vec<_> = routed.difference(&documented).collect();
        let unrouted: Vec<_> = documented.difference(&routed).collect();
        assert!(
            undocumented.is_empty(),
            "routes missing from openapi.json: {undocumented:?}"
        );
        assert!(
            unrouted.is_empty(),
            "openapi.json documents no such route: {unrouted:?}"
        );
    }
}
