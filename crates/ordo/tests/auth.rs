//! Tokens: what is accepted and what is not.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::{TestApp, problem};
use ordo_auth::ClientStore;
use ordo_http::auth::SigningKey;
use ordo_http::{Jwt, Role};
use ordo_kernel::ClientId;
use reqwest::StatusCode;
use serde_json::{Value, json};

async fn signing_keys(app: &TestApp) -> Vec<SigningKey> {
    // The test reads the key the server signs with, to forge tokens that
    // differ from a valid one in exactly one respect.
    let db = ordo_sqlite::Database::open(
        "auth-reader",
        &app.data_dir.path().join("auth.db"),
        &[ordo_auth::MIGRATIONS],
        ordo_sqlite::DatabaseOptions::default(),
    )
    .unwrap();
    ordo_auth::SqliteClientStore::new(db)
        .signing_keys()
        .await
        .unwrap()
}

async fn status_with(app: &TestApp, token: &str) -> StatusCode {
    app.get(token, "/v1/orders").await.status()
}

#[tokio::test]
async fn a_token_is_issued_for_form_json_and_basic_credentials() {
    let app = TestApp::spawn().await;
    let c = &app.credentials["customer"];
    let form = app.token_for(&c.client_id, &c.client_secret).await;
    assert_eq!(status_with(&app, &form).await, StatusCode::OK);

    let json_body: Value = app
        .http
        .post(app.url("/oauth/token"))
        .json(&json!({"grant_type": "client_credentials", "client_id": c.client_id, "client_secret": c.client_secret}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(json_body["token_type"], "Bearer");
    assert_eq!(json_body["expires_in"], 3600);
    assert!(
        json_body["scope"]
            .as_str()
            .unwrap()
            .contains("orders:write")
    );

    let basic = app
        .http
        .post(app.url("/oauth/token"))
        .basic_auth(&c.client_id, Some(&c.client_secret))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(basic.status(), StatusCode::OK);

    let claims = json_body["access_token"]
        .as_str()
        .unwrap()
        .split('.')
        .nth(1)
        .unwrap()
        .to_owned();
    let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(claims).unwrap()).unwrap();
    for claim in ["exp", "iat", "iss", "aud", "sub", "role", "scope"] {
        assert!(!claims[claim].is_null(), "{claim}");
    }
    assert_eq!(claims["role"], "customer");
    assert_eq!(claims["sub"], c.client_id);
    app.assert_no_server_errors().await;
}

#[tokio::test]
async fn wrong_credentials_get_an_oauth_error_as_a_problem() {
    let app = TestApp::spawn().await;
    let c = &app.credentials["customer"];
    for (id, secret) in [
        (c.client_id.as_str(), "sec_wrong"),
        ("cli_01J0000000000000000000000X", c.client_secret.as_str()),
    ] {
        let response = app
            .http
            .post(app.url("/oauth/token"))
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", id),
                ("client_secret", secret),
            ])
            .send()
            .await
            .unwrap();
        let body = problem(response, StatusCode::UNAUTHORIZED).await;
        assert_eq!(body["error"], "invalid_client");
    }
    let response = app
        .http
        .post(app.url("/oauth/token"))
        .form(&[
            ("grant_type", "password"),
            ("client_id", c.client_id.as_str()),
        ])
        .send()
        .await
        .unwrap();
    // RFC 6749 §5.2: 400 for a grant the server does not support.
    let body = problem(response, StatusCode::BAD_REQUEST).await;
    assert_eq!(body["error"], "unsupported_grant_type");
    assert_eq!(common::fields(&body), ["grant_type"]);
    app.assert_no_server_errors().await;
}

