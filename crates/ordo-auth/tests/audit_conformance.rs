//! The audit log's contract, checked on SQLite and on PostgreSQL with the
//! same tests, over the auth database as the application migrates it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use ordo_auth::{
    AuditLog, AuditStore, MIGRATIONS, NewAuditEntry, PG_MIGRATIONS, PgAuditStore, SqliteAuditStore,
};
use ordo_kernel::{ClientId, SystemClock, UlidGen};
use ordo_postgres::testing::TestDatabase;
use ordo_sqlite::{Database, DatabaseOptions};
use tempfile::TempDir;
use ulid::Ulid;

/// The log over one backend; the store drops before its database.
struct Backend {
    log: AuditLog,
    _guard: Guard,
}

// Held only to be dropped after the store.
#[allow(dead_code)]
enum Guard {
    Sqlite(TempDir),
    Postgres(TestDatabase),
}

fn log_over(store: Arc<dyn AuditStore>) -> AuditLog {
    AuditLog::new(store, Arc::new(SystemClock), Arc::new(UlidGen::new()))
}

fn sqlite() -> Backend {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(
        "auth",
        &dir.path().join("auth.db"),
        &[MIGRATIONS],
        DatabaseOptions::default(),
    )
    .unwrap();
    Backend {
        log: log_over(Arc::new(SqliteAuditStore::new(db))),
        _guard: Guard::Sqlite(dir),
    }
}

async fn postgres() -> Option<Backend> {
    let database = TestDatabase::create().await?;
    let db = database.connect("auth", &PG_MIGRATIONS).await;
    Some(Backend {
        log: log_over(Arc::new(PgAuditStore::new(db))),
        _guard: Guard::Postgres(database),
    })
}

ordo_postgres::on_both_backends! {
    sqlite: super::sqlite(),
    postgres: super::postgres().await,
    worker_threads: 2,
    tests: [
        a_recorded_action_reads_back_with_who_what_and_outcome,
        the_log_pages_newest_first_with_a_keyset_cursor,
    ],
}

fn entry(actor: ClientId, action: &str, status: u16) -> NewAuditEntry {
    NewAuditEntry {
        actor,
        action: action.to_owned(),
        target: "/v1/admin/clients/cli_1/revoke".to_owned(),
        status,
        request_id: Some("req-1".to_owned()),
    }
}

async fn a_recorded_action_reads_back_with_who_what_and_outcome(b: Backend) {
    let admin = ClientId::from_ulid(Ulid::new());
    let recorded = b
        .log
        .record(entry(admin, "POST /v1/admin/clients/{id}/revoke", 200))
        .await
        .unwrap();
    assert!(AuditLog::is_entry_id(&recorded.id), "{}", recorded.id);
    let mut console = entry(admin, "console.client.revoke", 404);
    console.request_id = None;
    let second = b.log.record(console).await.unwrap();

    let page = b.log.list(None, 10).await.unwrap();
    assert_eq!(page.items, vec![second.clone(), recorded.clone()]);
    assert_eq!(page.next_cursor, None);
    assert_eq!(page.items[1].actor, admin);
    assert_eq!(page.items[1].status, 200);
    assert_eq!(page.items[1].request_id.as_deref(), Some("req-1"));
    assert_eq!(page.items[0].request_id, None);
}

async fn the_log_pages_newest_first_with_a_keyset_cursor(b: Backend) {
    let admin = ClientId::from_ulid(Ulid::new());
    let mut ids = Vec::new();
    for i in 0..5 {
        let e = b
            .log
            .record(entry(admin, &format!("action {i}"), 200))
            .await
            .unwrap();
        ids.push(e.id);
    }
    ids.reverse();
    let first = b.log.list(None, 2).await.unwrap();
    let ids_of =
        |p: &ordo_auth::AuditPage| p.items.iter().map(|e| e.id.clone()).collect::<Vec<_>>();
    assert_eq!(ids_of(&first), ids[0..2]);
    let cursor = first.next_cursor.clone().unwrap();
    assert_eq!(cursor, ids[1]);
    let second = b.log.list(Some(&cursor), 2).await.unwrap();
    assert_eq!(ids_of(&second), ids[2..4]);
    let last = b.log.list(second.next_cursor.as_deref(), 2).await.unwrap();
    assert_eq!(ids_of(&last), ids[4..5]);
    assert_eq!(last.next_cursor, None, "no page after the last");
    // A page exactly full has no next page either.
    let all = b.log.list(None, 5).await.unwrap();
    assert_eq!(all.items.len(), 5);
    assert_eq!(all.next_cursor, None);
}
