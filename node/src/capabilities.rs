//! Capabilities on the [`Node`]: the local set it announces, queries over the capability
//! index (answered locally from posting lists, no network round trip), and the filter
//! syntax the CLI and the control socket accept.

use netrun_actors::capability::{CapabilityHandle, CapabilityStatus};
use netrun_actors::wire::SendError;
use netrun_messages::envelope::Subprotocol;
use netrun_messages::{CapabilityFilter, CapabilitySet, GpuVendor, NodeId};
use netrun_runtime::capability::{AnnouncerError, IndexEntry};
use thiserror::Error;

use crate::node::Node;

impl Node {
    /// The capability set this node announces.
    pub fn capabilities(&self) -> CapabilitySet {
        self.capability_state().capabilities()
    }

    /// Replaces the capability set this node announces; the `nrpc:<service>` tags of the
    /// services it serves and the runtime's metadata (such as `netrun.daemon.load`) are
    /// kept. A change is announced to every session peer once the minimum interval since
    /// the previous announcement has passed (a burst of changes becomes one announcement).
    /// Returns whether the set changed.
    pub fn set_capabilities(&self, capabilities: CapabilitySet) -> Result<bool, AnnouncerError> {
        self.capability_state().set_capabilities(capabilities)
    }

    /// The nodes whose announced capabilities meet `filter`, ascending by id (this node
    /// included once it has announced). Answered from the local index.
    pub fn find_nodes(&self, filter: &CapabilityFilter) -> Vec<NodeId> {
        self.capability_state().find(filter)
    }

    /// The nodes that announce nRPC service `service` (tag `nrpc:<service>`), ascending.
    pub fn find_service_nodes(&self, service: &str) -> Vec<NodeId> {
        self.capability_state().find_service(service)
    }

    /// The capabilities `node` announced, if the index holds a live announcement of it.
    pub fn capability_of(&self, node: NodeId) -> Option<CapabilitySet> {
        self.capability_state().capabilities_of(node)
    }

    /// `node`'s index entry: its verified announcement, when it arrived, when it expires and
    /// the peer that forwarded it.
    pub fn capability_entry(&self, node: NodeId) -> Option<IndexEntry> {
        self.capability_state().get(node)
    }

    /// The capability fold's counters (index size, accepted, rejected by reason, sent).
    pub fn capability_status(&self) -> CapabilityStatus {
        self.capability_state().status()
    }

    /// The capability fold's handle, for subsystems that change the local set (a service
    /// host adds `nrpc:<service>` with [`CapabilityHandle::add_service`]).
    pub fn capability_handle(&self) -> CapabilityHandle {
        self.capability_state().clone()
    }

    /// Test hook: sends `body` to session peer `peer` as a raw control envelope of
    /// `subprotocol`, bypassing every subsystem (to check what peers do with bad input).
    #[doc(hidden)]
    pub async fn send_raw_envelope(
        &self,
        peer: NodeId,
        subprotocol: Subprotocol,
        body: &[u8],
    ) -> Result<(), SendError> {
        self.wire()
            .send_envelope(peer, subprotocol, None, body)
            .await
    }
}

/// A capability filter written as text could not be read.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FilterParseError {
    /// A `key=value` term has a key that is not known.
    #[error(
        "unknown filter term {0:?} (expected gpu, tag=T, vendor=V, memory=GB, vram=GB, cores=N or a bare tag)"
    )]
    UnknownTerm(String),
    /// A value is not valid for its key.
    #[error("invalid value in {0:?}")]
    BadValue(String),
}

/// Parses the filter syntax of `netrun caps --filter`: comma-separated terms, each one of
///
/// | term | requirement |
/// |---|---|
/// | `gpu` | a GPU |
/// | `tag=T` or a bare `T` (no `=`) | the tag `T` (a tag with `=` needs the `tag=` form) |
/// | `vendor=nvidia\|amd\|intel\|apple\|other` | a GPU of that vendor |
/// | `memory=GB`, `vram=GB`, `cores=N` | at least that much |
///
/// An empty string is the filter that matches every node.
pub fn parse_filter(text: &str) -> Result<CapabilityFilter, FilterParseError> {
    let mut filter = CapabilityFilter::new();
    for term in text.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        let Some((key, value)) = term.split_once('=') else {
            filter = if term.eq_ignore_ascii_case("gpu") {
                filter.require_gpu()
            } else {
                filter.require_tag(term)
            };
            continue;
        };
        let number = || {
            value
                .trim()
                .parse::<u32>()
                .map_err(|_| FilterParseError::BadValue(term.to_string()))
        };
        filter = match key.trim() {
            "tag" if !value.is_empty() => filter.require_tag(value),
            "vendor" => filter.gpu_vendor(
                parse_vendor(value).ok_or_else(|| FilterParseError::BadValue(term.to_string()))?,
            ),
            "memory" | "min_memory_gb" => filter.min_memory_gb(number()?),
            "vram" | "min_vram_gb" => filter.min_vram_gb(number()?),
            "cores" | "min_cpu_cores" => filter.min_cpu_cores(number()?),
            "tag" => return Err(FilterParseError::BadValue(term.to_string())),
            _ => return Err(FilterParseError::UnknownTerm(term.to_string())),
        };
    }
    Ok(filter)
}

/// A GPU vendor by name (case-insensitive).
pub fn parse_vendor(text: &str) -> Option<GpuVendor> {
    match text.trim().to_ascii_lowercase().as_str() {
        "nvidia" => Some(GpuVendor::Nvidia),
        "amd" => Some(GpuVendor::Amd),
        "intel" => Some(GpuVendor::Intel),
        "apple" => Some(GpuVendor::Apple),
        "other" => Some(GpuVendor::Other),
        _ => None,
    }
}

/// The lowercase name of a GPU vendor.
pub fn vendor_name(vendor: GpuVendor) -> &'static str {
    match vendor {
        GpuVendor::Nvidia => "nvidia",
        GpuVendor::Amd => "amd",
        GpuVendor::Intel => "intel",
        GpuVendor::Apple => "apple",
        GpuVendor::Other => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_terms() {
        let f = parse_filter(
            "gpu, tag=software.os=linux,role:worker,vendor=NVIDIA,memory=64,vram=24,cores=8",
        )
        .expect("parses");
        assert!(f.require_gpu);
        assert!(f.require_tags.contains("software.os=linux"));
        assert!(f.require_tags.contains("role:worker"));
        assert_eq!(f.gpu_vendor, Some(GpuVendor::Nvidia));
        assert_eq!(
            (f.min_memory_gb, f.min_vram_gb, f.min_cpu_cores),
            (64, 24, 8)
        );
        assert_eq!(parse_filter("").expect("empty"), CapabilityFilter::new());
        assert!(matches!(
            parse_filter("speed=9"),
            Err(FilterParseError::UnknownTerm(_))
        ));
        assert!(matches!(
            parse_filter("memory=lots"),
            Err(FilterParseError::BadValue(_))
        ));
        assert!(matches!(
            parse_filter("vendor=acme"),
            Err(FilterParseError::BadValue(_))
        ));
        assert!(matches!(
            parse_filter("tag="),
            Err(FilterParseError::BadValue(_))
        ));
    }
}
