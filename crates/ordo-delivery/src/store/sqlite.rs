//! The SQLite implementation of [`ShipmentStore`]: one file, one writer
//! thread, so each write transaction sees every earlier one.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use ordo_bus::Envelope;
use ordo_events::StockLine;
use ordo_kernel::{ClientId, OrderId, StoreError};
use ordo_sqlite::{Database, WriteTx, outbox_append, record_inbox, store_error, time};
use rusqlite::{Connection, OptionalExtension, Row, params, params_from_iter};

use super::{Applied, Creation, InboxKey, ShipmentStore, ShipmentSummary};
use crate::domain::{
    CourierEventKind, CourierLogEntry, Parcel, ParcelId, Shipment, ShipmentId, ShipmentStatus,
    Waypoint, WaypointKind,
};

pub struct SqliteShipmentStore {
    db: Database,
}

impl SqliteShipmentStore {
    pub fn new(db: Database) -> Self {
        Self { db }
    }
}

const SHIPMENT_COLUMNS: &str = "id, order_id, customer_id, status, failure_reason, next_waypoint, \
     eta, version, created_at, updated_at";

/// The condition of the `shipments_active` partial index.
const ACTIVE: &str = "status IN ('created', 'picked_up', 'in_transit')";

fn bad(what: &str) -> StoreError {
    StoreError::Other(anyhow::anyhow!("bad {what} in the delivery database"))
}

fn json_error(err: serde_json::Error) -> StoreError {
    StoreError::Other(err.into())
}

fn opt_time(value: Option<String>) -> Result<Option<DateTime<Utc>>, StoreError> {
    value.as_deref().map(time::from_sql).transpose()
}

fn shipment_row(row: &Row<'_>) -> Result<Shipment, StoreError> {
    let get = |i: usize| -> Result<String, StoreError> { row.get(i).map_err(store_error) };
    let next_waypoint: i64 = row.get(5).map_err(store_error)?;
    Ok(Shipment {
        id: ShipmentId::parse(&get(0)?).map_err(|_| bad("shipment id"))?,
        order_id: OrderId::parse(&get(1)?).map_err(|_| bad("order id"))?,
        customer_id: ClientId::parse(&get(2)?).map_err(|_| bad("customer id"))?,
        status: ShipmentStatus::parse(&get(3)?).ok_or_else(|| bad("status"))?,
        failure_reason: row.get(4).map_err(store_error)?,
        parcels: Vec::new(),
        waypoints: Vec::new(),
        next_waypoint: u32::try_from(next_waypoint).map_err(|_| bad("next waypoint"))?,
        eta: opt_time(row.get(6).map_err(store_error)?)?,
        version: row.get(7).map_err(store_error)?,
        created_at: time::from_sql(&get(8)?)?,
        updated_at: time::from_sql(&get(9)?)?,
    })
}

