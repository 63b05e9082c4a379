//! The control socket file: created mode 0666 in a root-owned 0755
//! directory, replacing a stale file safely.

use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tokio::net::UnixListener;

#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    #[error("creating the control socket directory {}: {source}", path.display())]
    Dir { path: PathBuf, source: io::Error },
    #[error("control socket directory {} is not a root-owned directory writable only by root; fix its owner and mode (0755)", path.display())]
    UnsafeDir { path: PathBuf },
    #[error("another appvisord answers on {} (stop it first, or choose another [control] socket)", path.display())]
    InUse { path: PathBuf },
    #[error("{} exists and is not a socket; remove it or choose another [control] socket", path.display())]
    NotASocket { path: PathBuf },
    #[error("binding the control socket {}: {source}", path.display())]
    Bind { path: PathBuf, source: io::Error },
}

/// Binds the control socket at `path`.
///
/// A socket file left by a daemon that died is replaced; one that still
/// answers belongs to a live daemon and is left alone. The directory must
/// be writable by root only, or anyone could swap the socket for their own.
pub fn bind_control_socket(path: &Path) -> Result<UnixListener, SocketError> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(dir)
            .map_err(|source| SocketError::Dir {
                path: dir.to_owned(),
                source,
            })?;
    }
    let meta = std::fs::metadata(dir).map_err(|source| SocketError::Dir {
        path: dir.to_owned(),
        source,
    })?;
    let euid = nix::unistd::geteuid().as_raw();
    if !meta.is_dir() || meta.uid() != euid || meta.mode() & 0o022 != 0 {
        return Err(SocketError::UnsafeDir {
            path: dir.to_owned(),
        });
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(SocketError::InUse {
                    path: path.to_owned(),
                });
            }
            std::fs::remove_file(path).map_err(|source| SocketError::Bind {
                path: path.to_owned(),
                source,
            })?;
        }
        Ok(_) => {
            return Err(SocketError::NotASocket {
                path: path.to_owned(),
            })
        }
        Err(_) => {}
    }
    let listener = UnixListener::bind(path).map_err(|source| SocketError::Bind {
        path: path.to_owned(),
        source,
    })?;
    // Everyone may connect; every request is authorized by its peer's uid.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666)).map_err(|source| {
        SocketError::Bind {
            path: path.to_owned(),
            source,
        }
    })?;
    Ok(listener)
}