/// A token request from `from` (any 127.x address reaches the server).
async fn token_request(
    app: &TestApp,
    from: [u8; 4],
    client_id: &str,
    secret: &str,
) -> reqwest::Response {
    reqwest::Client::builder()
        .local_address(std::net::IpAddr::from(from))
        .build()
        .unwrap()
        .post(app.url("/oauth/token"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", client_id),
            ("client_secret", secret),
        ])
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn the_eleventh_bad_secret_within_a_minute_locks_the_client_and_the_address_out() {
    let app = TestApp::spawn().await;
    let c = &app.credentials["customer"];
    const ATTACKER: [u8; 4] = [127, 0, 0, 1];
    const ELSEWHERE: [u8; 4] = [127, 0, 0, 2];
    // Successes do not count: a client may ask for many tokens.
    for _ in 0..15 {
        let ok = token_request(&app, ATTACKER, &c.client_id, &c.client_secret).await;
        assert_eq!(ok.status(), StatusCode::OK);
    }
    for _ in 0..10 {
        let wrong = token_request(&app, ATTACKER, &c.client_id, "sec_wrong").await;
        problem(wrong, StatusCode::UNAUTHORIZED).await;
    }
    let eleventh = token_request(&app, ATTACKER, &c.client_id, "sec_wrong").await;
    let retry_after: u64 = eleventh.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    let body = problem(eleventh, StatusCode::TOO_MANY_REQUESTS).await;
    assert_eq!(body["type"], "/problems/too-many-attempts");
    // The right secret waits out the lockout too, from any address.
    for from in [ATTACKER, ELSEWHERE] {
        let right = token_request(&app, from, &c.client_id, &c.client_secret).await;
        assert!(right.headers().contains_key("retry-after"));
        problem(right, StatusCode::TOO_MANY_REQUESTS).await;
    }
    // The address is locked for every client; another address is not.
    let seller = &app.credentials["seller"];
    let from_attacker = token_request(&app, ATTACKER, &seller.client_id, &seller.client_secret);
    problem(from_attacker.await, StatusCode::TOO_MANY_REQUESTS).await;
    let from_elsewhere = token_request(&app, ELSEWHERE, &seller.client_id, &seller.client_secret);
    assert_eq!(from_elsewhere.await.status(), StatusCode::OK);
    // The contract says so.
    let spec: Value = app
        .http
        .get(app.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let documented = &spec["paths"]["/oauth/token"]["post"]["responses"]["429"];
    assert!(documented["content"]["application/problem+json"].is_object());
    assert!(documented["headers"]["Retry-After"].is_object());
    app.assert_no_server_errors().await;
}

#[tokio::test]
async fn missing_expired_tampered_unsigned_and_foreign_tokens_are_refused() {
    let app = TestApp::spawn().await;
    let keys = signing_keys(&app).await;
    let customer = ClientId::parse(&app.client_id("customer")).unwrap();
    let ttl = Duration::from_secs(3600);
    let issuer = |iss: &str, aud: &str| Jwt::new(iss, aud, ttl, &keys).unwrap();
    let now = chrono::Utc::now();

    let valid = issuer("ordo", "ordo-api")
        .issue(customer, Role::Customer, now, "t".into())
        .unwrap();
    assert_eq!(
        status_with(&app, &valid).await,
        StatusCode::OK,
        "the forging set-up is right"
    );

    let missing = app.http.get(app.url("/v1/orders")).send().await.unwrap();
    let body = problem(missing, StatusCode::UNAUTHORIZED).await;
    assert_eq!(body["type"], "/problems/unauthorized");

    let expired = issuer("ordo", "ordo-api")
        .issue(
            customer,
            Role::Customer,
            now - chrono::Duration::hours(2),
            "t".into(),
        )
        .unwrap();
    let mut parts: Vec<String> = valid.split('.').map(str::to_owned).collect();
    let mut claims: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(&parts[1]).unwrap()).unwrap();
    claims["role"] = json!("admin");
    parts[1] = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap());
    let tampered = parts.join(".");
    let none_header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let unsigned = format!("{none_header}.{}.", parts[1]);
    let wrong_aud = issuer("ordo", "someone-else")
        .issue(customer, Role::Customer, now, "t".into())
        .unwrap();
    let wrong_iss = issuer("evil", "ordo-api")
        .issue(customer, Role::Customer, now, "t".into())
        .unwrap();
    let other_key = Jwt::new(
        "ordo",
        "ordo-api",
        ttl,
        &[SigningKey {
            kid: keys[0].kid.clone(),
            secret: b"not-the-key-not-the-key-not-the!".to_vec(),
        }],
    )
    .unwrap()
    .issue(customer, Role::Customer, now, "t".into())
    .unwrap();
    for (what, token) in [
        ("expired", expired),
        ("tampered", tampered),
        ("alg none", unsigned),
        ("wrong aud", wrong_aud),
        ("wrong iss", wrong_iss),
        ("wrong key", other_key),
        ("garbage", "not.a.token".to_owned()),
    ] {
        let response = app.get(&token, "/v1/orders").await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{what}");
        problem(response, StatusCode::UNAUTHORIZED).await;
    }
    app.assert_no_server_errors().await;
}

