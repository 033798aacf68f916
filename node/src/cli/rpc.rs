//! `netrun rpc call NODE SERVICE JSON`: one nRPC call through a running node.
//!
//! The JSON body is encoded as rmp-serde (objects as maps with field names, which typed
//! services decode into their structs), the running node makes the call, and the response
//! is printed as JSON. Exit codes: 0 answered, 1 the call failed (timeout, no route,
//! server error …), 2 bad arguments, 3 no node running, 4 permission denied.

use clap::Subcommand;
use serde_json::{Value, json};

use super::client::call_value;
use super::{ClientArgs, EXIT_USAGE, fail};

#[derive(Debug, Subcommand)]
pub(crate) enum RpcAction {
    /// Call SERVICE on NODE with a JSON body and print the JSON response.
    Call {
        /// The node to call (16 hex digits, as `netrun peers` shows it).
        node: String,
        /// The service name.
        service: String,
        /// The request body as JSON (encoded as rmp-serde).
        body: String,
        /// Deadline of the call in milliseconds (default 10000).
        #[arg(long, value_name = "MS")]
        timeout_ms: Option<u64>,
        #[command(flatten)]
        client: ClientArgs,
    },
}

pub(crate) fn run(action: RpcAction) -> u8 {
    let RpcAction::Call {
        node,
        service,
        body,
        timeout_ms,
        client,
    } = action;
    if node.len() != 16 || u64::from_str_radix(&node, 16).is_err() {
        return fail(
            EXIT_USAGE,
            format!("bad node id {node:?}: expected 16 hex digits"),
        );
    }
    let body: Value = match serde_json::from_str(&body) {
        Ok(v) => v,
        Err(e) => return fail(EXIT_USAGE, format!("the body is not JSON: {e}")),
    };
    let mut request = json!({ "op": "rpc_call", "node": node, "service": service, "body": body });
    if let Some(ms) = timeout_ms {
        request["timeout_ms"] = json!(ms);
    }
    call_value(&client, request, |result| match result.get("body") {
        Some(body) => println!("{body}"),
        None => println!(
            "{}",
            json!({ "body_hex": result.get("body_hex").cloned().unwrap_or(Value::Null) })
        ),
    })
}
