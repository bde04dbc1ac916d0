//! Extractors whose rejections are problems that name the field.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::{ApiError, FieldError};

/// A JSON request body. Rejections: 415 without a JSON content type, 413
/// over the body limit, 400 for malformed JSON, 422 naming the field for a
/// missing, unknown or mistyped one.
#[derive(Debug, Clone, Copy, Default)]
pub struct Json<T>(pub T);

impl<T, S> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !is_json(req.headers()) {
            return Err(ApiError::UnsupportedMediaType(
                "the request body must be JSON (Content-Type: application/json)".to_owned(),
            ));
        }
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(bytes_rejection)?;
        parse_json(&bytes).map(Json)
    }
}

fn is_json(headers: &axum::http::HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|mime| {
            let mime = mime.trim().to_ascii_lowercase();
            mime == "application/json"
                || (mime.starts_with("application/") && mime.ends_with("+json"))
        })
        .unwrap_or(false)
}

pub fn bytes_rejection(rejection: BytesRejection) -> ApiError {
    if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::PayloadTooLarge {
            limit: crate::request::BODY_LIMIT,
        }
    } else {
        ApiError::Malformed {
            detail: rejection.body_text(),
            errors: vec![FieldError::new("body", "could not be read")],
        }
    }
}

/// Parses JSON, turning serde's error into field errors.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        match inner.classify() {
            serde_json::error::Category::Data => {
                let (field, message) = field_of(&path, &inner.to_string());
                ApiError::field(field, message)
            }
            _ => ApiError::Malformed {
                detail: format!("the body is not valid JSON: {inner}"),
                errors: vec![FieldError::new(
                    if path == "." { "body".to_owned() } else { path },
                    inner.to_string(),
                )],
            },
        }
    })?;
    de.end().map_err(|e| ApiError::Malformed {
        detail: format!("the body is not valid JSON: {e}"),
        errors: vec![FieldError::new(
            "body",
            "trailing characters after the JSON value",
        )],
    })?;
    Ok(value)
}

/// serde names an unknown or missing field in its message, relative to the
/// path of the object holding it; join the two into one field name.
fn field_of(path: &str, message: &str) -> (String, String) {
    let parent = if path == "." { "" } else { path };
    let join = |name: &str| {
        // Some deserializers already entered the field when they fail.
        if parent == name || parent.ends_with(&format!(".{name}")) {
            parent.to_owned()
        } else if parent.is_empty() {
            name.to_owned()
        } else {
            format!("{parent}.{name}")
        }
    };
    let quoted = |msg: &str, prefix: &str| {
        msg.strip_prefix(prefix)
            .and_then(|rest| rest.split('`').next())
            .map(str::to_owned)
    };
    let message = strip_position(message);
    if let Some(name) = quoted(&message, "unknown field `") {
        return (join(&name), "is not a known field".to_owned());
    }
    if let Some(name) = quoted(&message, "missing field `") {
        return (join(&name), "is required".to_owned());
    }
    let field = if parent.is_empty() {
        "body".to_owned()
    } else {
        parent.to_owned()
    };
    (field, message)
}

fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}

/// Query parameters; a bad one is a 422 naming it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Query<T>(pub T);

impl<T, S> FromRequestParts<S> for Query<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or_default();
        let de = serde_urlencoded::Deserializer::new(form_urlencoded_parse(query));
        serde_path_to_error::deserialize(de)
            .map(Query)
            .map_err(|err| {
                let path = err.path().to_string();
                let (field, message) = field_of(&path, &err.into_inner().to_string());
                ApiError::field(field, message)
            })
    }
}

fn form_urlencoded_parse(query: &str) -> form_urlencoded::Parse<'_> {
    form_urlencoded::parse(query.as_bytes())
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Line {
        quantity: u32,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        items: Vec<Line>,
    }

    fn fields(err: ApiError) -> Vec<String> {
        err.to_problem()
            .errors
            .into_iter()
            .map(|e| e.field)
            .collect()
    }

    #[test]
    fn a_mistyped_nested_field_is_named_by_its_path() {
        let err = parse_json::<Body>(br#"{"items":[{"quantity":"two"}]}"#).unwrap_err();
        assert_eq!(err.status(), 422);
        assert_eq!(fields(err), ["items[0].quantity"]);
    }

    #[test]
    fn unknown_and_missing_fields_are_named() {
        let err = parse_json::<Body>(br#"{"items":[{"quantity":1,"price":"1.00"}]}"#).unwrap_err();
        assert_eq!(fields(err), ["items[0].price"]);
        let err = parse_json::<Body>(br#"{}"#).unwrap_err();
        assert_eq!(fields(err), ["items"]);
    }

    #[test]
    fn malformed_json_is_a_bad_request() {
        let err = parse_json::<Body>(br#"{"items": [}"#).unwrap_err();
        assert_eq!(err.status(), 400);
        let err = parse_json::<Body>(br#"{"items": []} trailing"#).unwrap_err();
        assert_eq!(err.status(), 400);
    }
}
