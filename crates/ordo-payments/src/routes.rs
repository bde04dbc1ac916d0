//! The payments HTTP API: an order's payments, and refunds by an admin.

use std::str::FromStr;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use ordo_bus::EventContext;
use ordo_http::{ApiError, Json, Principal, RequestId};
use ordo_kernel::{Currency, OrderId};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::domain::{Payment, PaymentId, Refund, RefundId};
use crate::service::{PaymentError, PaymentRecord, PaymentsService, RefundAmount};

/// The longest reason a refund may carry.
pub const MAX_REASON: usize = 200;

#[derive(Clone)]
pub struct PaymentsState {
    pub service: Arc<PaymentsService>,
}

/// Every payments route.
pub fn router(state: PaymentsState) -> OpenApiRouter {
    read_router(state.clone()).merge(refund_router(state))
}

pub fn read_router(state: PaymentsState) -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(list_order_payments))
        .with_state(state)
}

/// The route that moves money: the one to wear the idempotency layer.
pub fn refund_router(state: PaymentsState) -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(refund_payment))
        .with_state(state)
}

impl From<PaymentError> for ApiError {
    fn from(err: PaymentError) -> Self {
        match err {
            PaymentError::NotFound => ApiError::not_found("no such payment"),
            PaymentError::Forbidden(why) => ApiError::Forbidden(why.to_owned()),
            PaymentError::NothingToRefund => ApiError::Conflict {
                slug: "nothing-to-refund",
                detail: "everything captured has already been refunded, or nothing was captured"
                    .to_owned(),
            },
            PaymentError::InvalidAmount(message) => ApiError::field("amount", message),
            PaymentError::AmountTooLarge { refundable } => ApiError::field(
                "amount",
                format!("must be at most {refundable}, what is left to refund"),
            ),
            PaymentError::Declined(reason) => ApiError::Unprocessable {
                slug: "gateway-declined",
                detail: format!("the payment gateway declined: {reason}"),
            },
            PaymentError::Unavailable(_) | PaymentError::Unsettled(_) => ApiError::Unavailable(
                "the payment gateway did not answer; try again later".to_owned(),
            ),
            PaymentError::Rule(rule) => ApiError::Conflict {
                slug: "invalid-transition",
                detail: rule.to_string(),
            },
            PaymentError::Store(e) => e.into(),
            PaymentError::Other(e) => ApiError::Internal(e),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RefundView {
    id: RefundId,
    #[schema(value_type = String, example = "5.00")]
    amount: String,
    /// order_cancelled, late_payment, requested_by_admin, or an admin's words.
    reason: String,
    /// pending, succeeded or failed.
    #[schema(example = "succeeded")]
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    failure_reason: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl RefundView {
    fn new(r: Refund, currency: Currency) -> Self {
        Self {
            id: r.id,
            amount: currency.format(r.amount),
            reason: r.reason,
            status: r.status.as_str(),
            failure_reason: r.failure_reason,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PaymentView {
    id: PaymentId,
    order_id: OrderId,
    /// pending, authorized, captured, partially_refunded, refunded, voided
    /// or failed.
    #[schema(example = "captured")]
    status: &'static str,
    #[schema(value_type = String, example = "39.98")]
    amount: String,
    currency: Currency,
    #[schema(value_type = String, example = "39.98")]
    authorized: String,
    #[schema(value_type = String, example = "39.98")]
    captured: String,
    #[schema(value_type = String, example = "0.00")]
    refunded: String,
    /// What is left to refund.
    #[schema(value_type = String, example = "39.98")]
    refundable: String,
    /// When failed: card_declined, gateway_unavailable, …
    #[serde(skip_serializing_if = "Option::is_none")]
    failure_reason: Option<String>,
    refunds: Vec<RefundView>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl PaymentView {
    fn new(p: Payment, refunds: Vec<Refund>) -> Self {
        let c = p.currency;
        Self {
            id: p.id,
            order_id: p.order_id,
            status: p.status.as_str(),
            amount: c.format(p.amount),
            currency: c,
            authorized: c.format(p.authorized),
            captured: c.format(p.captured),
            refunded: c.format(p.refunded),
            refundable: c.format(p.refundable()),
            failure_reason: p.failure_reason,
            refunds: refunds.into_iter().map(|r| RefundView::new(r, c)).collect(),
            created_at: p.created_at,
            updated_at: p.updated_at,
        }
    }
}

impl From<PaymentRecord> for PaymentView {
    fn from(r: PaymentRecord) -> Self {
        Self::new(r.payment, r.refunds)
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PaymentList {
    items: Vec<PaymentView>,
}

/// The payments of an order: its customer's own, or any for an admin.
#[utoipa::path(get, path = "/v1/orders/{id}/payments", tag = "payments", params(("id" = String, Path)),
    security(("bearer" = [])),
    responses((status = 200, body = PaymentList), (status = 403, body = ordo_http::Problem),
        (status = 404, body = ordo_http::Problem)))]
async fn list_order_payments(
    State(state): State<PaymentsState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<axum::Json<PaymentList>, ApiError> {
    // A malformed id names no order: the same answer as an unknown one.
    let order = OrderId::parse(&id).map_err(|_| ApiError::not_found("no such order"))?;
    let records = state
        .service
        .payments_for_order(&principal, order)
        .await
        .map_err(|err| match err {
            PaymentError::NotFound => ApiError::not_found("no such order"),
            other => other.into(),
        })?;
    Ok(axum::Json(PaymentList {
        items: records.into_iter().map(PaymentView::from).collect(),
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefundBody {
    /// A decimal string in the payment's currency; without it, whatever is
    /// left to refund.
    #[schema(example = "5.00")]
    #[serde(default)]
    amount: Option<String>,
    /// Why; defaults to `requested_by_admin`.
    #[serde(default)]
    reason: Option<String>,
}

impl RefundBody {
    fn validate(self) -> Result<(RefundAmount, Option<String>), ApiError> {
        refund_request(self.amount.as_deref(), self.reason)
    }
}

/// A refund's amount and reason as given (the API's body, the console's
/// form): no amount is whatever is left; each problem names its field.
pub fn refund_request(
    amount: Option<&str>,
    reason: Option<String>,
) -> Result<(RefundAmount, Option<String>), ApiError> {
    let mut errors = Vec::new();
    let amount = match amount.map(str::trim) {
        None => RefundAmount::Remainder,
        Some(text) => match Decimal::from_str(text) {
            Ok(amount) if amount > Decimal::ZERO => RefundAmount::Exactly(amount),
            Ok(_) => {
                errors.push(ordo_http::FieldError::new(
                    "amount",
                    "must be greater than zero",
                ));
                RefundAmount::Remainder
            }
            Err(_) => {
                errors.push(ordo_http::FieldError::new(
                    "amount",
                    "must be a decimal string such as \"5.00\"",
                ));
                RefundAmount::Remainder
            }
        },
    };
    if let Some(reason) = &reason {
        if reason.chars().count() > MAX_REASON {
            errors.push(ordo_http::FieldError::new(
                "reason",
                format!("must be at most {MAX_REASON} characters"),
            ));
        } else if reason.chars().any(char::is_control) {
            errors.push(ordo_http::FieldError::new(
                "reason",
                "must not contain control characters",
            ));
        }
    }
    if errors.is_empty() {
        Ok((amount, reason))
    } else {
        Err(ApiError::validation(errors))
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RefundResponse {
    refund: RefundView,
    payment: PaymentView,
}

/// Refund (part of) a captured payment. Admins only. Without an amount,
/// whatever is left; never more than was captured.
#[utoipa::path(post, path = "/v1/payments/{id}/refund", tag = "payments", params(("id" = String, Path)),
    request_body = RefundBody, security(("bearer" = [])),
    responses(
        (status = 201, body = RefundResponse),
        (status = 403, body = ordo_http::Problem, content_type = "application/problem+json"),
        (status = 404, body = ordo_http::Problem, content_type = "application/problem+json"),
        (status = 409, body = ordo_http::Problem, content_type = "application/problem+json"),
        (status = 422, body = ordo_http::Problem, content_type = "application/problem+json"),
        (status = 503, body = ordo_http::Problem, content_type = "application/problem+json"),
    ))]
async fn refund_payment(
    State(state): State<PaymentsState>,
    principal: Principal,
    RequestId(request_id): RequestId,
    Path(id): Path<String>,
    Json(body): Json<RefundBody>,
) -> Result<(StatusCode, axum::Json<RefundResponse>), ApiError> {
    principal.require(&[ordo_http::Role::Admin])?;
    let id = PaymentId::parse(&id).map_err(|_| ApiError::not_found("no such payment"))?;
    let (amount, reason) = body.validate()?;
    let context = EventContext::from_request(request_id);
    let (payment, refund) = state
        .service
        .refund(&principal, id, amount, reason, &context)
        .await?;
    let refunds = state.service.store().refunds(payment.id).await?;
    let currency = payment.currency;
    Ok((
        StatusCode::CREATED,
        axum::Json(RefundResponse {
            refund: RefundView::new(refund, currency),
            payment: PaymentView::new(payment, refunds),
        }),
    ))
}
