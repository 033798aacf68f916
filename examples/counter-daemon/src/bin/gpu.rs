//! A daemon that needs a GPU: spawned from a node without one, it lands on the node that
//! has one, and serves the nRPC service `render` there. Both nodes run in this process and
//! register the kind; the placing node reads the daemon's requirements from its own
//! factory, spawns it on the GPU node through the mesh, calls it, and stops it.

use netrun::daemons::{
    CausalEvent, DaemonConfig, DaemonError, DaemonReply, DaemonWiring, MeshDaemon, ServedService,
};
use netrun::rpc::{CallOptions, ServiceName};
use netrun::{Bytes, CapabilityFilter, CapabilitySet, DaemonOptions, GpuInfo, GpuVendor, Hardware};
use netrun::{Identity, Node, factory};

/// Pretends to render one frame per event.
struct Renderer {
    frames: u64,
}

impl MeshDaemon for Renderer {
    fn name(&self) -> &str {
        "renderer"
    }

    fn requirements(&self) -> CapabilityFilter {
        CapabilityFilter::new().require_gpu().min_vram_gb(16)
    }

    fn process(&mut self, event: &CausalEvent) -> Result<Vec<Bytes>, DaemonError> {
        self.frames += 1;
        let frame = format!("frame {} of {:?}", self.frames, event.payload);
        Ok(vec![Bytes::from(frame)])
    }

    fn snapshot(&self) -> Option<Bytes> {
        Some(Bytes::copy_from_slice(&self.frames.to_le_bytes()))
    }

    fn restore(&mut self, state: Bytes) -> Result<(), DaemonError> {
        let bytes: [u8; 8] = state[..]
            .try_into()
            .map_err(|_| DaemonError::InvalidState("8 bytes".into()))?;
        self.frames = u64::from_le_bytes(bytes);
        Ok(())
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let psk = [7; 32];
    let laptop = Node::builder().psk(psk).start().await?;
    let gpu = GpuInfo::new(GpuVendor::Nvidia, "l4", 24);
    let workstation = Node::builder()
        .psk(psk)
        .capabilities(CapabilitySet::new().with_hardware(Hardware::new(16, 32).with_gpu(gpu)))
        .start()
        .await?;
    for node in [&laptop, &workstation] {
        node.register_daemon_kind(
            "renderer",
            factory(|_| Ok(Box::new(Renderer { frames: 0 }))),
        )?;
    }
    laptop
        .connect(workstation.local_addr(), workstation.public_key())
        .await?;

    // Wherever it lands, the daemon answers `render`: one request, one event, one output.
    let options = DaemonOptions {
        wiring: DaemonWiring {
            services: vec![ServedService {
                name: ServiceName::new("render")?,
                reply: DaemonReply::Last,
            }],
            inputs: Vec::new(),
        },
        ..DaemonOptions::default()
    };
    let placed = laptop
        .spawn_daemon_placed_with(
            "renderer",
            Identity::generate(),
            DaemonConfig::empty(),
            options,
        )
        .await?;
    assert_eq!(placed.node, workstation.node_id());
    println!("renderer {} runs on {}", placed.origin_hash, placed.node);

    for scene in ["scene-1", "scene-2"] {
        let frame = laptop
            .call(placed.node, "render", scene, &CallOptions::default())
            .await?;
        println!("{}", String::from_utf8_lossy(&frame));
    }
    // Only the node that placed it may stop it remotely.
    laptop
        .stop_daemon_on(placed.node, placed.origin_hash)
        .await?;
    assert!(workstation.daemons().await.is_empty());
    laptop.shutdown().await;
    workstation.shutdown().await;
    Ok(())
}
