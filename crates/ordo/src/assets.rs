//! The static files of the console and the API reference, embedded in the
//! binary. Pages link them with a content hash in the query
//! (`/assets/console.css?v=…`), so a versioned link is cached for a year,
//! any other for a few minutes, and an `ETag` lets a client revalidate.

use std::sync::LazyLock;

use axum::extract::{Path, Query};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use sha2::{Digest, Sha256};

struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

const FILES: &[Asset] = &[
    Asset {
        name: "console.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("../assets/console/console.css"),
    },
    Asset {
        name: "console.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../assets/console/console.js"),
    },
    Asset {
        name: "favicon.svg",
        content_type: "image/svg+xml",
        body: include_bytes!("../assets/console/favicon.svg"),
    },
    Asset {
        name: "reference.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("../assets/docs/reference.css"),
    },
    Asset {
        name: "reference.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../assets/docs/reference.js"),
    },
];

/// Each file's content hash, computed once.
static VERSIONS: LazyLock<Vec<String>> = LazyLock::new(|| {
    FILES
        .iter()
        .map(|f| hex::encode(&Sha256::digest(f.body)[..8]))
        .collect()
});

fn find(name: &str) -> Option<(&'static Asset, &'static str)> {
    FILES
        .iter()
        .zip(VERSIONS.iter())
        .find(|(f, _)| f.name == name)
        .map(|(f, v)| (f, v.as_str()))
}

/// The content hash of an embedded file, for its links.
pub fn version(name: &str) -> &'static str {
    find(name).map_or("", |(_, v)| v)
}

/// The versioned URL of an embedded file under `/assets/`.
pub fn url(name: &str) -> String {
    format!("/assets/{name}?v={}", version(name))
}

#[derive(Deserialize)]
pub struct Version {
    v: Option<String>,
}

/// `GET /assets/{name}`.
pub async fn serve(
    Path(name): Path<String>,
    Query(version): Query<Version>,
    headers: HeaderMap,
) -> Response {
    respond(&name, version.v.as_deref(), &headers)
}

/// The file `name` as asked for with `?v=version`: 304 when the client's
/// `If-None-Match` holds its ETag.
pub fn respond(name: &str, version: Option<&str>, headers: &HeaderMap) -> Response {
    let Some((asset, current)) = find(name) else {
        return (StatusCode::NOT_FOUND, "no such file").into_response();
    };
    let etag = format!("\"{current}\"");
    // An old version's link gets today's file, but only for a moment.
    let cache = if version == Some(current) {
        "public, max-age=31536000, immutable"
    } else {
        "public, max-age=300"
    };
    let fresh = headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|tag| tag.trim().trim_start_matches("W/"))
        .any(|tag| tag == etag || tag == "*");
    let mut response = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static(asset.content_type),
            )],
            asset.body,
        )
            .into_response()
    };
    let h = response.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    if let Ok(value) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assets_revalidate_with_their_etag() {
        let fresh = respond("reference.css", None, &HeaderMap::new());
        assert_eq!(fresh.status(), StatusCode::OK);
        let etag = fresh.headers()[header::ETAG].clone();
        assert!(fresh.headers().contains_key(header::CACHE_CONTROL));
        let mut headers = HeaderMap::new();
        headers.insert(header::IF_NONE_MATCH, etag.clone());
        let cached = respond("reference.css", None, &headers);
        assert_eq!(cached.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(cached.headers()[header::ETAG], etag);
        assert_ne!(version("reference.js"), version("reference.css"));
    }

    #[test]
    fn a_versioned_link_is_cached_for_good_and_any_other_briefly() {
        let current = version("console.css");
        let pinned = respond("console.css", Some(current), &HeaderMap::new());
        assert!(
            pinned.headers()[header::CACHE_CONTROL]
                .to_str()
                .unwrap()
                .contains("immutable")
        );
        let old = respond("console.css", Some("0"), &HeaderMap::new());
        assert_eq!(old.headers()[header::CACHE_CONTROL], "public, max-age=300");
        assert_eq!(
            respond("nothing.css", None, &HeaderMap::new()).status(),
            StatusCode::NOT_FOUND
        );
    }
}
