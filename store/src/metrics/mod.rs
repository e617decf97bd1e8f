//! Prometheus metrics (`serve --metrics-listen ADDR`, text format on `/metrics`).
//!
//! Two kinds of series, one registry: what happens to requests is recorded as it happens by a
//! tower layer in front of every gRPC service ([`RpcMetricsLayer`]: requests by RPC and status
//! code, a duration histogram with explicit buckets, requests in flight); what the engine holds
//! and has counted (per table and tier: hits and misses, residency against budgets, disk reads,
//! checksum failures; regions, table versions, RSS) is read from its stats at scrape time
//! ([`StoreMetrics::render`]). Counters read from the engine are folded into monotonic counters,
//! so a `Stats(reset)` call or a new table version does not make them go backwards.
//!
//! The library never installs a global recorder: the caller builds a [`PrometheusRecorder`]
//! (from [`StoreMetrics::prometheus_builder`], which sets the histogram buckets) and hands it
//! over. The names are in [`names`].

mod fold;
mod http;
pub mod names;
mod rpc_label;
mod rpc_layer;
mod scrape;

use std::sync::Arc;
use std::time::Duration;

use metrics::{Key, Label, Level, Metadata, Recorder};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};

pub use self::http::{MetricsServer, spawn_metrics_server};
pub use self::rpc_layer::{MeteredBody, MeteredFuture, RpcMetricsLayer, RpcMetricsService};

use self::fold::CounterFold;
use self::rpc_label::RpcLabels;

/// What goes wrong setting metrics up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MetricsError {
    /// The exporter refused a histogram's buckets.
    #[error("histogram buckets of {metric}: {message}")]
    Buckets {
        /// The histogram.
        metric: &'static str,
        /// The exporter's words.
        message: String,
    },
    /// The `/metrics` address could not be bound.
    #[error("listen for /metrics on {addr}: {source}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

static METADATA: Metadata<'static> = Metadata::new(module_path!(), Level::INFO, None);

/// The server's metrics, recorded into a Prometheus recorder of the caller's.
#[derive(Debug)]
pub struct StoreMetrics {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    rpcs: RpcLabels,
    folds: CounterFold,
}

impl StoreMetrics {
    /// A Prometheus builder with the buckets of this library's histograms set; add settings of
    /// your own, then `build_recorder()` and pass the recorder to [`StoreMetrics::new`].
    pub fn prometheus_builder() -> Result<PrometheusBuilder, MetricsError> {
        PrometheusBuilder::new()
            .set_buckets_for_metric(
                Matcher::Full(names::REQUEST_DURATION.to_string()),
                names::REQUEST_DURATION_BUCKETS,
            )
            .map_err(|e| MetricsError::Buckets {
                metric: names::REQUEST_DURATION,
                message: e.to_string(),
            })
    }

    /// Metrics recorded into `recorder`.
    pub fn new(recorder: PrometheusRecorder) -> Self {
        for (name, help) in names::HELP {
            let name = metrics::KeyName::from_const_str(name);
            let help = metrics::SharedString::const_str(help);
            // The exporter keeps help text by name, whatever the kind.
            recorder.describe_counter(name, None, help);
        }
        Self {
            handle: recorder.handle(),
            recorder,
            rpcs: RpcLabels::new(),
            folds: CounterFold::default(),
        }
    }

    /// Metrics with a recorder of their own, built from [`StoreMetrics::prometheus_builder`].
    pub fn with_own_recorder() -> Result<Self, MetricsError> {
        Ok(Self::new(Self::prometheus_builder()?.build_recorder()))
    }

    /// The tower layer that counts every gRPC request into these metrics.
    pub fn layer(self: &Arc<Self>) -> RpcMetricsLayer {
        RpcMetricsLayer::new(Some(self.clone()))
    }

    /// Drains recorded histogram samples into their buckets; run every few seconds so that
    /// memory stays bounded between scrapes ([`spawn_metrics_server`] does).
    pub fn run_upkeep(&self) {
        self.handle.run_upkeep();
    }

    fn counter(&self, name: &'static str, labels: Vec<Label>) -> metrics::Counter {
        self.recorder
            .register_counter(&Key::from_parts(name, labels), &METADATA)
    }

    fn gauge(&self, name: &'static str, labels: Vec<Label>) -> metrics::Gauge {
        self.recorder
            .register_gauge(&Key::from_parts(name, labels), &METADATA)
    }

    fn histogram(&self, name: &'static str, labels: Vec<Label>) -> metrics::Histogram {
        self.recorder
            .register_histogram(&Key::from_parts(name, labels), &METADATA)
    }

    /// A request to `path` begins: counted in flight until the returned call is finished or
    /// dropped.
    pub(crate) fn start_rpc(self: &Arc<Self>, path: &str) -> rpc_layer::RpcCall {
        let rpc = self.rpcs.of(path);
        self.gauge(
            names::REQUESTS_IN_FLIGHT,
            vec![Label::new("rpc", rpc.clone())],
        )
        .increment(1.0);
        rpc_layer::RpcCall::new(self.clone(), rpc)
    }

    /// A request to `rpc` ended with `code` after `took`.
    pub(crate) fn finish_rpc(&self, rpc: &Arc<str>, code: &'static str, took: Duration) {
        self.gauge(
            names::REQUESTS_IN_FLIGHT,
            vec![Label::new("rpc", rpc.clone())],
        )
        .decrement(1.0);
        self.counter(
            names::REQUESTS,
            vec![
                Label::new("rpc", rpc.clone()),
                Label::from_static_parts("code", code),
            ],
        )
        .increment(1);
        self.histogram(
            names::REQUEST_DURATION,
            vec![Label::new("rpc", rpc.clone())],
        )
        .record(took.as_secs_f64());
    }
}
