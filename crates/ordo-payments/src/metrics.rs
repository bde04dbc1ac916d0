//! Prometheus metrics of the gateway client: the breaker's state and what
//! the client did.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use crate::gateway::HttpGateway;

#[derive(Debug)]
struct GatewayCollector {
    gateway: Arc<HttpGateway>,
}

impl Collector for GatewayCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let state = ConstGauge::new(self.gateway.breaker_state().as_gauge());
        let metric = encoder.encode_descriptor(
            "ordo_payments_gateway_breaker_state",
            "the payment gateway circuit breaker: 0 closed, 1 half-open, 2 open",
            None,
            state.metric_type(),
        )?;
        state.encode(metric)?;
        let stats = self.gateway.stats();
        let counters = [
            (
                "ordo_payments_gateway_calls",
                "payment gateway calls (each may take several requests)",
                &stats.calls,
            ),
            (
                "ordo_payments_gateway_requests",
                "HTTP requests sent to the payment gateway",
                &stats.requests,
            ),
            (
                "ordo_payments_gateway_retries",
                "payment gateway requests repeated after a transient failure",
                &stats.retries,
            ),
            (
                "ordo_payments_gateway_failures",
                "payment gateway requests that failed transiently",
                &stats.failures,
            ),
            (
                "ordo_payments_gateway_declines",
                "payment gateway calls answered with a decline",
                &stats.declines,
            ),
            (
                "ordo_payments_gateway_short_circuited",
                "payment gateway calls refused by the open circuit breaker",
                &stats.short_circuited,
            ),
            (
                "ordo_payments_gateway_breaker_opened",
                "times the payment gateway circuit breaker opened",
                &stats.breaker_opened,
            ),
        ];
        for (name, help, value) in counters {
            let counter = ConstCounter::new(value.load(Ordering::Relaxed));
            let metric = encoder.encode_descriptor(name, help, None, counter.metric_type())?;
            counter.encode(metric)?;
        }
        Ok(())
    }
}

/// Registers the gateway client's metrics, read at each scrape.
pub fn register(registry: &mut Registry, gateway: Arc<HttpGateway>) {
    registry.register_collector(Box::new(GatewayCollector { gateway }));
}
