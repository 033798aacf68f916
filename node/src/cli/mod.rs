//! Command-line interface: argument parsing, dispatch, exit codes.
//!
//! Exit codes (also listed in `netrun --help` and `docs/operations.md`):
//! 0 success · 1 runtime failure · 2 bad arguments or configuration · 3 no node running ·
//! 4 permission denied.
#![allow(
    clippy::print_stdout,
    reason = "a command-line tool prints its results on stdout"
)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod channel;
mod client;
mod daemons;
mod identity;
mod rpc;
mod start;

/// Success.
pub(crate) const EXIT_OK: u8 = 0;
/// The command failed at run time.
pub(crate) const EXIT_FAILURE: u8 = 1;
/// Bad arguments or configuration; nothing was started.
pub(crate) const EXIT_USAGE: u8 = 2;

const AFTER_HELP: &str = "\
Exit codes:
  0  success
  1  runtime failure
  2  bad arguments or configuration (nothing was started)
  3  no node is running at the data directory
  4  permission denied on the data directory or control socket

Environment:
  NETRUN_DATA_DIR   data directory (identity, control socket)
  NETRUN_CONFIG     configuration file
  NETRUN_BIND       UDP bind address
  NETRUN_PSK        mesh pre-shared key, 64 hex characters
  NETRUN_PEERS      comma-separated ADDR=PUBKEY static peers
  NETRUN_SEEDS      comma-separated ADDR=PUBKEY discovery seeds
  NETRUN_ADVERTISE  comma-separated addresses for this node's DHT contact record
  NETRUN_PEER_EXCHANGE, NETRUN_DHT, NETRUN_MDNS, NETRUN_MQTT   discovery backends on|off
  NETRUN_MQTT_BROKER  MQTT broker URL (mqtt://HOST:PORT)
  NETRUN_TAGS       comma-separated capability tags this node announces
  NETRUN_LOG        log filter (e.g. info, netrun=debug)
  OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_EXPORTER_OTLP_PROTOCOL   trace export";

/// netrun: an end-to-end encrypted mesh runtime.
#[derive(Debug, Parser)]
#[command(name = "netrun", version, about, after_help = AFTER_HELP)]
pub(crate) struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Options every client subcommand shares.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct ClientArgs {
    /// The node's data directory (default: the one `netrun start` uses).
    #[arg(long, env = "NETRUN_DATA_DIR")]
    pub(crate) data_dir: Option<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub(crate) json: bool,
}

/// Arguments of `netrun peers`.
#[derive(Debug, clap::Args)]
pub(crate) struct PeersArgs {
    #[command(flatten)]
    pub(crate) client: ClientArgs,
    /// List every open stream per peer: window, buffered and in-flight bytes, RTT,
    /// retransmits, backpressure and loss counters.
    #[arg(long)]
    pub(crate) streams: bool,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a node in the foreground until SIGINT or SIGTERM.
    Start(start::StartArgs),
    /// Show a running node: id, uptime, supervision tree, counters.
    Status(ClientArgs),
    /// List a running node's peers: id, address, state, RTT, how each was found (with
    /// `--streams`, every open stream and its counters).
    Peers(PeersArgs),
    /// Show a running node's discovery: each backend's status, the coordinator's
    /// counters and every discovered peer.
    Discovery(ClientArgs),
    /// Publish to, subscribe to (printing events until Ctrl-C) or list channels.
    Channel {
        #[command(subcommand)]
        action: channel::ChannelAction,
    },
    /// List the capabilities a running node knows of (its own and the mesh's), optionally
    /// only the nodes meeting a filter.
    Caps(channel::CapsArgs),
    /// List a running node's daemons: origin, kind, state (crash-loop gating included),
    /// health, restarts, events processed, load.
    Daemons(ClientArgs),
    /// Operate one daemon of a running node: stop it, or snapshot it.
    Daemon {
        #[command(subcommand)]
        action: daemons::DaemonAction,
    },
    /// Show or create this machine's node identity.
    Identity {
        #[command(subcommand)]
        action: identity::IdentityAction,
    },
    /// Call nRPC services through a running node.
    Rpc {
        #[command(subcommand)]
        action: rpc::RpcAction,
    },
}

/// Parses arguments, runs the command, and maps the outcome to an exit code.
pub(crate) fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_USAGE } else { EXIT_OK };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let code = match cli.command {
        Command::Start(args) => start::run(args),
        Command::Status(args) => client::status(args),
        Command::Peers(args) => client::peers(args),
        Command::Discovery(args) => client::discovery(args),
        Command::Channel { action } => channel::run(action),
        Command::Caps(args) => channel::caps(args),
        Command::Daemons(args) => daemons::list(args),
        Command::Daemon { action } => daemons::run(action),
        Command::Identity { action } => identity::run(action),
        Command::Rpc { action } => rpc::run(action),
    };
    ExitCode::from(code)
}

/// Prints a one-line error for a person and returns `code`.
pub(crate) fn fail(code: u8, message: impl std::fmt::Display) -> u8 {
    eprintln!("netrun: {message}");
    code
}
