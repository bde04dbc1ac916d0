//! The PostgreSQL implementation of [`ShipmentStore`], in the `delivery`
//! schema.
//!
//! Any number of processes may write at once, so every guarded write is
//! settled by the database inside its transaction:
//! - a transition (courier event, cancellation) is an `UPDATE … WHERE
//!   version = $expected`; under READ COMMITTED a concurrent writer of the
//!   row makes it wait and re-check the version against the committed row,
//!   so of a pickup and a cancellation racing for one shipment exactly one
//!   applies and the other gets `Conflict`;
//! - creating a shipment and remembering a cancelled order each check the
//!   other's row, which may not exist yet, so both first take a
//!   transaction-scoped advisory lock on the order: they serialise, and the
//!   second sees what the first committed.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use deadpool_postgres::ClientWrapper;
use ordo_bus::Envelope;
use ordo_events::StockLine;
use ordo_kernel::{ClientId, OrderId, StoreError};
use ordo_postgres::{
    PgDatabase, Row, ToSql, Transaction, bad_value, outbox_append, record_inbox, store_error,
};
use tokio_postgres::types::FromSql;

use super::{Applied, Creation, InboxKey, ShipmentStore, ShipmentSummary};
use crate::domain::{
    CourierEventKind, CourierLogEntry, Parcel, ParcelId, Shipment, ShipmentId, ShipmentStatus,
    Waypoint, WaypointKind,
};

pub struct PgShipmentStore {
    db: PgDatabase,
}

impl PgShipmentStore {
    /// The store over a database connected with [`super::PG_MIGRATIONS`].
    pub fn new(db: PgDatabase) -> Self {
        Self { db }
    }
}

const SHIPMENT_COLUMNS: &str = "id, order_id, customer_id, status, failure_reason, next_waypoint, \
     eta, version, created_at, updated_at";

/// The condition of the `shipments_active` partial index.
const ACTIVE: &str = "status IN ('created', 'picked_up', 'in_transit')";

fn bad(what: &str) -> StoreError {
    bad_value(what, "delivery")
}

fn json_error(err: serde_json::Error) -> StoreError {
    StoreError::Other(err.into())
}

fn col<'a, T: FromSql<'a>>(row: &'a Row, i: usize) -> Result<T, StoreError> {
    row.try_get(i).map_err(store_error)
}

fn to_u32(value: i64, what: &str) -> Result<u32, StoreError> {
    u32::try_from(value).map_err(|_| bad(what))
}

fn shipment_row(row: &Row) -> Result<Shipment, StoreError> {
    Ok(Shipment {
        id: ShipmentId::parse(col(row, 0)?).map_err(|_| bad("shipment id"))?,
        order_id: OrderId::parse(col(row, 1)?).map_err(|_| bad("order id"))?,
        customer_id: ClientId::parse(col(row, 2)?).map_err(|_| bad("customer id"))?,
        status: ShipmentStatus::parse(col(row, 3)?).ok_or_else(|| bad("status"))?,
        failure_reason: col(row, 4)?,
        parcels: Vec::new(),
        waypoints: Vec::new(),
        next_waypoint: to_u32(col(row, 5)?, "next waypoint")?,
        eta: col(row, 6)?,
        version: col(row, 7)?,
        created_at: col(row, 8)?,
        updated_at: col(row, 9)?,
    })
}

/// Loads the parcels and waypoints of `shipments` (one query each, sent
/// together) and attaches them.
async fn attach_parts(conn: &ClientWrapper, shipments: &mut [Shipment]) -> Result<(), StoreError> {
    if shipments.is_empty() {
        return Ok(());
    }
    let ids: Vec<String> = shipments.iter().map(|s| s.id.to_string()).collect();
    let index: HashMap<&str, usize> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| (id.as_str(), i))
        .collect();
    let query = |sql: &'static str| {
        let ids = &ids;
        async move {
            let stmt = conn.prepare_cached(sql).await?;
            conn.query(&stmt, &[ids]).await
        }
    };
    let (parcels, waypoints) = futures::try_join!(
        query(
            "SELECT shipment_id, id, seller_id, lines FROM parcels
             WHERE shipment_id = ANY($1) ORDER BY shipment_id, parcel_no"
        ),
        query(
            "SELECT shipment_id, seq, kind, location FROM waypoints
             WHERE shipment_id = ANY($1) ORDER BY shipment_id, seq"
        ),
    )
    .map_err(store_error)?;

    for row in &parcels {
        let lines: serde_json::Value = col(row, 3)?;
        let parcel = Parcel {
            id: ParcelId::parse(col(row, 1)?).map_err(|_| bad("parcel id"))?,
            seller_id: ClientId::parse(col(row, 2)?).map_err(|_| bad("seller id"))?,
            lines: serde_json::from_value::<Vec<StockLine>>(lines)
                .map_err(|_| bad("parcel lines"))?,
        };
        if let Some(&i) = index.get(col::<&str>(row, 0)?) {
            shipments[i].parcels.push(parcel);
        }
    }
    for row in &waypoints {
        let waypoint = Waypoint {
            seq: to_u32(col(row, 1)?, "waypoint seq")?,
            kind: WaypointKind::parse(col(row, 2)?).ok_or_else(|| bad("waypoint kind"))?,
            location: col(row, 3)?,
        };
        if let Some(&i) = index.get(col::<&str>(row, 0)?) {
            shipments[i].waypoints.push(waypoint);
        }
    }
    Ok(())
}