/// Loads the parcels and waypoints of `shipments` in one query each and
/// attaches them.
fn attach_parts(conn: &Connection, shipments: &mut [Shipment]) -> Result<(), StoreError> {
    if shipments.is_empty() {
        return Ok(());
    }
    let placeholders = vec!["?"; shipments.len()].join(", ");
    let ids: Vec<String> = shipments.iter().map(|s| s.id.to_string()).collect();
    let index: HashMap<String, usize> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| (id.clone(), i))
        .collect();

    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT shipment_id, id, seller_id, lines FROM parcels
             WHERE shipment_id IN ({placeholders}) ORDER BY shipment_id, parcel_no"
        ))
        .map_err(store_error)?;
    let mut rows = stmt
        .query(params_from_iter(ids.iter()))
        .map_err(store_error)?;
    while let Some(row) = rows.next().map_err(store_error)? {
        let get = |i: usize| -> Result<String, StoreError> { row.get(i).map_err(store_error) };
        let parcel = Parcel {
            id: ParcelId::parse(&get(1)?).map_err(|_| bad("parcel id"))?,
            seller_id: ClientId::parse(&get(2)?).map_err(|_| bad("seller id"))?,
            lines: serde_json::from_str::<Vec<StockLine>>(&get(3)?)
                .map_err(|_| bad("parcel lines"))?,
        };
        if let Some(&i) = index.get(&get(0)?) {
            shipments[i].parcels.push(parcel);
        }
    }
    drop(rows);

    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT shipment_id, seq, kind, location FROM waypoints
             WHERE shipment_id IN ({placeholders}) ORDER BY shipment_id, seq"
        ))
        .map_err(store_error)?;
    let mut rows = stmt
        .query(params_from_iter(ids.iter()))
        .map_err(store_error)?;
    while let Some(row) = rows.next().map_err(store_error)? {
        let get = |i: usize| -> Result<String, StoreError> { row.get(i).map_err(store_error) };
        let seq: i64 = row.get(1).map_err(store_error)?;
        let waypoint = Waypoint {
            seq: u32::try_from(seq).map_err(|_| bad("waypoint seq"))?,
            kind: WaypointKind::parse(&get(2)?).ok_or_else(|| bad("waypoint kind"))?,
            location: get(3)?,
        };
        if let Some(&i) = index.get(&get(0)?) {
            shipments[i].waypoints.push(waypoint);
        }
    }
    Ok(())
}

