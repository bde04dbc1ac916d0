//! The client store's contract, checked on SQLite and on PostgreSQL with
//! the same tests: each behaviour is an `async fn(Backend)` below, run on
//! both backends by `on_both_backends!`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use common::Backend;
use ordo_auth::{ApiClient, AuthService, StoredSession};
use ordo_http::Role;
use ordo_http::auth::SigningKey;
use ordo_kernel::{ClientId, StoreError, SystemClock, UlidGen};
use ulid::Ulid;

/// Now, at the microsecond precision both backends keep.
fn now() -> DateTime<Utc> {
    Utc::now()
        .duration_trunc(TimeDelta::microseconds(1))
        .unwrap()
}

fn client(role: Role, name: &str) -> ApiClient {
    ApiClient {
        id: ClientId::from_ulid(Ulid::new()),
        name: name.to_owned(),
        role,
        secret_hash: format!("$argon2id$v=19$m=19456,t=2,p=1$salt${name}"),
        created_at: now(),
        revoked_at: None,
    }
}

fn key(kid: &str, byte: u8) -> SigningKey {
    SigningKey {
        kid: kid.to_owned(),
        secret: vec![byte; 32],
    }
}

fn kids(keys: &[SigningKey]) -> Vec<&str> {
    keys.iter().map(|k| k.kid.as_str()).collect()
}

// --- Clients ----------------------------------------------------------------

async fn an_inserted_client_reads_back_as_it_was_stored(b: Backend) {
    let shop = client(Role::Seller, "shop");
    b.store.insert(shop.clone()).await.unwrap();
    let stored = b.store.get(shop.id).await.unwrap();
    assert_eq!(stored, shop);
    assert_eq!(stored.secret_hash, shop.secret_hash);
    assert_eq!(stored.created_at, shop.created_at);
    assert_eq!(b.store.count().await.unwrap(), 1);
}

async fn an_unknown_client_is_not_found(b: Backend) {
    let id = ClientId::from_ulid(Ulid::new());
    assert!(matches!(b.store.get(id).await, Err(StoreError::NotFound)));
    assert!(matches!(
        b.store.revoke(id, now()).await,
        Err(StoreError::NotFound)
    ));
    assert!(b.store.list().await.unwrap().is_empty());
    assert_eq!(b.store.count().await.unwrap(), 0);
}

async fn a_client_id_inserted_twice_is_a_conflict(b: Backend) {
    let first = client(Role::Customer, "first");
    b.store.insert(first.clone()).await.unwrap();
    let again = ApiClient {
        name: "second".to_owned(),
        ..first.clone()
    };
    let result = b.store.insert(again).await;
    assert!(matches!(result, Err(StoreError::Conflict(_))), "{result:?}");
    assert_eq!(b.store.get(first.id).await.unwrap().name, "first");
    assert_eq!(b.store.count().await.unwrap(), 1);
}

async fn clients_are_listed_in_id_order_with_every_role(b: Backend) {
    let mut clients: Vec<ApiClient> = [Role::Admin, Role::Courier, Role::Seller, Role::Customer]
        .into_iter()
        .map(|role| client(role, role.as_str()))
        .collect();
    // Inserted out of id order.
    for c in clients.iter().rev() {
        b.store.insert(c.clone()).await.unwrap();
    }
    clients.sort_by_key(|c| c.id.to_string());
    assert_eq!(b.store.list().await.unwrap(), clients);
    assert_eq!(b.store.count().await.unwrap(), 4);
}

async fn revoking_keeps_the_first_revocation_time(b: Backend) {
    let courier = client(Role::Courier, "bike");
    let other = client(Role::Courier, "van");
    b.store.insert(courier.clone()).await.unwrap();
    b.store.insert(other.clone()).await.unwrap();
    let first = now();
    let revoked = b.store.revoke(courier.id, first).await.unwrap();
    assert_eq!(revoked.revoked_at, Some(first));
    assert_eq!(revoked.name, "bike");
    let again = b
        .store
        .revoke(courier.id, first + TimeDelta::seconds(5))
        .await
        .unwrap();
    assert_eq!(again.revoked_at, Some(first));
    assert_eq!(
        b.store.get(courier.id).await.unwrap().revoked_at,
        Some(first)
    );
    // Only that client.
    assert_eq!(b.store.get(other.id).await.unwrap().revoked_at, None);
}

// --- Signing keys -----------------------------------------------------------

async fn signing_keys_are_listed_oldest_first_with_their_secrets(b: Backend) {
    assert!(b.store.signing_keys().await.unwrap().is_empty());
    let at = now();
    b.store
        .add_signing_key(key("k_b", 2), at + TimeDelta::seconds(1))
        .await
        .unwrap();
    b.store.add_signing_key(key("k_c", 3), at).await.unwrap();
    // Same time as k_c: the kid breaks the tie.
    b.store.add_signing_key(key("k_a", 1), at).await.unwrap();
    let keys = b.store.signing_keys().await.unwrap();
    assert_eq!(kids(&keys), ["k_a", "k_c", "k_b"]);
    assert_eq!(keys[0].secret, vec![1; 32]);
    assert_eq!(keys[2].secret, vec![2; 32]);
}

