//! Logging and OpenTelemetry trace export. Only the node installs a subscriber; libraries
//! only emit `tracing` events and spans.
//!
//! Data flow when an OTLP endpoint is configured:
//!
//! ```text
//! tracing spans/events ─► registry ─┬─► env filter ─► fmt layer ─► stderr
//!                                   └─► env filter ─► OpenTelemetry layer ─► SdkTracerProvider
//!        BatchSpanProcessor (own thread) ─► OTLP exporter ─► collector
//!                                  (gRPC: tonic channel on a one-thread runtime of its own;
//!                                   HTTP/protobuf: blocking reqwest client)
//! ```
//!
//! The exporter does not share the node's tokio runtime on purpose: spans end when the
//! last handle to them drops, and actor tasks and mailboxes hold such handles until the
//! node's runtime is dropped. The node's runtime therefore goes first, which closes every
//! span, and [`shutdown`] flushes afterwards over a runtime that is still alive.
//!
//! Without an endpoint only the fmt layer exists: no provider, no processor thread, and
//! the OpenTelemetry context of any span is empty, so
//! [`Node::send`](crate::Node::send) sends none.
//!
//! Trace context crosses nodes inside the sealed datagram: `outbound_context` turns the
//! OpenTelemetry context of a `tracing` span into the 25-byte [`TraceContext`] the data
//! path carries, and `receive_span` opens the receiver's span with that remote context as
//! its parent.

use std::sync::Mutex;
use std::time::Duration;

use netrun_actors::transport::Received;
use netrun_messages::{NodeId, TraceContext};
use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::{Span, info_span, warn};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::{OtlpProtocol, TelemetryConfig};

/// The `service.name` resource attribute of every exported span.
pub const SERVICE_NAME: &str = "netrun";

/// How long [`shutdown`] waits for the last batch to reach the collector. A stopping node
/// should not hang on an unreachable collector; five seconds covers a slow loopback or LAN
/// collector and is well under the usual SIGTERM-to-SIGKILL grace period (10–30 s).
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// Per-export deadline. The OTLP default (10 s) would let one dead collector stall the
/// processor thread for longer than a whole shutdown is allowed to take.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(3);

/// Targets whose spans never go to the exporter (they still reach the log).
///
/// - The exporter's own machinery: exporting its spans would make every export produce
///   more spans to export.
/// - `ractor`: it wraps each actor's whole lifetime in one `Actor` span. Exported, that span
///   would parent every per-message span of the actor, making one trace per actor that
///   stays incomplete until the actor stops; without it each handled message is its own
///   trace (or joins the trace it arrived with).
const UNEXPORTED_TARGETS: &[&str] = &[
    "opentelemetry",
    "tonic",
    "tower",
    "h2",
    "hyper",
    "reqwest",
    "ractor",
];

/// The installed export pipeline, kept so that [`shutdown`] can flush it.
static EXPORT: Mutex<Option<Export>> = Mutex::new(None);

/// What exists only while spans are exported.
struct Export {
    provider: SdkTracerProvider,
    /// Carries the gRPC channel's I/O; `None` for HTTP.
    runtime: Option<tokio::runtime::Runtime>,
}

/// Installs the global subscriber: human-readable logs on stderr, filtered by
/// `config.log`, `RUST_LOG`, or `info`; and, when `config.otlp_endpoint` is set, an
/// OpenTelemetry layer exporting spans over OTLP with the resource
/// `service.name=netrun`, `service.instance.id=<node>`.
///
/// An exporter that cannot be built is logged and left out; the node runs on. Only the
/// first call in a process installs anything.
pub fn init(config: &TelemetryConfig, node: NodeId) {
    // Colours only on a terminal: logs piped to files or journald stay plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let fmt = tracing_subscriber::fmt::layer()
        .with_ansi(ansi)
        .with_writer(std::io::stderr)
        .with_target(true)
        .with_filter(env_filter(config));
    let (otel, export_error) = match &config.otlp_endpoint {
        None => (None, None),
        Some(endpoint) => match export(endpoint, config.otlp_protocol, node) {
            Ok(export) => {
                let layer = tracing_opentelemetry::layer()
                    .with_tracer(export.provider.tracer(SERVICE_NAME))
                    .with_filter(env_filter(config))
                    .with_filter(filter_fn(|meta| {
                        !UNEXPORTED_TARGETS
                            .iter()
                            .any(|t| is_under(meta.target(), t))
                    }));
                if let Ok(mut slot) = EXPORT.lock() {
                    *slot = Some(export);
                }
                (Some(layer), None)
            }
            Err(e) => (None, Some(e)),
        },
    };
    if tracing_subscriber::registry()
        .with(fmt)
        .with(otel)
        .try_init()
        .is_err()
    {
        return;
    }
    if let Some(error) = export_error {
        warn!(%error, "OpenTelemetry export disabled");
    }
}

