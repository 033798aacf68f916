//! `netrun identity show|new`.

use clap::Subcommand;
use netrun::config::{Config, Overrides, ProcessEnv};
use netrun::identity_file::IDENTITY_FILE;
use netrun::{Identity, IdentityFile};

use super::{ClientArgs, EXIT_FAILURE, EXIT_OK, EXIT_USAGE, fail};

#[derive(Debug, Subcommand)]
pub(crate) enum IdentityAction {
    /// Print the node id and public key of the identity in the data directory.
    Show(ClientArgs),
    /// Create the identity file if there is none (never overwrites one).
    New(ClientArgs),
}

pub(crate) fn run(action: IdentityAction) -> u8 {
    let (args, create) = match action {
        IdentityAction::Show(a) => (a, false),
        IdentityAction::New(a) => (a, true),
    };
    let overrides = Overrides {
        data_dir: args.data_dir.clone(),
        ..Overrides::default()
    };
    let config = match Config::load(&overrides, &ProcessEnv) {
        Ok(c) => c,
        Err(e) => return fail(EXIT_USAGE, e),
    };
    let path = config.data_dir.join(IDENTITY_FILE);
    let identity = if create {
        if path.exists() {
            return fail(
                EXIT_FAILURE,
                format!(
                    "{} already exists; refusing to replace an identity",
                    path.display()
                ),
            );
        }
        Identity::load_or_create(&path)
    } else {
        Identity::load(&path)
    };
    let identity = match identity {
        Ok(i) => i,
        Err(netrun::IdentityFileError::Io { source, .. })
            if source.kind() == std::io::ErrorKind::NotFound =>
        {
            return fail(
                EXIT_FAILURE,
                format!(
                    "no identity at {}; create one with `netrun identity new` or `netrun start`",
                    path.display()
                ),
            );
        }
        Err(e) => return fail(EXIT_FAILURE, e),
    };
    print_identity(&identity, &path, args.json);
    EXIT_OK
}

fn print_identity(identity: &Identity, path: &std::path::Path, json: bool) {
    if json {
        let value = serde_json::json!({
            "node_id": identity.node_id().to_string(),
            "public_key": identity.entity_id().to_hex(),
            "path": path.display().to_string(),
        });
        println!("{value}");
    } else {
        println!("node id     {}", identity.node_id());
        println!("public key  {}", identity.entity_id().to_hex());
        println!("file        {}", path.display());
    }
}