fn query_shipments(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<Shipment>, StoreError> {
    let mut stmt = conn.prepare_cached(sql).map_err(store_error)?;
    let mut rows = stmt.query(params).map_err(store_error)?;
    let mut shipments = Vec::new();
    while let Some(row) = rows.next().map_err(store_error)? {
        shipments.push(shipment_row(row)?);
    }
    drop(rows);
    attach_parts(conn, &mut shipments)?;
    Ok(shipments)
}

fn has_shipment(conn: &Connection, order: &str) -> Result<bool, StoreError> {
    conn.prepare_cached("SELECT 1 FROM shipments WHERE order_id = ?1")
        .and_then(|mut s| s.query_row([order], |r| r.get::<_, i64>(0)).optional())
        .map(|found| found.is_some())
        .map_err(store_error)
}

fn insert_shipment(tx: &WriteTx<'_>, shipment: &Shipment) -> Result<(), StoreError> {
    tx.prepare_cached(&format!(
        "INSERT INTO shipments ({SHIPMENT_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"
    ))
    .and_then(|mut s| {
        s.execute(params![
            shipment.id.to_string(),
            shipment.order_id.to_string(),
            shipment.customer_id.to_string(),
            shipment.status.as_str(),
            shipment.failure_reason,
            shipment.next_waypoint,
            shipment.eta.map(time::to_sql),
            shipment.version,
            time::to_sql(shipment.created_at),
            time::to_sql(shipment.updated_at),
        ])
    })
    .map_err(store_error)?;
    let mut stmt = tx
        .prepare_cached(
            "INSERT INTO parcels (shipment_id, parcel_no, id, seller_id, lines)
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )
        .map_err(store_error)?;
    for (parcel_no, parcel) in shipment.parcels.iter().enumerate() {
        let lines = serde_json::to_string(&parcel.lines).map_err(json_error)?;
        stmt.execute(params![
            shipment.id.to_string(),
            parcel_no,
            parcel.id.to_string(),
            parcel.seller_id.to_string(),
            lines,
        ])
        .map_err(store_error)?;
    }
    let mut stmt = tx
        .prepare_cached(
            "INSERT INTO waypoints (shipment_id, seq, kind, location) VALUES (?1, ?2, ?3, ?4)",
        )
        .map_err(store_error)?;
    for waypoint in &shipment.waypoints {
        stmt.execute(params![
            shipment.id.to_string(),
            waypoint.seq,
            waypoint.kind.as_str(),
            waypoint.location,
        ])
        .map_err(store_error)?;
    }
    Ok(())
}

fn append_log(tx: &WriteTx<'_>, entry: &CourierLogEntry) -> Result<(), StoreError> {
    tx.prepare_cached(
        "INSERT INTO courier_events (shipment_id, seq, event_id, kind, waypoint, location, eta, reason, actor, at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )
    .and_then(|mut s| {
        s.execute(params![
            entry.shipment_id.to_string(),
            entry.seq,
            entry.event_id,
            entry.kind.as_str(),
            entry.waypoint,
            entry.location,
            entry.eta.map(time::to_sql),
            entry.reason,
            entry.actor,
            time::to_sql(entry.at),
        ])
    })
    .map_err(store_error)?;
    Ok(())
}

#[async_trait::async_trait]
impl ShipmentStore for SqliteShipmentStore {
    async fn create(
        &self,
        shipment: Shipment,
        created: Envelope,
        inbox: InboxKey,
    ) -> Result<Creation, StoreError> {
        self.db
            .write(move |tx| {
                if !record_inbox(tx, Some(&inbox))? {
                    return Ok(Creation::Duplicate);
                }
                let order = shipment.order_id.to_string();
                let cancelled: Option<i64> = tx
                    .prepare_cached("SELECT 1 FROM cancelled_orders WHERE order_id = ?1")
                    .and_then(|mut s| s.query_row([&order], |r| r.get(0)).optional())
                    .map_err(store_error)?;
                if cancelled.is_some() {
                    return Ok(Creation::OrderCancelled);
                }
                // Another order.paid of the same order (a re-publication
                // with a new event id) already planned it.
                if has_shipment(tx, &order)? {
                    return Ok(Creation::Duplicate);
                }
                insert_shipment(tx, &shipment)?;
                outbox_append(tx, &created)?;
                Ok(Creation::Created)
            })
            .await
    }

    async fn get(&self, id: ShipmentId) -> Result<Shipment, StoreError> {
        self.db
            .read(move |conn| {
                query_shipments(
                    conn,
                    &format!("SELECT {SHIPMENT_COLUMNS} FROM shipments WHERE id = ?1"),
                    [id.to_string()],
                )?
                .pop()
                .ok_or(StoreError::NotFound)
            })
            .await
    }

    async fn find_by_order(&self, order: OrderId) -> Result<Option<Shipment>, StoreError> {
        self.db
            .read(move |conn| {
                Ok(query_shipments(
                    conn,
                    &format!("SELECT {SHIPMENT_COLUMNS} FROM shipments WHERE order_id = ?1"),
                    [order.to_string()],
                )?
                .pop())
            })
            .await
    }

    async fn save_transition(
        &self,
        shipment: Shipment,
        expected_version: i64,
        events: Vec<Envelope>,
        log: Option<CourierLogEntry>,
        inbox: Option<InboxKey>,
    ) -> Result<Applied, StoreError> {
        self.db
            .write(move |tx| {
                if !record_inbox(tx, inbox.as_ref())? {
                    return Ok(Applied::Duplicate);
                }
                let changed = tx
                    .prepare_cached(
                        "UPDATE shipments SET status = ?1, failure_reason = ?2, next_waypoint = ?3,
                            eta = ?4, version = ?5, updated_at = ?6
                         WHERE id = ?7 AND version = ?8",
                    )
                    .and_then(|mut s| {
                        s.execute(params![
                            shipment.status.as_str(),
                            shipment.failure_reason,
                            shipment.next_waypoint,
                            shipment.eta.map(time::to_sql),
                            shipment.version,
                            time::to_sql(shipment.updated_at),
                            shipment.id.to_string(),
                            expected_version,
                        ])
                    })
                    .map_err(store_error)?;
                if changed == 0 {
                    return Err(StoreError::Conflict(format!(
                        "shipment {} is no longer at version {expected_version}",
                        shipment.id
                    )));
                }
                if let Some(entry) = &log {
                    append_log(tx, entry)?;
                }
                for event in &events {
                    outbox_append(tx, event)?;
                }
                Ok(Applied::Done)
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
        self.db
            .write(move |tx| {
                let order = order.to_string();
                // Checked before the inbox: a conflict must leave the event
                // unclaimed, so that its retry cancels the shipment.
                if has_shipment(tx, &order)? {
                    return Err(StoreError::Conflict(format!(
                        "order {order} has a shipment by now"
                    )));
                }
                if !record_inbox(tx, Some(&inbox))? {
                    return Ok(Applied::Duplicate);
                }
                tx.prepare_cached(
                    "INSERT INTO cancelled_orders (order_id, reason, cancelled_at) VALUES (?1, ?2, ?3)
                     ON CONFLICT (order_id) DO NOTHING",
                )
                .and_then(|mut s| s.execute(params![order, reason, time::to_sql(at)]))
                .map_err(store_error)?;
                for event in &events {
                    outbox_append(tx, event)?;
                }
                Ok(Applied::Done)
            })
            .await
    }

    async fn active(&self, limit: usize) -> Result<Vec<Shipment>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.db
            .read(move |conn| {
                query_shipments(
                    conn,
                    &format!(
                        "SELECT {SHIPMENT_COLUMNS} FROM shipments WHERE {ACTIVE} ORDER BY id LIMIT ?1"
                    ),
                    [limit],
                )
            })
            .await
    }

    async fn courier_log(&self, id: ShipmentId) -> Result<Vec<CourierLogEntry>, StoreError> {
        self.db
            .read(move |conn| {
                let mut stmt = conn
                    .prepare_cached(
                        "SELECT seq, event_id, kind, waypoint, location, eta, reason, actor, at
                         FROM courier_events WHERE shipment_id = ?1 ORDER BY seq",
                    )
                    .map_err(store_error)?;
                let mut rows = stmt.query([id.to_string()]).map_err(store_error)?;
                let mut entries = Vec::new();
                while let Some(r) = rows.next().map_err(store_error)? {
                    let kind: String = r.get(2).map_err(store_error)?;
                    let waypoint: Option<i64> = r.get(3).map_err(store_error)?;
                    let at: String = r.get(8).map_err(store_error)?;
                    entries.push(CourierLogEntry {
                        shipment_id: id,
                        seq: r.get(0).map_err(store_error)?,
                        event_id: r.get(1).map_err(store_error)?,
                        kind: CourierEventKind::parse(&kind)
                            .ok_or_else(|| bad("courier event kind"))?,
                        waypoint: waypoint
                            .map(u32::try_from)
                            .transpose()
                            .map_err(|_| bad("courier event waypoint"))?,
                        location: r.get(4).map_err(store_error)?,
                        eta: opt_time(r.get(5).map_err(store_error)?)?,
                        reason: r.get(6).map_err(store_error)?,
                        actor: r.get(7).map_err(store_error)?,
                        at: time::from_sql(&at)?,
                    });
                }
                Ok(entries)
            })
            .await
    }

    async fn list_statuses(
        &self,
        after: Option<ShipmentId>,
        limit: usize,
    ) -> Result<Vec<ShipmentSummary>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        // Ids sort after the empty string: no cursor starts at the first.
        let after = after.map(|id| id.to_string()).unwrap_or_default();
        self.db
            .read(move |conn| {
                let mut stmt = conn
                    .prepare_cached(
                        "SELECT id, order_id, status FROM shipments WHERE id > ?1 ORDER BY id LIMIT ?2",
                    )
                    .map_err(store_error)?;
                let mut rows = stmt.query(params![after, limit]).map_err(store_error)?;
                let mut page = Vec::new();
                while let Some(r) = rows.next().map_err(store_error)? {
                    let get =
                        |i: usize| -> Result<String, StoreError> { r.get(i).map_err(store_error) };
                    page.push(ShipmentSummary {
                        shipment_id: ShipmentId::parse(&get(0)?).map_err(|_| bad("shipment id"))?,
                        order_id: OrderId::parse(&get(1)?).map_err(|_| bad("order id"))?,
                        status: ShipmentStatus::parse(&get(2)?).ok_or_else(|| bad("status"))?,
                    });
                }
                Ok(page)
            })
            .await
    }
}