/// Flushes buffered spans and shuts the exporter down (bounded by a few seconds; blocks).
///
/// Call it last, after the node's tokio runtime has been dropped: only spans that have
/// ended are exported, and tasks still alive on that runtime keep theirs open.
pub fn shutdown() {
    let export = EXPORT.lock().ok().and_then(|mut slot| slot.take());
    let Some(export) = export else { return };
    if let Err(error) = export.provider.shutdown_with_timeout(SHUTDOWN_TIMEOUT) {
        eprintln!("netrun: flushing OpenTelemetry spans failed: {error}");
    }
    if let Some(runtime) = export.runtime {
        // Not `drop`: that panics when the caller is itself inside a runtime.
        runtime.shutdown_background();
    }
}

/// The trace context to send with a datagram sent inside `span`, if `span` belongs to a
/// valid OpenTelemetry trace (that is, an exporter is installed and the span is enabled).
pub(crate) fn outbound_context(span: &Span) -> Option<TraceContext> {
    let context = span.context();
    let otel = context.span();
    let sc = otel.span_context();
    sc.is_valid().then(|| TraceContext {
        trace_id: sc.trace_id().to_bytes(),
        span_id: sc.span_id().to_bytes(),
        flags: sc.trace_flags().to_u8(),
    })
}

/// The `netrun.datagram.receive` span for a datagram, a child of the sender's span when
/// the datagram carried a trace context; a disabled span when it carried none, so that
/// untraced traffic costs nothing.
pub(crate) fn receive_span(node: NodeId, received: &Received) -> Span {
    let Some(trace) = received.trace.as_ref() else {
        return Span::none();
    };
    let span = info_span!(
        "netrun.datagram.receive",
        otel.kind = "consumer",
        node = %node,
        peer = %received.peer,
        size = size_field(received.payload.len()),
    );
    set_remote_parent(&span, trace);
    span
}

/// The `netrun.rpc.serve` span a request's handler runs in: a child of the caller's
/// `netrun.rpc.call` span when the request carried a trace context.
pub(crate) fn serve_span(node: NodeId, request: &netrun_actors::rpc::RequestContext) -> Span {
    let span = info_span!(
        "netrun.rpc.serve",
        otel.kind = "server",
        node = %node,
        rpc.service = %request.service(),
        rpc.caller = %request.caller(),
        rpc.status = tracing::field::Empty,
    );
    if let Some(trace) = request.trace() {
        set_remote_parent(&span, trace);
    }
    span
}

/// Makes `trace` (a context received from another node) the OpenTelemetry parent of
/// `span`. Fails silently when no OpenTelemetry layer is installed or the span is
/// filtered out: the span is then a plain local span, which is all the caller can get.
fn set_remote_parent(span: &Span, trace: &TraceContext) {
    let remote = SpanContext::new(
        TraceId::from_bytes(trace.trace_id),
        SpanId::from_bytes(trace.span_id),
        TraceFlags::new(trace.flags),
        true,
        TraceState::default(),
    );
    if remote.is_valid() {
        let _ = span.set_parent(Context::new().with_remote_span_context(remote));
    }
}