async fn a_signing_key_whose_kid_exists_is_a_conflict_and_keeps_the_first(b: Backend) {
    b.store.add_signing_key(key("k_1", 7), now()).await.unwrap();
    let result = b.other_process.add_signing_key(key("k_1", 9), now()).await;
    assert!(matches!(result, Err(StoreError::Conflict(_))), "{result:?}");
    let keys = b.store.signing_keys().await.unwrap();
    assert_eq!(kids(&keys), ["k_1"]);
    assert_eq!(keys[0].secret, vec![7; 32]);
}

/// Processes starting together on an empty store all create "the first
/// key"; they must end up with one, or a token signed by one process would
/// be refused by the others.
async fn processes_starting_together_share_one_signing_key(b: Backend) {
    let starts: Vec<_> = (0..4)
        .map(|i| {
            let store = if i % 2 == 0 {
                b.store.clone()
            } else {
                b.other_process.clone()
            };
            tokio::spawn(async move {
                AuthService::start(
                    store,
                    Arc::new(SystemClock),
                    Arc::new(UlidGen::new()),
                    "ordo",
                    "ordo-api",
                    Duration::from_secs(60),
                )
                .await
                .unwrap()
            })
        })
        .collect();
    let mut services = Vec::new();
    for start in starts {
        services.push(start.await.unwrap());
    }
    assert_eq!(b.store.signing_keys().await.unwrap().len(), 1);
    let client = ClientId::from_ulid(Ulid::new());
    for signer in &services {
        let token = signer
            .jwt()
            .issue(client, Role::Customer, Utc::now(), Ulid::new().to_string())
            .unwrap();
        for verifier in &services {
            assert_eq!(verifier.jwt().verify(&token).unwrap().client_id, client);
        }
    }
}

// --- Console sessions ---------------------------------------------------------

fn session(client: ClientId, token_hash: &str, expires_in: TimeDelta) -> StoredSession {
    StoredSession {
        token_hash: token_hash.to_owned(),
        client_id: client,
        csrf_token: format!("csrf-{token_hash}"),
        created_at: now(),
        expires_at: now() + expires_in,
    }
}

async fn a_session_reads_back_in_every_process_until_it_is_deleted(b: Backend) {
    let shop = client(Role::Customer, "shopper");
    b.store.insert(shop.clone()).await.unwrap();
    let opened = session(shop.id, "aa11", TimeDelta::hours(8));
    b.sessions.insert_session(opened.clone()).await.unwrap();
    assert_eq!(
        b.sessions.session("aa11").await.unwrap(),
        Some(opened.clone())
    );
    assert_eq!(
        b.other_sessions.session("aa11").await.unwrap(),
        Some(opened),
        "another process serves the same session"
    );
    assert_eq!(b.sessions.session("bb22").await.unwrap(), None);
    // Signing out in one process ends it in all; twice is no error.
    b.other_sessions.delete_session("aa11").await.unwrap();
    assert_eq!(b.sessions.session("aa11").await.unwrap(), None);
    b.sessions.delete_session("aa11").await.unwrap();
}

async fn a_session_token_hash_opened_twice_is_a_conflict(b: Backend) {
    let shop = client(Role::Customer, "shopper");
    b.store.insert(shop.clone()).await.unwrap();
    let first = session(shop.id, "cc33", TimeDelta::hours(1));
    b.sessions.insert_session(first.clone()).await.unwrap();
    let again = b
        .sessions
        .insert_session(session(shop.id, "cc33", TimeDelta::hours(2)))
        .await;
    assert!(matches!(again, Err(StoreError::Conflict(_))), "{again:?}");
    assert_eq!(b.sessions.session("cc33").await.unwrap(), Some(first));
}

async fn purging_deletes_only_the_expired_sessions(b: Backend) {
    let shop = client(Role::Seller, "shop");
    b.store.insert(shop.clone()).await.unwrap();
    b.sessions
        .insert_session(session(shop.id, "old1", -TimeDelta::minutes(5)))
        .await
        .unwrap();
    b.sessions
        .insert_session(session(shop.id, "old2", -TimeDelta::seconds(1)))
        .await
        .unwrap();
    let live = session(shop.id, "live", TimeDelta::hours(1));
    b.sessions.insert_session(live.clone()).await.unwrap();
    assert_eq!(b.sessions.purge_sessions(now()).await.unwrap(), 2);
    assert_eq!(b.sessions.session("old1").await.unwrap(), None);
    assert_eq!(b.sessions.session("live").await.unwrap(), Some(live));
    assert_eq!(b.sessions.purge_sessions(now()).await.unwrap(), 0);
}

on_both_backends!(
    a_session_reads_back_in_every_process_until_it_is_deleted,
    a_session_token_hash_opened_twice_is_a_conflict,
    purging_deletes_only_the_expired_sessions,
    an_inserted_client_reads_back_as_it_was_stored,
    an_unknown_client_is_not_found,
    a_client_id_inserted_twice_is_a_conflict,
    clients_are_listed_in_id_order_with_every_role,
    revoking_keeps_the_first_revocation_time,
    signing_keys_are_listed_oldest_first_with_their_secrets,
    a_signing_key_whose_kid_exists_is_a_conflict_and_keeps_the_first,
    processes_starting_together_share_one_signing_key,
);
