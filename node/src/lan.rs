//! The LAN and broker discovery backends (mDNS, MQTT), wired from the node's configuration.
//!
//! Both need facts that exist only once the transport runs (the bound port), so each is
//! built inside its backend actor when that actor starts: a configuration the backend
//! refuses is that backend's start failure (counted and restarted by its supervisor),
//! never the node's.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::Arc;

use netrun_actors::discovery::mdns::{MdnsBackend, MdnsConfig};
use netrun_actors::discovery::mqtt::{MqttBackend, MqttConfig};
use netrun_actors::discovery::{BackendStatus, DiscoveryBackend, DiscoveryError, DiscoveryEvent};
use netrun_actors::wire::Wire;
use netrun_messages::{Identity, MeshFingerprint};

use crate::config::DiscoveryConfig;

/// Builds a backend when its actor starts.
type Build<B> = Arc<dyn Fn() -> Result<B, DiscoveryError> + Send + Sync>;

/// A backend built by its actor's `start`, so it can read the running transport.
pub(crate) struct Deferred<B> {
    name: &'static str,
    build: Build<B>,
    inner: Option<B>,
}

impl<B: DiscoveryBackend> Deferred<B> {
    /// A fresh, unbuilt backend for every incarnation of its actor.
    pub(crate) fn factory(
        name: &'static str,
        build: Build<B>,
    ) -> impl Fn() -> Self + Send + Sync + 'static {
        move || Self::new(name, Arc::clone(&build))
    }

    fn new(name: &'static str, build: Build<B>) -> Self {
        Self {
            name,
            build,
            inner: None,
        }
    }
}

impl<B: DiscoveryBackend> DiscoveryBackend for Deferred<B> {
    fn name(&self) -> &'static str {
        self.name
    }

    async fn start(&mut self) -> Result<(), DiscoveryError> {
        if self.inner.is_none() {
            self.inner = Some((self.build)()?);
        }
        match self.inner.as_mut() {
            Some(inner) => inner.start().await,
            None => Ok(()),
        }
    }

    async fn next_event(&mut self) -> Option<DiscoveryEvent> {
        match self.inner.as_mut() {
            Some(inner) => inner.next_event().await,
            None => None,
        }
    }

    async fn stop(&mut self) {
        if let Some(inner) = self.inner.as_mut() {
            inner.stop().await;
        }
    }

    fn status(&self) -> BackendStatus {
        match &self.inner {
            Some(inner) => inner.status(),
            None => BackendStatus {
                name: self.name.to_owned(),
                running: false,
                found: 0,
                errors: 0,
                detail: "not started".to_owned(),
            },
        }
    }
}

/// The mDNS backend for this node, if the configuration enables it.
pub(crate) fn mdns(
    config: &DiscoveryConfig,
    identity: &Identity,
    psk: &[u8; 32],
    wire: &Arc<Wire>,
) -> Option<impl Fn() -> Deferred<MdnsBackend> + Send + Sync + 'static> {
    if !config.mdns.enabled {
        return None;
    }
    let mut service = config.mdns.service.clone();
    if !service.ends_with('.') {
        service.push('.');
    }
    let (entity, mesh, wire) = (
        identity.entity_id(),
        MeshFingerprint::from_psk(psk),
        Arc::clone(wire),
    );
    let advertise = config.advertise.clone();
    let build: Build<MdnsBackend> = Arc::new(move || {
        let port = bound_port(&wire)?;
        let mut mdns = MdnsConfig::new(entity, port, mesh);
        mdns.service_type.clone_from(&service);
        mdns.addrs = advertise.iter().map(SocketAddr::ip).collect();
        MdnsBackend::new(mdns)
    });
    Some(Deferred::factory("mdns", build))
}

/// The MQTT backend for this node, if the configuration enables it.
pub(crate) fn mqtt(
    config: &DiscoveryConfig,
    identity: &Identity,
    psk: &[u8; 32],
    wire: &Arc<Wire>,
) -> Option<impl Fn() -> Deferred<MqttBackend> + Send + Sync + 'static> {
    if !config.mqtt.enabled {
        return None;
    }
    let (broker, identity, mesh, wire) = (
        config.mqtt.broker.clone(),
        identity.clone(),
        MeshFingerprint::from_psk(psk),
        Arc::clone(wire),
    );
    let advertise = config.advertise.clone();
    let build: Build<MqttBackend> = Arc::new(move || {
        let mut mqtt = MqttConfig::new(broker.clone(), mesh, identity.clone());
        mqtt.addrs = if advertise.is_empty() {
            vec![reachable_addr(&wire)?]
        } else {
            advertise.clone()
        };
        MqttBackend::new(mqtt)
    });
    Some(Deferred::factory("mqtt", build))
}

fn bound_port(wire: &Wire) -> Result<u16, DiscoveryError> {
    wire.local_addr()
        .map(|a| a.port())
        .ok_or_else(|| DiscoveryError::Config {
            backend: "discovery",
            reason: "the transport is not bound".to_owned(),
        })
}

/// The address peers should use when the node announces itself without an `advertise`
/// list: the bound address, or — for a wildcard bind — the local address the kernel would
/// use for an outbound route (found by connecting a UDP socket, which sends nothing), and
/// loopback on a host with no route.
fn reachable_addr(wire: &Wire) -> Result<SocketAddr, DiscoveryError> {
    let bound = wire.local_addr().ok_or_else(|| DiscoveryError::Config {
        backend: "discovery",
        reason: "the transport is not bound".to_owned(),
    })?;
    if !bound.ip().is_unspecified() {
        return Ok(bound);
    }
    // 192.0.2.1 is TEST-NET-1: only the routing decision is used, no packet leaves.
    let routed = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))
        .and_then(|s| s.connect((Ipv4Addr::new(192, 0, 2, 1), 9)).map(|()| s))
        .and_then(|s| s.local_addr())
        .map(|a| a.ip())
        .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
    Ok(SocketAddr::new(routed, bound.port()))
}
