//! `netrun channel publish|subscribe|list` and `netrun caps`: channel and capability
//! commands against a running node's control socket.

use clap::Subcommand;
use netrun::control::request_json;
use serde_json::{Value, json};

use super::client::{array, call_value, data_dir, exit_code, runtime, text};
use super::{ClientArgs, EXIT_FAILURE, EXIT_OK, EXIT_USAGE, fail};

/// Longest a `channel subscribe` poll waits for events before asking again.
const POLL_WAIT_MS: u64 = 1000;

/// Channel subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum ChannelAction {
    /// Publish one event on a channel of this node (registered with defaults — global,
    /// reliable, no token — if the node does not publish it yet).
    Publish {
        #[command(flatten)]
        client: ClientArgs,
        /// The channel name.
        name: String,
        /// The event: text, or `@FILE` for a file's bytes.
        data: String,
    },
    /// Subscribe to a channel on another node (a session peer) and print its events
    /// until Ctrl-C: `SEQ PUBLISHER CHANNEL DATA` lines, or one JSON object per event.
    Subscribe {
        #[command(flatten)]
        client: ClientArgs,
        /// The publisher's node id (16 hex digits).
        publisher: String,
        /// The channel name.
        name: String,
    },
    /// List the channels this node publishes and its subscriptions.
    List(ClientArgs),
}

/// Arguments of `netrun caps`.
#[derive(Debug, clap::Args)]
pub(crate) struct CapsArgs {
    #[command(flatten)]
    pub(crate) client: ClientArgs,
    /// Only nodes meeting this filter: comma-separated `gpu`, `tag=T` (or a bare tag),
    /// `vendor=nvidia|amd|intel|apple|other`, `memory=GB`, `vram=GB`, `cores=N`.
    #[arg(long)]
    pub(crate) filter: Option<String>,
}

pub(crate) fn run(action: ChannelAction) -> u8 {
    match action {
        ChannelAction::Publish { client, name, data } => publish(&client, &name, &data),
        ChannelAction::Subscribe {
            client,
            publisher,
            name,
        } => subscribe(&client, &publisher, &name),
        ChannelAction::List(client) => list(&client),
    }
}

fn publish(client: &ClientArgs, name: &str, data: &str) -> u8 {
    let mut request = json!({"op": "channel_publish", "name": name, "register": true});
    match data.strip_prefix('@') {
        Some(path) => match std::fs::read(path) {
            Ok(bytes) => request["data_hex"] = json!(hex::encode(bytes)),
            Err(e) => return fail(EXIT_USAGE, format!("cannot read {path}: {e}")),
        },
        None => request["data"] = json!(data),
    }
    call_value(client, request, |v| {
        let n = |key: &str| v.get(key).and_then(Value::as_u64).unwrap_or(0);
        println!(
            "published to {} subscriber(s): {} delivered, {} dropped",
            n("attempted"),
            n("delivered"),
            n("dropped")
        );
    })
}

fn list(client: &ClientArgs) -> u8 {
    call_value(client, json!({"op": "channels"}), |v| {
        let published = array(v, "published");
        if published.is_empty() {
            println!("no published channels");
        } else {
            println!(
                "{:<32}  {:<11}  {:>5}  {:>11}  {:>9}  {:>9}  {:>7}",
                "CHANNEL", "DELIVERY", "TOKEN", "SUBSCRIBERS", "PUBLISHED", "DELIVERED", "DROPPED"
            );
            for c in &published {
                let n = |key: &str| c.get(key).and_then(Value::as_u64).unwrap_or(0);
                let flag = |key: &str| c.get(key).and_then(Value::as_bool).unwrap_or(false);
                println!(
                    "{:<32}  {:<11}  {:>5}  {:>11}  {:>9}  {:>9}  {:>7}",
                    text(c, "name"),
                    if flag("reliable") {
                        "reliable"
                    } else {
                        "best-effort"
                    },
                    if flag("require_token") { "yes" } else { "no" },
                    array(c, "subscribers").len(),
                    n("published"),
                    n("delivered"),
                    n("dropped"),
                );
            }
        }
        let subscriptions = array(v, "subscriptions");
        if !subscriptions.is_empty() {
            println!(
                "\n{:<16}  {:<32}  {:<8}  STREAMS",
                "PUBLISHER", "CHANNEL", "STATE"
            );
            for s in &subscriptions {
                let active = s.get("active").and_then(Value::as_bool).unwrap_or(false);
                println!(
                    "{:<16}  {:<32}  {:<8}  {}",
                    text(s, "publisher"),
                    text(s, "name"),
                    if active { "active" } else { "pending" },
                    s.get("streams").and_then(Value::as_u64).unwrap_or(0)
                );
            }
        }
    })
}

