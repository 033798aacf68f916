//! `netrun start`: run a node.

use std::path::PathBuf;

use netrun::config::{Config, Overrides, ProcessEnv};
use netrun::identity_file::IDENTITY_FILE;
use netrun::{Identity, IdentityFile};

use super::{EXIT_FAILURE, EXIT_OK, EXIT_USAGE, fail};

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
}

pub(crate) fn run(args: StartArgs) -> u8 {
    let overrides = Overrides {
        config_file: args.config,
        data_dir: args.data_dir,
        bind: args.bind,
        peers: args.peers,
    };
    let config = match Config::load(&overrides, &ProcessEnv) {
        Ok(c) => c,
        Err(e) => return fail(EXIT_USAGE, e),
    };
    let path = config.data_dir.join(IDENTITY_FILE);
    let identity = match Identity::load_or_create(&path) {
        Ok(i) => i,
        Err(e) => return fail(EXIT_FAILURE, e),
    };
    let line = serde_json::json!({
        "node_id": identity.node_id().to_string(),
        "addr": config.bind.to_string(),
        "public_key": identity.entity_id().to_hex(),
    });
    println!("{line}");
    eprintln!("netrun: identity ready; the node runtime (sessions, transport) is not built yet");
    EXIT_OK
}