async fn query_shipments(
    conn: &ClientWrapper,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Vec<Shipment>, StoreError> {
    let stmt = conn.prepare_cached(sql).await.map_err(store_error)?;
    let rows = conn.query(&stmt, params).await.map_err(store_error)?;
    let mut shipments = rows
        .iter()
        .map(shipment_row)
        .collect::<Result<Vec<_>, _>>()?;
    attach_parts(conn, &mut shipments).await?;
    Ok(shipments)
}

/// Serialises, until the end of the transaction, every transaction that
/// decides between "the order has a shipment" and "the order was cancelled
/// before it had one" (two-key form: its own key space, apart from the
/// migrations' lock).
async fn lock_order(tx: &Transaction<'_>, order: &str) -> Result<(), StoreError> {
    let stmt = tx
        .prepare_cached("SELECT pg_advisory_xact_lock(hashtext('delivery.order'), hashtext($1))")
        .await
        .map_err(store_error)?;
    tx.execute(&stmt, &[&order]).await.map_err(store_error)?;
    Ok(())
}

async fn exists(tx: &Transaction<'_>, sql: &str, order: &str) -> Result<bool, StoreError> {
    let stmt = tx.prepare_cached(sql).await.map_err(store_error)?;
    let found = tx.query_opt(&stmt, &[&order]).await.map_err(store_error)?;
    Ok(found.is_some())
}

async fn has_shipment(tx: &Transaction<'_>, order: &str) -> Result<bool, StoreError> {
    exists(tx, "SELECT 1 FROM shipments WHERE order_id = $1", order).await
}

async fn insert_shipment(tx: &Transaction<'_>, shipment: &Shipment) -> Result<(), StoreError> {
    let id = shipment.id.to_string();
    let stmt = tx
        .prepare_cached(&format!(
            "INSERT INTO shipments ({SHIPMENT_COLUMNS})
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
        ))
        .await
        .map_err(store_error)?;
    tx.execute(
        &stmt,
        &[
            &id,
            &shipment.order_id.to_string(),
            &shipment.customer_id.to_string(),
            &shipment.status.as_str(),
            &shipment.failure_reason,
            &i64::from(shipment.next_waypoint),
            &shipment.eta,
            &shipment.version,
            &shipment.created_at,
            &shipment.updated_at,
        ],
    )
    .await
    .map_err(store_error)?;

    // Each part in one statement, whatever the number of sellers.
    let mut parcel_nos = Vec::with_capacity(shipment.parcels.len());
    let mut parcel_ids = Vec::with_capacity(shipment.parcels.len());
    let mut sellers = Vec::with_capacity(shipment.parcels.len());
    let mut lines = Vec::with_capacity(shipment.parcels.len());
    for (parcel_no, parcel) in (0_i64..).zip(&shipment.parcels) {
        parcel_nos.push(parcel_no);
        parcel_ids.push(parcel.id.to_string());
        sellers.push(parcel.seller_id.to_string());
        lines.push(serde_json::to_value(&parcel.lines).map_err(json_error)?);
    }
    let stmt = tx
        .prepare_cached(
            "INSERT INTO parcels (shipment_id, parcel_no, id, seller_id, lines)
             SELECT $1, * FROM unnest($2::bigint[], $3::text[], $4::text[], $5::jsonb[])",
        )
        .await
        .map_err(store_error)?;
    tx.execute(&stmt, &[&id, &parcel_nos, &parcel_ids, &sellers, &lines])
        .await
        .map_err(store_error)?;

    let seqs: Vec<i64> = shipment
        .waypoints
        .iter()
        .map(|w| i64::from(w.seq))
        .collect();
    let kinds: Vec<&str> = shipment.waypoints.iter().map(|w| w.kind.as_str()).collect();
    let locations: Vec<&str> = shipment
        .waypoints
        .iter()
        .map(|w| w.location.as_str())
        .collect();
    let stmt = tx
        .prepare_cached(
            "INSERT INTO waypoints (shipment_id, seq, kind, location)
             SELECT $1, * FROM unnest($2::bigint[], $3::text[], $4::text[])",
        )
        .await
        .map_err(store_error)?;
    tx.execute(&stmt, &[&id, &seqs, &kinds, &locations])
        .await
        .map_err(store_error)?;
    Ok(())
}

async fn append_log(tx: &Transaction<'_>, entry: &CourierLogEntry) -> Result<(), StoreError> {
    let stmt = tx
        .prepare_cached(
            "INSERT INTO courier_events
                (shipment_id, seq, event_id, kind, waypoint, location, eta, reason, actor, at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .await
        .map_err(store_error)?;
    tx.execute(
        &stmt,
        &[
            &entry.shipment_id.to_string(),
            &entry.seq,
            &entry.event_id,
            &entry.kind.as_str(),
            &entry.waypoint.map(i64::from),
            &entry.location,
            &entry.eta,
            &entry.reason,
            &entry.actor,
            &entry.at,
        ],
    )
    .await
    .map_err(store_error)?;
    Ok(())
}

#[async_trait::async_trait]
impl ShipmentStore for PgShipmentStore {
    async fn create(
        &self,
        shipment: Shipment,
        created: Envelope,
        inbox: InboxKey,
    ) -> Result<Creation, StoreError> {
        let work = Arc::new((shipment, created, inbox));
        self.db
            .transaction(move |tx| {
                let work = work.clone();
                Box::pin(async move {
                    let (shipment, created, inbox) = &*work;
                    let order = shipment.order_id.to_string();
                    lock_order(tx, &order).await?;
                    if !record_inbox(tx, Some(inbox)).await? {
                        return Ok(Creation::Duplicate);
                    }
                    if exists(
                        tx,
                        "SELECT 1 FROM cancelled_orders WHERE order_id = $1",
                        &order,
                    )
                    .await?
                    {
                        return Ok(Creation::OrderCancelled);
                    }
                    // Another order.paid of the same order (a re-publication
                    // with a new event id) already planned it.
                    if has_shipment(tx, &order).await? {
                        return Ok(Creation::Duplicate);
                    }
                    insert_shipment(tx, shipment).await?;
                    outbox_append(tx, created).await?;
                    Ok(Creation::Created)
                })
            })
            .await
    }

    async fn get(&self, id: ShipmentId) -> Result<Shipment, StoreError> {
        // The primary: a transition is guarded on the version read here.
        let conn = self.db.conn().await?;
        query_shipments(
            &conn,
            &format!("SELECT {SHIPMENT_COLUMNS} FROM shipments WHERE id = $1"),
            &[&id.to_string()],
        )
        .await?
        .pop()
        .ok_or(StoreError::NotFound)
    }

    async fn find_by_order(&self, order: OrderId) -> Result<Option<Shipment>, StoreError> {
        // The primary: the reactions guard their writes on what they find.
        let conn = self.db.conn().await?;
        Ok(query_shipments(
            &conn,
            &format!("SELECT {SHIPMENT_COLUMNS} FROM shipments WHERE order_id = $1"),
            &[&order.to_string()],
        )
        .await?
        .pop())
    }

    async fn save_transition(
        &self,
        shipment: Shipment,
        expected_version: i64,
        events: Vec<Envelope>,
        log: Option<CourierLogEntry>,
        inbox: Option<InboxKey>,
    ) -> Result<Applied, StoreError> {
        let work = Arc::new((shipment, events, log, inbox));
        self.db
            .transaction(move |tx| {
                let work = work.clone();
                Box::pin(async move {
                    let (shipment, events, log, inbox) = &*work;
                    if !record_inbox(tx, inbox.as_ref()).await? {
                        return Ok(Applied::Duplicate);
                    }
                    let stmt = tx
                        .prepare_cached(
                            "UPDATE shipments SET status = $1, failure_reason = $2,
                                next_waypoint = $3, eta = $4, version = $5, updated_at = $6
                             WHERE id = $7 AND version = $8",
                        )
                        .await
                        .map_err(store_error)?;
                    let changed = tx
                        .execute(
                            &stmt,
                            &[
                                &shipment.status.as_str(),
                                &shipment.failure_reason,
                                &i64::from(shipment.next_waypoint),
                                &shipment.eta,
                                &shipment.version,
                                &shipment.updated_at,
                                &shipment.id.to_string(),
                                &expected_version,
                            ],
                        )
                        .await
                        .map_err(store_error)?;
                    if changed == 0 {
                        return Err(StoreError::Conflict(format!(
                            "shipment {} is no longer at version {expected_version}",
                            shipment.id
                        )));
                    }
                    if let Some(entry) = log {
                        append_log(tx, entry).await?;
                    }
                    for event in events {
                        outbox_append(tx, event).await?;
                    }
                    Ok(Applied::Done)
                })
            })
            .await
    }

    async fn remember_cancelled(
        &self,
        order: OrderId,
        reason: String,
        at: DateTime<Utc>,
        events: Vec<Envelope>,
        inbox: InboxKey,
    ) -> Result<Applied, StoreError> {
        let work = Arc::new((order.to_string(), reason, events, inbox));
        self.db
            .transaction(move |tx| {
                let work = work.clone();
                Box::pin(async move {
                    let (order, reason, events, inbox) = &*work;
                    lock_order(tx, order).await?;
                    // Checked before the inbox: a conflict must leave the
                    // event unclaimed, so that its retry cancels the shipment.
                    if has_shipment(tx, order).await? {
                        return Err(StoreError::Conflict(format!(
                            "order {order} has a shipment by now"
                        )));
                    }
                    if !record_inbox(tx, Some(inbox)).await? {
                        return Ok(Applied::Duplicate);
                    }
                    let stmt = tx
                        .prepare_cached(
                            "INSERT INTO cancelled_orders (order_id, reason, cancelled_at)
                             VALUES ($1, $2, $3)
                             ON CONFLICT (order_id) DO NOTHING",
                        )
                        .await
                        .map_err(store_error)?;
                    tx.execute(&stmt, &[order, reason, &at])
                        .await
                        .map_err(store_error)?;
                    for event in events {
                        outbox_append(tx, event).await?;
                    }
                    Ok(Applied::Done)
                })
            })
            .await
    }

    async fn active(&self, limit: usize) -> Result<Vec<Shipment>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let conn = self.db.conn().await?;
        query_shipments(
            &conn,
            &format!(
                "SELECT {SHIPMENT_COLUMNS} FROM shipments WHERE {ACTIVE} ORDER BY id LIMIT $1"
            ),
            &[&limit],
        )
        .await
    }

    async fn courier_log(&self, id: ShipmentId) -> Result<Vec<CourierLogEntry>, StoreError> {
        // Serves GET /v1/shipments/{id}/events only: the replica may answer.
        let conn = self.db.read_conn().await?;
        let stmt = conn
            .prepare_cached(
                "SELECT seq, event_id, kind, waypoint, location, eta, reason, actor, at
                 FROM courier_events WHERE shipment_id = $1 ORDER BY seq",
            )
            .await
            .map_err(store_error)?;
        let rows = conn
            .query(&stmt, &[&id.to_string()])
            .await
            .map_err(store_error)?;
        rows.iter()
            .map(|r| {
                Ok(CourierLogEntry {
                    shipment_id: id,
                    seq: col(r, 0)?,
                    event_id: col(r, 1)?,
                    kind: CourierEventKind::parse(col(r, 2)?)
                        .ok_or_else(|| bad("courier event kind"))?,
                    waypoint: col::<Option<i64>>(r, 3)?
                        .map(|w| to_u32(w, "courier event waypoint"))
                        .transpose()?,
                    location: col(r, 4)?,
                    eta: col(r, 5)?,
                    reason: col(r, 6)?,
                    actor: col(r, 7)?,
                    at: col(r, 8)?,
                })
            })
            .collect()
    }

    async fn list_statuses(
        &self,
        after: Option<ShipmentId>,
        limit: usize,
    ) -> Result<Vec<ShipmentSummary>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        // Ids sort after the empty string: no cursor starts at the first.
        let after = after.map(|id| id.to_string()).unwrap_or_default();
        // The primary: the invariant checker compares it with the other
        // services' state right after the fact.
        let conn = self.db.conn().await?;
        let stmt = conn
            .prepare_cached(
                "SELECT id, order_id, status FROM shipments WHERE id > $1 ORDER BY id LIMIT $2",
            )
            .await
            .map_err(store_error)?;
        let rows = conn
            .query(&stmt, &[&after, &limit])
            .await
            .map_err(store_error)?;
        rows.iter()
            .map(|r| {
                Ok(ShipmentSummary {
                    shipment_id: ShipmentId::parse(col(r, 0)?).map_err(|_| bad("shipment id"))?,
                    order_id: OrderId::parse(col(r, 1)?).map_err(|_| bad("order id"))?,
                    status: ShipmentStatus::parse(col(r, 2)?).ok_or_else(|| bad("status"))?,
                })
            })
            .collect()
    }
}
