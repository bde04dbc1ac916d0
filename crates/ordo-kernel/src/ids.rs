//! Typed identifiers: a ULID behind a short type prefix (`ord_…`, `prd_…`).
//!
//! The prefix makes an id self-describing in logs and URLs, and parsing
//! rejects an id of the wrong kind (`prd_…` where an order id is expected).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use ulid::Ulid;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("expected an id of the form {prefix}<26 characters>")]
pub struct IdParseError {
    pub prefix: &'static str,
}

macro_rules! prefixed_id {
    ($(#[$meta:meta])* $name:ident, $prefix:literal) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(Ulid);

        impl $name {
            pub const PREFIX: &'static str = $prefix;

            pub fn from_ulid(ulid: Ulid) -> Self {
                Self(ulid)
            }

            pub fn ulid(&self) -> Ulid {
                self.0
            }

            pub fn parse(s: &str) -> Result<Self, IdParseError> {
                s.strip_prefix($prefix)
                    .and_then(|rest| Ulid::from_string(rest).ok())
                    .map(Self)
                    .ok_or(IdParseError { prefix: $prefix })
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}{}", $prefix, self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(self, f)
            }
        }

        impl FromStr for $name {
            type Err = IdParseError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::parse(s)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
                Self::parse(&s).map_err(serde::de::Error::custom)
            }
        }

        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                utoipa::openapi::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::String)
                    .examples([concat!($prefix, "01JC0000000000000000000000")])
                    .into()
            }
        }

        impl utoipa::ToSchema for $name {}
    };
}

prefixed_id!(
    /// An order.
    OrderId,
    "ord_"
);
prefixed_id!(
    /// A product of the catalog.
    ProductId,
    "prd_"
);
prefixed_id!(
    /// A domain event (the CloudEvents `id`).
    EventId,
    "evt_"
);
prefixed_id!(
    /// An API client: the `sub` of its tokens, and the customer or seller id
    /// it acts as.
    ClientId,
    "cli_"
);
prefixed_id!(
    /// A payment: the money side of one order.
    PaymentId,
    "pay_"
);
prefixed_id!(
    /// A refund of (part of) a captured payment.
    RefundId,
    "ref_"
);
prefixed_id!(
    /// A shipment: everything an order ships in.
    ShipmentId,
    "shp_"
);
prefixed_id!(
    /// A parcel: what one seller hands to the courier for a shipment.
    ParcelId,
    "prc_"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_round_trips_through_its_string_form() {
        let id = OrderId::from_ulid(Ulid::new());
        assert_eq!(OrderId::parse(&id.to_string()), Ok(id));
    }

    #[test]
    fn an_id_of_another_kind_is_rejected() {
        let product = ProductId::from_ulid(Ulid::new()).to_string();
        assert!(OrderId::parse(&product).is_err());
        assert!(OrderId::parse("ord_").is_err());
        assert!(OrderId::parse("ord_not-a-ulid-at-all-00000000").is_err());
    }

    #[test]
    fn ids_serialize_as_prefixed_strings() {
        let id = ProductId::from_ulid(Ulid::nil());
        let json = serde_json_like(&id);
        assert_eq!(json, "prd_00000000000000000000000000");
    }

    fn serde_json_like(id: &ProductId) -> String {
        id.to_string()
    }
}