pub(crate) fn caps(args: CapsArgs) -> u8 {
    let request = json!({"op": "caps", "filter": args.filter.unwrap_or_default()});
    call_value(&args.client, request, |v| {
        let nodes = v.as_array().cloned().unwrap_or_default();
        if nodes.is_empty() {
            println!("no matching nodes");
            return;
        }
        println!(
            "{:<16}  {:>5}  {:>7}  {:<24}  TAGS",
            "NODE", "CORES", "MEMORY", "GPU"
        );
        for node in &nodes {
            let hw = node.get("hardware").cloned().unwrap_or_default();
            let n = |key: &str| hw.get(key).and_then(Value::as_u64).unwrap_or(0);
            let gpu = hw.get("gpu").filter(|g| !g.is_null()).map_or_else(
                || "-".to_string(),
                |g| {
                    format!(
                        "{} {} {}GB",
                        text(g, "vendor"),
                        text(g, "model"),
                        g.get("vram_gb").and_then(Value::as_u64).unwrap_or(0)
                    )
                },
            );
            let tags: Vec<&str> = array_ref(node, "tags")
                .iter()
                .filter_map(Value::as_str)
                .collect();
            let local = node.get("local").and_then(Value::as_bool).unwrap_or(false);
            println!(
                "{:<16}  {:>5}  {:>5}GB  {:<24}  {}{}",
                text(node, "node_id"),
                n("cpu_cores"),
                n("memory_gb"),
                gpu,
                tags.join(","),
                if local { "  (this node)" } else { "" }
            );
        }
    })
}

fn subscribe(client: &ClientArgs, publisher: &str, name: &str) -> u8 {
    let data_dir = data_dir(client);
    let runtime = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let json_out = client.json;
    runtime.block_on(async move {
        let request = json!({"op": "channel_subscribe", "publisher": publisher, "name": name});
        let id = match request_json(&data_dir, &request).await {
            Ok(v) => v.get("subscription").and_then(Value::as_u64).unwrap_or(0),
            Err(e) => return fail(exit_code(&e), e),
        };
        if !json_out {
            eprintln!("subscribed to {name} on {publisher}; Ctrl-C to stop");
        }
        let poll = json!({"op": "channel_poll", "subscription": id, "wait_ms": POLL_WAIT_MS});
        let ctrl_c = tokio::signal::ctrl_c();
        tokio::pin!(ctrl_c);
        loop {
            tokio::select! {
                _ = &mut ctrl_c => {
                    let leave = json!({"op": "channel_unsubscribe", "subscription": id});
                    let _ = request_json(&data_dir, &leave).await;
                    return EXIT_OK;
                }
                answer = request_json(&data_dir, &poll) => {
                    match answer {
                        Ok(v) => {
                            for event in array(&v, "events") {
                                print_event(&event, json_out);
                            }
                            if v.get("ended").and_then(Value::as_bool).unwrap_or(false) {
                                let why = v.get("end_reason").and_then(Value::as_str);
                                return fail(
                                    EXIT_FAILURE,
                                    match why {
                                        Some(why) => format!("the subscription ended: {why}"),
                                        None => "the subscription ended".to_owned(),
                                    },
                                );
                            }
                        }
                        Err(e) => return fail(exit_code(&e), e),
                    }
                }
            }
        }
    })
}

fn print_event(event: &Value, json_out: bool) {
    if json_out {
        println!("{event}");
        return;
    }
    let data = match event.get("data").and_then(Value::as_str) {
        Some(text) => text.to_string(),
        None => format!("hex:{}", text(event, "data_hex")),
    };
    println!(
        "{} {} {} {}",
        event.get("seq").and_then(Value::as_u64).unwrap_or(0),
        text(event, "publisher"),
        text(event, "channel"),
        data
    );
}

fn array_ref<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v.get(key)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}
