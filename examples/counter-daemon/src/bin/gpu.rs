//! A daemon that needs a GPU: spawned from a node without one, it lands on the node that
//! has one. Both nodes run in this process and register the kind; the placing node reads
//! the daemon's requirements from its own factory and spawns it on the GPU node through
//! the mesh.

use netrun::daemons::{CausalEvent, DaemonConfig, DaemonError, MeshDaemon};
use netrun::{Bytes, CapabilityFilter, CapabilitySet, GpuInfo, GpuVendor, Hardware};
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

    let placed = laptop
        .spawn_daemon_placed("renderer", Identity::generate(), DaemonConfig::empty())
        .await?;
    assert_eq!(placed.node, workstation.node_id());
    println!("renderer {} runs on {}", placed.origin_hash, placed.node);

    // The daemon's handle lives on the node that hosts it.
    let renderer = workstation
        .daemon(placed.origin_hash)
        .ok_or("the workstation hosts it")?;
    let mut outputs = renderer.outputs();
    renderer.deliver("scene-1").await?;
    let output = outputs.recv().await?;
    for event in output.events() {
        println!("{}", String::from_utf8_lossy(&event.payload));
    }
    laptop.shutdown().await;
    workstation.shutdown().await;
    Ok(())
}
