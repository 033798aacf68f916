//! `netrun start`: run a node in the foreground.

use std::io::Write;
use std::path::{Path, PathBuf};

use netrun::config::{Config, Overrides, ProcessEnv};
use netrun::control::CONTROL_SOCKET;
use netrun::identity_file::IDENTITY_FILE;
use netrun::{Identity, IdentityFile, Node};
use tracing::{info, warn};

use super::{EXIT_FAILURE, EXIT_OK, EXIT_USAGE, fail};

/// How long tasks left after the node stopped get to finish before they are dropped. The
/// node's actors have stopped by then; what remains are timers and detached sends.
const RUNTIME_SHUTDOWN: std::time::Duration = std::time::Duration::from_secs(1);

#[derive(Debug, clap::Args)]
pub(crate) struct StartArgs {
    /// TOML configuration file.
    #[arg(long, env = "NETRUN_CONFIG")]
    config: Option<PathBuf>,
    /// Data directory (identity, control socket).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// UDP bind address, e.g. 127.0.0.1:9470.
    #[arg(long)]
    bind: Option<String>,
    /// A static peer as ADDR=PUBKEY; repeatable.
    #[arg(long = "peer", value_name = "ADDR=PUBKEY")]
    peers: Vec<String>,
    /// A discovery seed as ADDR=PUBKEY; repeatable.
    #[arg(long = "seed", value_name = "ADDR=PUBKEY")]
    seeds: Vec<String>,
}

pub(crate) fn run(args: StartArgs) -> u8 {
    let overrides = Overrides {
        config_file: args.config,
        data_dir: args.data_dir,
        bind: args.bind,
        peers: args.peers,
        seeds: args.seeds,
    };
    let config = match Config::load(&overrides, &ProcessEnv) {
        Ok(c) => c,
        Err(e) => return fail(EXIT_USAGE, e),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(EXIT_FAILURE, format!("cannot start the async runtime: {e}")),
    };
    // Fail before touching anything if a node already serves this data directory.
    if runtime
        .block_on(netrun::control::request(&config.data_dir, "status"))
        .is_ok()
    {
        return fail(
            EXIT_FAILURE,
            format!(
                "a node is already running with data directory {}",
                config.data_dir.display()
            ),
        );
    }
    // The identity loads before telemetry starts: exported spans carry the node id as
    // `service.instance.id`.
    if let Err(e) = create_private_dir(&config.data_dir) {
        return fail(
            EXIT_FAILURE,
            format!("data directory {}: {e}", config.data_dir.display()),
        );
    }
    let identity = match Identity::load_or_create(&config.data_dir.join(IDENTITY_FILE)) {
        Ok(i) => i,
        Err(e) => return fail(EXIT_FAILURE, e),
    };
    netrun::telemetry::init(&config.telemetry, identity.node_id());
    let code = runtime.block_on(run_node(config, identity));
    // Dropping the runtime drops every task still holding a span, which ends those spans;
    // only then does the exporter flush.
    runtime.shutdown_timeout(RUNTIME_SHUTDOWN);
    netrun::telemetry::shutdown();
    code
}

async fn run_node(config: Config, identity: Identity) -> u8 {
    let psk = match config.psk {
        Some(psk) => psk,
        None => {
            warn!("no mesh PSK configured: using the PUBLIC development PSK");
            eprintln!(
                "netrun: WARNING: no mesh PSK configured (set NETRUN_PSK or `psk` in the config);\n\
                 netrun: WARNING: using the public development PSK — anyone can join this mesh"
            );
            netrun::DEVELOPMENT_PSK
        }
    };
    let mut builder = Node::builder()
        .identity(identity)
        .bind(config.bind)
        .bind_fallback(config.bind_is_default)
        .psk(psk)
        .session_timing(config.session)
        .pingwave(config.pingwave)
        .discovery(config.discovery.clone())
        .capabilities(config.capabilities.set.clone())
        .remote_spawns(config.remote_spawns.clone())
        .capability_config(netrun::CapabilityConfig {
            announcer: config.capabilities.timing,
            ..netrun::CapabilityConfig::default()
        })
        .control_socket(config.data_dir.join(CONTROL_SOCKET));
    for peer in &config.peers {
        builder = builder.peer(peer.addr, peer.public_key);
    }
    let node = match builder.start().await {
        Ok(n) => n,
        Err(e) => return fail(EXIT_FAILURE, e),
    };
    let line = serde_json::json!({
        "node_id": node.node_id().to_string(),
        "addr": node.local_addr().to_string(),
        "public_key": node.public_key().to_hex(),
    });
    let mut stdout = std::io::stdout().lock();
    if writeln!(stdout, "{line}")
        .and_then(|()| stdout.flush())
        .is_err()
    {
        warn!("stdout is closed; continuing");
    }
    drop(stdout);
    info!(node = %node.node_id(), addr = %node.local_addr(), data_dir = %config.data_dir.display(), "node running");

    wait_for_signal().await;
    info!("shutting down");
    // A second signal during shutdown exits at once.
    tokio::spawn(async {
        wait_for_signal().await;
        eprintln!("netrun: second signal, exiting now");
        std::process::exit(130);
    });
    node.shutdown().await;
    info!("stopped");
    EXIT_OK
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) {
            (Ok(mut int), Ok(mut term)) => {
                tokio::select! {
                    _ = int.recv() => {}
                    _ = term.recv() => {}
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn create_private_dir(path: &Path) -> std::io::Result<()> {
    if path.is_dir() {
        return Ok(());
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(path)
}
