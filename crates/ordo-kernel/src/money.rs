//! Money is a decimal amount with an ISO 4217 currency, never a float.

use std::fmt;

use rust_decimal::Decimal;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("must be an ISO 4217 code of three upper-case letters")]
    Currency,
    #[error("must not be negative")]
    Negative,
    #[error("has more decimal places than {currency} allows ({allowed})")]
    Scale { currency: Currency, allowed: u32 },
    #[error("is too large")]
    TooLarge,
}

/// An ISO 4217 currency code.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Currency([u8; 3]);

impl Currency {
    pub fn parse(code: &str) -> Result<Self, MoneyError> {
        let bytes: [u8; 3] = code
            .as_bytes()
            .try_into()
            .map_err(|_| MoneyError::Currency)?;
        if bytes.iter().all(u8::is_ascii_uppercase) {
            Ok(Self(bytes))
        } else {
            Err(MoneyError::Currency)
        }
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII upper-case letters are ever stored.
        std::str::from_utf8(&self.0).unwrap_or("XXX")
    }

    /// Decimal places of the currency's minor unit (ISO 4217).
    pub fn minor_units(&self) -> u32 {
        match self.as_str() {
            "BIF" | "CLP" | "DJF" | "GNF" | "ISK" | "JPY" | "KMF" | "KRW" | "PYG" | "RWF"
            | "UGX" | "VND" | "VUV" | "XAF" | "XOF" | "XPF" => 0,
            "BHD" | "IQD" | "JOD" | "KWD" | "LYD" | "OMR" | "TND" => 3,
            _ => 2,
        }
    }

    /// Validates a price or total in this currency: not negative, no more
    /// decimals than the minor unit, and within a sane bound.
    pub fn check_amount(&self, amount: Decimal) -> Result<Decimal, MoneyError> {
        if amount.is_sign_negative() && !amount.is_zero() {
            return Err(MoneyError::Negative);
        }
        let allowed = self.minor_units();
        if amount.normalize().scale() > allowed {
            return Err(MoneyError::Scale {
                currency: *self,
                allowed,
            });
        }
        if amount > Decimal::from(1_000_000_000_000_i64) {
            return Err(MoneyError::TooLarge);
        }
        Ok(amount)
    }

    /// An amount written with exactly the currency's decimal places ("39.90").
    pub fn format(&self, amount: Decimal) -> String {
        let mut rounded = amount.round_dp(self.minor_units());
        rounded.rescale(self.minor_units());
        rounded.to_string()
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Currency {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Currency {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl utoipa::PartialSchema for Currency {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .pattern(Some("^[A-Z]{3}$"))
            .examples(["EUR"])
            .into()
    }
}

impl utoipa::ToSchema for Currency {}

/// How many units of a product an order line holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Quantity(u32);

impl Quantity {
    pub const MAX: u32 = 10_000;

    pub fn new(value: i64) -> Result<Self, QuantityError> {
        match u32::try_from(value) {
            Ok(v) if (1..=Self::MAX).contains(&v) => Ok(Self(v)),
            _ => Err(QuantityError),
        }
    }

    pub fn get(&self) -> u32 {
        self.0
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("must be a whole number from 1 to {max}", max = Quantity::MAX)]
pub struct QuantityError;

impl<'de> Deserialize<'de> for Quantity {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = i64::deserialize(deserializer)?;
        Self::new(value).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use super::*;

    #[test]
    fn currency_codes_are_three_upper_case_letters() {
        assert!(Currency::parse("EUR").is_ok());
        for bad in ["eur", "EU", "EURO", "E1R", ""] {
            assert_eq!(Currency::parse(bad), Err(MoneyError::Currency), "{bad}");
        }
    }

    #[test]
    fn amounts_respect_the_minor_unit() {
        let eur = Currency::parse("EUR").unwrap();
        let jpy = Currency::parse("JPY").unwrap();
        assert!(
            eur.check_amount(Decimal::from_str("19.99").unwrap())
                .is_ok()
        );
        assert!(
            eur.check_amount(Decimal::from_str("19.990").unwrap())
                .is_ok()
        );
        assert!(
            eur.check_amount(Decimal::from_str("19.999").unwrap())
                .is_err()
        );
        assert!(jpy.check_amount(Decimal::from_str("1.5").unwrap()).is_err());
        assert!(eur.check_amount(Decimal::from_str("-1").unwrap()).is_err());
    }

    #[test]
    fn amounts_are_formatted_with_the_currency_decimals() {
        let eur = Currency::parse("EUR").unwrap();
        assert_eq!(eur.format(Decimal::from_str("39.9").unwrap()), "39.90");
        assert_eq!(eur.format(Decimal::from(5)), "5.00");
        let jpy = Currency::parse("JPY").unwrap();
        assert_eq!(jpy.format(Decimal::from(500)), "500");
    }

    #[test]
    fn quantities_are_bounded() {
        assert!(Quantity::new(1).is_ok());
        assert!(Quantity::new(10_000).is_ok());
        for bad in [0, -1, 10_001, i64::MAX] {
            assert!(Quantity::new(bad).is_err(), "{bad}");
        }
    }
}
