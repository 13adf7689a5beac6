//! Prometheus metrics of the front door: requests and latencies per service and operation.
//! Other parts register their own metrics into the same [`Registry`] (the store commit
//! latency comes from the control plane).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub service: String,
    pub operation: String,
    pub code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpLabels {
    pub service: String,
    pub operation: String,
}

fn latency_histogram() -> Histogram {
    // 25 µs … ~1.6 s
    Histogram::new(exponential_buckets(0.000_025, 2.0, 17))
}

/// Who may read `/metrics` (`--metrics`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MetricsAccess {
    /// Loopback freely; any other address needs credentials allowed `berth:GetMetrics`
    /// (SigV4, or the registry's `AWS:<token>` Basic / Bearer, as Prometheus can send).
    #[default]
    Auth,
    /// Anyone who reaches the port.
    Open,
    /// Not served.
    Off,
}

impl std::str::FromStr for MetricsAccess {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auth" => Ok(MetricsAccess::Auth),
            "open" => Ok(MetricsAccess::Open),
            "off" => Ok(MetricsAccess::Off),
            other => Err(format!("metrics {other:?}: auth, open or off")),
        }
    }
}

pub struct Metrics {
    pub registry: Registry,
    pub access: MetricsAccess,
    pub requests: Family<RequestLabels, Counter>,
    pub latency: Family<OpLabels, Histogram, fn() -> Histogram>,
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("berth");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<OpLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram,
        );
        registry.register(
            "api_requests",
            "API requests by service, operation and result code",
            requests.clone(),
        );
        registry.register(
            "api_request_duration_seconds",
            "API request latency by service and operation",
            latency.clone(),
        );
        Metrics {
            registry,
            access: MetricsAccess::default(),
            requests,
            latency,
        }
    }

    pub fn with_access(mut self, access: MetricsAccess) -> Self {
        self.access = access;
        self
    }

    /// Count one answered request and its latency.
    pub fn record(&self, service: &str, operation: &str, code: &str, elapsed: std::time::Duration) {
        self.requests
            .get_or_create(&RequestLabels {
                service: service.to_string(),
                operation: operation.to_string(),
                code: code.to_string(),
            })
            .inc();
        self.latency
            .get_or_create(&OpLabels {
                service: service.to_string(),
                operation: operation.to_string(),
            })
            .observe(elapsed.as_secs_f64());
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