/// A byte count as a span field. `tracing-opentelemetry` exports `i64` fields as integers
/// but `u64`/`usize` ones as text; datagrams are far below `i64::MAX`.
pub(crate) fn size_field(len: usize) -> i64 {
    i64::try_from(len).unwrap_or(i64::MAX)
}

fn env_filter(config: &TelemetryConfig) -> EnvFilter {
    config
        .log
        .as_deref()
        .and_then(|d| EnvFilter::try_new(d).ok())
        .or_else(|| EnvFilter::try_from_default_env().ok())
        .unwrap_or_else(|| EnvFilter::new("info"))
}

/// Builds the tracer provider with its OTLP exporter and batch processor.
fn export(endpoint: &str, protocol: OtlpProtocol, node: NodeId) -> Result<Export, ExportError> {
    let (exporter, runtime) = match protocol {
        OtlpProtocol::Grpc => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("netrun-otlp")
                .enable_all()
                .build()
                .map_err(ExportError::Runtime)?;
            let exporter = {
                let _runtime = runtime.enter();
                opentelemetry_otlp::SpanExporter::builder()
                    .with_tonic()
                    .with_endpoint(endpoint)
                    .with_timeout(EXPORT_TIMEOUT)
                    .build()?
            };
            (exporter, Some(runtime))
        }
        OtlpProtocol::Http => {
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                .with_endpoint(http_traces_url(endpoint))
                .with_timeout(EXPORT_TIMEOUT)
                .build()?;
            (exporter, None)
        }
    };
    let resource = Resource::builder()
        .with_service_name(SERVICE_NAME)
        .with_attribute(KeyValue::new("service.instance.id", node.to_string()))
        .build();
    let provider = SdkTracerProvider::builder()
        .with_resource(resource)
        .with_batch_exporter(exporter)
        .build();
    Ok(Export { provider, runtime })
}

/// Why span export could not be set up.
#[derive(Debug, thiserror::Error)]
enum ExportError {
    /// The runtime for the gRPC channel did not start.
    #[error("cannot start the OTLP runtime: {0}")]
    Runtime(#[source] std::io::Error),
    /// The OTLP exporter rejected its configuration.
    #[error(transparent)]
    Exporter(#[from] opentelemetry_otlp::ExporterBuildError),
}

/// `endpoint` is a base URL, as `OTEL_EXPORTER_OTLP_ENDPOINT` is; the HTTP exporter wants
/// the traces URL, so `/v1/traces` is appended unless it is already there.
fn http_traces_url(endpoint: &str) -> String {
    let base = endpoint.trim_end_matches('/');
    if base.ends_with("/v1/traces") {
        base.to_owned()
    } else {
        format!("{base}/v1/traces")
    }
}

/// Whether `target` is `root` or a module under it.
fn is_under(target: &str, root: &str) -> bool {
    target
        .strip_prefix(root)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with("::") || rest.starts_with('_'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_url_appends_the_traces_path_once() {
        assert_eq!(
            http_traces_url("http://127.0.0.1:4318"),
            "http://127.0.0.1:4318/v1/traces"
        );
        assert_eq!(
            http_traces_url("http://collector/otlp/"),
            "http://collector/otlp/v1/traces"
        );
        assert_eq!(
            http_traces_url("http://127.0.0.1:4318/v1/traces"),
            "http://127.0.0.1:4318/v1/traces"
        );
    }

    #[test]
    fn exporter_targets_match_whole_crate_names() {
        assert!(is_under("h2::proto", "h2"));
        assert!(is_under("opentelemetry_sdk", "opentelemetry"));
        assert!(is_under("tonic", "tonic"));
        assert!(!is_under("h2o", "h2"));
        assert!(!is_under("netrun_actors::session", "tonic"));
    }

    #[test]
    fn untraced_datagrams_get_no_span() {
        let received = Received {
            peer: NodeId(1),
            stream: 0,
            flags: netrun_messages::PacketFlags::NONE,
            payload: bytes::Bytes::from_static(b"x"),
            trace: None,
        };
        assert!(receive_span(NodeId(2), &received).is_none());
    }
}
