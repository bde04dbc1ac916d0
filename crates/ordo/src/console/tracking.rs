//! Public tracking links: `/track/<order>.<expiry>.<signature>`, signed
//! with HMAC-SHA256 and expiring, opened without a sign-in. The page shows
//! an order's progress and its destination city, nothing more personal.

use std::time::Duration;

use axum::extract::{Path, State};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use maud::html;
use ordo_kernel::OrderId;
use sha2::Sha256;

use super::customer::{progress_view, reason_in_words, stepper};
use super::{ConsoleState, Page, PageError, layout};

/// How long a tracking link works.
pub const LINK_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

pub struct LinkSigner {
    mac: Hmac<Sha256>,
}

impl LinkSigner {
    pub fn new(key: &[u8]) -> anyhow::Result<Self> {
        let mac = <Hmac<Sha256> as Mac>::new_from_slice(key)
            .map_err(|e| anyhow::anyhow!("the link key: {e}"))?;
        Ok(Self { mac })
    }

    fn mac(&self, message: &str) -> Hmac<Sha256> {
        let mut mac = self.mac.clone();
        mac.update(message.as_bytes());
        mac
    }

    /// A link token for `order`, valid until `expires`.
    pub fn sign(&self, order: OrderId, expires: DateTime<Utc>) -> String {
        let message = format!("{order}.{}", expires.timestamp());
        let signature = URL_SAFE_NO_PAD.encode(self.mac(&message).finalize().into_bytes());
        format!("{message}.{signature}")
    }

    /// The order a token names, if its signature holds and it has not
    /// expired at `now`.
    pub fn verify(&self, token: &str, now: DateTime<Utc>) -> Option<OrderId> {
        let (message, signature) = token.rsplit_once('.')?;
        let (order, expires) = message.split_once('.')?;
        let signature = URL_SAFE_NO_PAD.decode(signature).ok()?;
        self.mac(message).verify_slice(&signature).ok()?;
        let expires: i64 = expires.parse().ok()?;
        if expires <= now.timestamp() {
            return None;
        }
        OrderId::parse(order).ok()
    }
}

/// `GET /track/{token}`.
pub async fn track(State(state): State<ConsoleState>, Path(token): Path<String>) -> Page {
    let now = Utc::now();
    let Some(id) = state.links.verify(&token, now) else {
        return Err(PageError::not_found(
            "this tracking link is not valid or has expired",
        ));
    };
    let order = state.orders()?.tracking(id).await?;
    let shipment = match &state.delivery {
        Some(delivery) => delivery.for_tracking(id).await?,
        None => None,
    };
    Ok(layout::bare(
        "Track your order",
        html! {
            div.page-head {
                h1 { "Your order" }
                (layout::badge(order.status.as_str()))
            }
            p.sub { "Order " code { (order.id) } " to " (order.city) ", " (order.country) " · placed " (layout::time(order.created_at)) }
            div.card {
                (stepper(order.status, order.cancellation_reason.as_deref()))
                @if let Some(reason) = &order.cancellation_reason {
                    (layout::notice("bad", &format!("This order was cancelled: {}.", reason_in_words(reason))))
                } @else if order.cancel_requested {
                    (layout::notice("warn", "A cancellation was asked for and is being confirmed."))
                }
                @if let Some(shipment) = &shipment {
                    h2 { "Delivery" }
                    (progress_view(shipment, false))
                } @else {
                    p.muted { "The shipment is planned once the order is paid." }
                }
                p.muted.small { "Last update " (layout::time(order.updated_at)) }
            }
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order() -> OrderId {
        OrderId::from_ulid(ulid::Ulid::new())
    }

    #[test]
    fn a_signed_link_verifies_until_it_expires() {
        let signer = LinkSigner::new(&[7; 32]).unwrap();
        let id = order();
        let now = Utc::now();
        let token = signer.sign(id, now + chrono::Duration::hours(1));
        assert_eq!(signer.verify(&token, now), Some(id));
        assert_eq!(
            signer.verify(&token, now + chrono::Duration::hours(2)),
            None
        );
    }

    #[test]
    fn a_tampered_or_foreign_link_is_refused() {
        let signer = LinkSigner::new(&[7; 32]).unwrap();
        let now = Utc::now();
        let later = now + chrono::Duration::hours(1);
        let token = signer.sign(order(), later);
        let other = signer.sign(order(), later);
        // Another order's id with this signature.
        let (_, rest) = token.split_once('.').unwrap();
        let (other_id, _) = other.split_once('.').unwrap();
        assert_eq!(signer.verify(&format!("{other_id}.{rest}"), now), None);
        // A later expiry with the same signature.
        let parts: Vec<&str> = token.split('.').collect();
        let extended = format!("{}.{}.{}", parts[0], later.timestamp() + 3600, parts[2]);
        assert_eq!(signer.verify(&extended, now), None);
        // Another key.
        assert_eq!(LinkSigner::new(&[8; 32]).unwrap().verify(&token, now), None);
        assert_eq!(signer.verify("garbage", now), None);
    }
}