#[tokio::test]
async fn a_revoked_client_loses_access() {
    let app = TestApp::spawn().await;
    let (id, token) = app.new_client("customer").await;
    assert_eq!(status_with(&app, &token).await, StatusCode::OK);
    let admin = app.token("admin").await;
    let response = app
        .post_json(
            &admin,
            &format!("/v1/admin/clients/{id}/revoke"),
            &json!({}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let revoked: Value = response.json().await.unwrap();
    assert!(revoked["revoked_at"].is_string());
    assert_eq!(status_with(&app, &token).await, StatusCode::UNAUTHORIZED);
    let listed: Value = app
        .get(&admin, "/v1/admin/clients")
        .await
        .json()
        .await
        .unwrap();
    let items = listed["items"].as_array().unwrap();
    assert_eq!(items.len(), 5);
    assert!(
        items
            .iter()
            .all(|c| c.get("client_secret").is_none() && c.get("secret_hash").is_none())
    );
    app.assert_no_server_errors().await;
}

#[tokio::test]
async fn an_admins_changes_are_in_the_audit_log_with_who_what_and_the_outcome() {
    let app = TestApp::spawn().await;
    let (id, _) = app.new_client("customer").await;
    let admin = app.token("admin").await;
    let admin_id = app.client_id("admin");
    let response = app
        .post_json(
            &admin,
            &format!("/v1/admin/clients/{id}/revoke"),
            &json!({}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let request_id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let unknown = app
        .post_json(
            &admin,
            "/v1/admin/clients/cli_01ARZ3NDEKTSV4RRFFQ69G5FAV/revoke",
            &json!({}),
        )
        .await;
    let unknown_status = unknown.status().as_u16();
    // Reads and non-admins' requests are not audited.
    app.get(&admin, "/v1/admin/clients").await;
    let customer = app.token("customer").await;
    app.create_order(&customer, &app.product_id(0).await, 1)
        .await;

    let log: Value = app
        .get(&admin, "/v1/admin/audit?limit=2")
        .await
        .json()
        .await
        .unwrap();
    let items = log["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{log}");
    assert_eq!(
        items[0]["target"],
        "/v1/admin/clients/cli_01ARZ3NDEKTSV4RRFFQ69G5FAV/revoke"
    );
    assert_eq!(items[0]["status"], unknown_status);
    let revoke = &items[1];
    assert_eq!(revoke["actor"], admin_id.as_str());
    assert_eq!(revoke["action"], "POST /v1/admin/clients/{id}/revoke");
    assert_eq!(revoke["target"], format!("/v1/admin/clients/{id}/revoke"));
    assert_eq!(revoke["status"], 200);
    assert_eq!(revoke["request_id"], request_id.as_str());
    assert!(revoke["at"].is_string());

    // The older page: the demo start and new_client created clients too.
    let cursor = log["next_cursor"].as_str().unwrap();
    let older: Value = app
        .get(&admin, &format!("/v1/admin/audit?cursor={cursor}"))
        .await
        .json()
        .await
        .unwrap();
    let older = older["items"].as_array().unwrap();
    assert_eq!(older[0]["action"], "POST /v1/admin/clients");
    assert_eq!(older[0]["status"], 201);
    assert!(
        older
            .iter()
            .chain(items)
            .all(|e| e["actor"] == admin_id.as_str()),
        "only the admin's requests: {older:?}"
    );

    let response = app.get(&customer, "/v1/admin/audit").await;
    problem(response, StatusCode::FORBIDDEN).await;
    let response = app.get(&admin, "/v1/admin/audit?cursor=nope").await;
    let body = problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(common::fields(&body), ["cursor"]);
}
