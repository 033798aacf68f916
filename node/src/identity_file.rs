//! Identity seed files: created once with mode 0600, refused when others can read them.
//!
//! The file holds the 32-byte ed25519 seed, raw. It is created with `create_new` (never
//! overwriting an existing identity) and mode 0600 in one step, so there is no window in
//! which the secret is readable by others. Loading a seed file that group or others can
//! read is refused with a message that says how to fix it.

use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use netrun_messages::Identity;
use thiserror::Error;
use zeroize_seed::Seed;

/// Name of the identity file inside a node's data directory.
pub const IDENTITY_FILE: &str = "identity.key";

/// Why an identity file could not be loaded or created.
#[derive(Debug, Error)]
pub enum IdentityFileError {
    /// The file exists but group or others may read it.
    #[error(
        "identity file {path} has mode {mode:o}, readable by group or others; run `chmod 600 {path}`"
    )]
    InsecurePermissions {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The file is not exactly 32 bytes.
    #[error("identity file {path} holds {len} bytes; a seed is exactly 32")]
    WrongLength {
        /// The file.
        path: PathBuf,
        /// Its length.
        len: u64,
    },
    /// Reading, creating or writing the file failed.
    #[error("identity file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// `create` found a file already there.
    #[error("identity file {0} already exists; refusing to overwrite an identity")]
    AlreadyExists(PathBuf),
}

/// Loading and creating identities on disk.
pub trait IdentityFile: Sized {
    /// Loads the identity at `path`, or creates a new random one there (mode 0600) if the
    /// file does not exist. The same file always gives the same node id.
    fn load_or_create(path: &Path) -> Result<Self, IdentityFileError>;
    /// Loads the identity at `path`.
    fn load(path: &Path) -> Result<Self, IdentityFileError>;
    /// Writes this identity to a new file at `path` (mode 0600; fails if it exists).
    fn save_new(&self, path: &Path) -> Result<(), IdentityFileError>;
}

impl IdentityFile for Identity {
    fn load_or_create(path: &Path) -> Result<Self, IdentityFileError> {
        match Self::load(path) {
            Err(IdentityFileError::Io { source, .. })
                if source.kind() == io::ErrorKind::NotFound =>
            {
                let identity = Identity::generate();
                match identity.save_new(path) {
                    Ok(()) => Ok(identity),
                    // Another process created it between our load and create: use theirs.
                    Err(IdentityFileError::AlreadyExists(_)) => Self::load(path),
                    Err(e) => Err(e),
                }
            }
            other => other,
        }
    }

    fn load(path: &Path) -> Result<Self, IdentityFileError> {
        let io_err = |source| IdentityFileError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut file = OpenOptions::new().read(true).open(path).map_err(io_err)?;
        let meta = file.metadata().map_err(io_err)?;
        check_mode(path, &meta)?;
        if meta.len() != 32 {
            return Err(IdentityFileError::WrongLength {
                path: path.to_path_buf(),
                len: meta.len(),
            });
        }
        let mut seed = Seed::default();
        file.read_exact(seed.bytes_mut()).map_err(io_err)?;
        Ok(Identity::from_seed(*seed.bytes_mut()))
    }

    fn save_new(&self, path: &Path) -> Result<(), IdentityFileError> {
        let io_err = |source| IdentityFileError::Io {
            path: path.to_path_buf(),
            source,
        };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs::create_dir_all(parent).map_err(io_err)?;
        }
        let mut options = OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options.open(path).map_err(|source| {
            if source.kind() == io::ErrorKind::AlreadyExists {
                IdentityFileError::AlreadyExists(path.to_path_buf())
            } else {
                io_err(source)
            }
        })?;
        file.write_all(self.seed().as_ref()).map_err(io_err)?;
        file.sync_all().map_err(io_err)
    }
}

#[cfg(unix)]
fn check_mode(path: &Path, meta: &fs::Metadata) -> Result<(), IdentityFileError> {
    use std::os::unix::fs::PermissionsExt;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(IdentityFileError::InsecurePermissions {
            path: path.to_path_buf(),
            mode,
        });
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_mode(_path: &Path, _meta: &fs::Metadata) -> Result<(), IdentityFileError> {
    Ok(())
}

/// A seed buffer that is wiped when dropped.
mod zeroize_seed {
    use zeroize::Zeroize;

    #[derive(Default)]
    pub(super) struct Seed([u8; 32]);

    impl Seed {
        pub(super) fn bytes_mut(&mut self) -> &mut [u8; 32] {
            &mut self.0
        }
    }

    impl Drop for Seed {
        fn drop(&mut self) {
            self.0.zeroize();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_then_load_gives_same_node_id() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sub/identity.key");
        let a = Identity::load_or_create(&path).expect("create");
        let b = Identity::load_or_create(&path).expect("load");
        assert_eq!(a.node_id(), b.node_id());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        assert!(matches!(
            a.save_new(&path),
            Err(IdentityFileError::AlreadyExists(_))
        ));
    }

    #[cfg(unix)]
    #[test]
    fn refuses_group_readable_seed() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("identity.key");
        Identity::load_or_create(&path).expect("create");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).expect("chmod");
        let err = Identity::load(&path).expect_err("must refuse");
        assert!(matches!(
            err,
            IdentityFileError::InsecurePermissions { mode: 0o640, .. }
        ));
        assert!(err.to_string().contains("chmod 600"));
    }

    #[test]
    fn refuses_wrong_length() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("identity.key");
        let mut options = OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        options
            .open(&path)
            .expect("open")
            .write_all(&[1; 31])
            .expect("write");
        assert!(matches!(
            Identity::load(&path),
            Err(IdentityFileError::WrongLength { len: 31, .. })
        ));
    }
}
