use std::io;
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use super::*;
use crate::config::validate::{validate_app, Defaults};
use crate::config::AppName;

/// A validated spec of app `shop` with `listen` as its `[[listen]]` tables.
fn spec(listen: &[(&str, &str)]) -> AppSpec {
    let mut text = "user = \"shop\"\ncommand = [\"/bin/true\"]\ndirectory = \"/\"\n".to_owned();
    for (address, name) in listen {
        text.push_str(&format!(
            "[[listen]]\naddress = \"{address}\"\nname = \"{name}\"\n"
        ));
    }
    let no_env = |path: &Path| {
        Err(crate::files::FileError::from_io(
            path,
            &io::Error::from_raw_os_error(libc::ENOENT),
        ))
    };
    validate_app(
        &AppName::new("shop").unwrap(),
        &PathBuf::from("apps.d/shop.toml"),
        &text,
        &Defaults::none(),
        &no_env,
    )
    .unwrap_or_else(|e| panic!("{e}"))
    .spec
}

fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn me() -> (u32, u32) {
    (
        nix::unistd::geteuid().as_raw(),
        nix::unistd::getegid().as_raw(),
    )
}

#[test]
fn binds_tcp_in_listen_order_and_accepts_into_the_backlog() {
    let (a, b) = (free_port(), free_port());
    let app = spec(&[
        (&format!("127.0.0.1:{a}"), "http"),
        (&format!("127.0.0.1:{b}"), "admin"),
    ]);
    let (uid, gid) = me();
    let held = HeldSockets::bind(&app, uid, gid).unwrap();
    assert_eq!(held.names(), ["http", "admin"]);
    assert_eq!(held.fds().len(), 2);
    assert!(held.serves(&app.listen, uid, gid));
    // Nobody accepts, yet connecting works: the kernel queues it.
    TcpStream::connect((Ipv4Addr::LOCALHOST, a)).unwrap();
    TcpStream::connect((Ipv4Addr::LOCALHOST, b)).unwrap();
    drop(held);
    let refused = TcpStream::connect((Ipv4Addr::LOCALHOST, a)).unwrap_err();
    assert_eq!(refused.kind(), io::ErrorKind::ConnectionRefused);
}

#[test]
fn binds_ipv6() {
    let probe = match std::net::TcpListener::bind("[::1]:0") {
        Ok(listener) => listener,
        Err(err) => {
            appvisor_tests::skip(format_args!("needs ::1 ({err})"));
            return;
        }
    };
    let port = probe.local_addr().unwrap().port();
    drop(probe);
    let app = spec(&[(&format!("[::1]:{port}"), "http")]);
    let (uid, gid) = me();
    let _held = HeldSockets::bind(&app, uid, gid).unwrap();
    TcpStream::connect(format!("[::1]:{port}")).unwrap();
}

#[test]
fn an_address_in_use_is_a_clear_error() {
    let other = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let port = other.local_addr().unwrap().port();
    let app = spec(&[(&format!("127.0.0.1:{port}"), "http")]);
    let (uid, gid) = me();
    let err = HeldSockets::bind(&app, uid, gid).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "listen 127.0.0.1:{port}: address already in use (another process holds it: find it with `ss -ltnp 'sport = :{port}'`)"
        )
    );
}

#[test]
fn rebind_keeps_the_sockets_whose_address_stayed() {
    let (a, b) = (free_port(), free_port());
    let (uid, gid) = me();
    let first = spec(&[(&format!("127.0.0.1:{a}"), "http")]);
    let held = HeldSockets::bind(&first, uid, gid).unwrap();
    // A client waiting in the backlog of `a` must survive the change.
    let waiting = TcpStream::connect((Ipv4Addr::LOCALHOST, a)).unwrap();
    let second = spec(&[
        (&format!("127.0.0.1:{b}"), "admin"),
        (&format!("127.0.0.1:{a}"), "web"),
    ]);
    assert!(!held.serves(&second.listen, uid, gid));
    let held = HeldSockets::rebind(&second, uid, gid, Some(held)).unwrap();
    assert_eq!(held.names(), ["admin", "web"]);
    let listener = TcpListener::from(held.fds()[1].try_clone_to_owned().unwrap());
    let (accepted, _) = listener.accept().unwrap();
    assert_eq!(
        accepted.peer_addr().unwrap(),
        waiting.local_addr().unwrap(),
        "the connection queued before the change is still there"
    );
    // Dropping the old set did not close `a`; a third set without it does.
    let third = spec(&[(&format!("127.0.0.1:{b}"), "admin")]);
    let held = HeldSockets::rebind(&third, uid, gid, Some(held)).unwrap();
    drop(listener);
    assert_eq!(held.names(), ["admin"]);
    let refused = TcpStream::connect((Ipv4Addr::LOCALHOST, a)).unwrap_err();
    assert_eq!(refused.kind(), io::ErrorKind::ConnectionRefused);
}

#[test]
fn unix_socket_replaces_a_stale_file_and_is_removed_on_drop() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("http.sock");
    // A socket file nobody listens on, as a crashed daemon leaves it.
    drop(UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    let app = spec(&[(&format!("unix:{}", path.display()), "http")]);
    let (uid, gid) = me();
    let held = HeldSockets::bind(&app, uid, gid).unwrap();
    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    assert_eq!((meta.uid(), meta.gid()), (uid, gid));
    UnixStream::connect(&path).unwrap();
    drop(held);
    assert!(!path.exists(), "the socket file goes with the socket");
}

/// `close` on the runtime: the sockets refuse connections at once, and the
/// files go on the blocking pool, done when the handle says so.
#[tokio::test(flavor = "current_thread")]
async fn close_refuses_at_once_and_removes_files_off_the_runtime() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("http.sock");
    let port = free_port();
    let app = spec(&[
        (&format!("unix:{}", path.display()), "http"),
        (&format!("127.0.0.1:{port}"), "tcp"),
    ]);
    let (uid, gid) = me();
    let held = HeldSockets::bind(&app, uid, gid).unwrap();
    let removed = held.close().expect("a file to remove");
    // Refused while the file is still there, not found once it is gone.
    let refused = UnixStream::connect(&path).unwrap_err();
    assert!(
        matches!(
            refused.kind(),
            io::ErrorKind::ConnectionRefused | io::ErrorKind::NotFound
        ),
        "{refused}"
    );
    let refused = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).unwrap_err();
    assert_eq!(refused.kind(), io::ErrorKind::ConnectionRefused);
    removed.await.unwrap();
    assert!(!path.exists(), "the socket file goes with the socket");
    // TCP sockets alone: nothing for the blocking pool.
    let app = spec(&[(&format!("127.0.0.1:{port}"), "tcp")]);
    assert!(HeldSockets::bind(&app, uid, gid).unwrap().close().is_none());
}

#[test]
fn unix_socket_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (uid, gid) = me();

    let live = dir.path().join("live.sock");
    let _listener = UnixListener::bind(&live).unwrap();
    let regular = dir.path().join("file");
    std::fs::write(&regular, "data").unwrap();
    let missing = dir.path().join("missing/http.sock");

    let cases = [
        (
            &live,
            format!(
                "listen unix:{0}: address already in use (another process holds it: find it with `ss -lxp src {0}`)",
                live.display()
            ),
        ),
        (
            &regular,
            format!(
                "listen unix:{0}: {0} exists and is not a socket (remove it or choose another path)",
                regular.display()
            ),
        ),
        (
            &missing,
            format!(
                "listen unix:{}: directory {} does not exist (create it, owned by the app's user or root)",
                missing.display(),
                missing.parent().unwrap().display()
            ),
        ),
    ];
    for (path, want) in cases {
        let app = spec(&[(&format!("unix:{}", path.display()), "http")]);
        let err = HeldSockets::bind(&app, uid, gid).unwrap_err();
        assert_eq!(err.to_string(), want);
    }
    assert_eq!(std::fs::read_to_string(&regular).unwrap(), "data");
    UnixStream::connect(&live).expect("a live socket is left alone");
}

#[test]
fn privileged_port_and_unix_owner_as_root() {
    if !nix::unistd::geteuid().is_root() {
        appvisor_tests::skip("needs root (binds a port below 1024, chowns)");
        return;
    }
    // A port below 1024 nobody uses here; skip quietly if one is taken.
    let Some(port) = (900..1000).find(|p| TcpListener::bind((Ipv4Addr::LOCALHOST, *p)).is_ok())
    else {
        appvisor_tests::skip("needs a free port below 1024");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.sock");
    let app = spec(&[
        (&format!("127.0.0.1:{port}"), "http"),
        (&format!("unix:{}", path.display()), "unix"),
    ]);
    let held = HeldSockets::bind(&app, 65534, 65533).unwrap();
    TcpStream::connect((Ipv4Addr::LOCALHOST, port)).unwrap();
    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (65534, 65533));
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    // A changed owner applies to the socket kept across the change.
    assert!(!held.serves(&app.listen, 65532, 65531));
    let held = HeldSockets::rebind(&app, 65532, 65531, Some(held)).unwrap();
    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (65532, 65531));
    drop(held);
}

/// A socket directory the app's owner (uid 65534 here) may write, in a
/// root-owned temporary directory, and a root-only file beside it that the
/// owner would like the daemon to chmod and chown.
struct OwnerSocketDir {
    _root: tempfile::TempDir,
    dir: PathBuf,
    target: PathBuf,
}

const OWNER: u32 = 65534;

impl OwnerSocketDir {
    fn new() -> Option<OwnerSocketDir> {
        if !nix::unistd::geteuid().is_root() {
            appvisor_tests::skip("needs root (a socket directory another user owns, chown)");
            return None;
        }
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("run");
        std::fs::create_dir(&dir).unwrap();
        std::os::unix::fs::chown(&dir, Some(OWNER), Some(OWNER)).unwrap();
        let target = root.path().join("secret");
        std::fs::write(&target, "secret").unwrap();
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o600)).unwrap();
        Some(OwnerSocketDir {
            _root: root,
            dir,
            target,
        })
    }

    /// (mode, uid, gid) of `path`, not following a link.
    fn state(path: &Path) -> (u32, u32, u32) {
        let meta = std::fs::symlink_metadata(path).unwrap();
        (meta.mode() & 0o7777, meta.uid(), meta.gid())
    }
}

/// What the owner does to the socket file between the daemon's bind and
/// its chmod; returns the file they hope the daemon changes.
type Swap = fn(&Path, &OwnerSocketDir) -> PathBuf;

#[test]
fn a_socket_swapped_between_bind_and_chmod_changes_nothing() {
    let Some(owned) = OwnerSocketDir::new() else {
        return;
    };
    // A root socket anyone may use, elsewhere on the same file system (as
    // /dev/log is), which the owner may hard-link: protected_hardlinks
    // allows a link to a file one can read and write.
    let other = owned.target.with_file_name("dev-log");
    let _other = UnixListener::bind(&other).unwrap();
    std::fs::set_permissions(&other, std::fs::Permissions::from_mode(0o666)).unwrap();

    let swaps: [(&str, Swap); 4] = [
        ("a link to a root-only file", |path, owned| {
            std::fs::remove_file(path).unwrap();
            std::os::unix::fs::symlink(&owned.target, path).unwrap();
            owned.target.clone()
        }),
        (
            "a hard link to a root socket used elsewhere",
            |path, owned| {
                let other = owned.target.with_file_name("dev-log");
                std::fs::remove_file(path).unwrap();
                std::fs::hard_link(&other, path).unwrap();
                other
            },
        ),
        ("a socket of the owner's own", |path, _| {
            std::fs::remove_file(path).unwrap();
            drop(UnixListener::bind(path).unwrap());
            std::os::unix::fs::lchown(path, Some(OWNER), Some(OWNER)).unwrap();
            path.to_owned()
        }),
        ("nothing", |path, owned| {
            std::fs::remove_file(path).unwrap();
            owned.target.clone()
        }),
    ];
    for (what, swap) in swaps {
        let path = owned.dir.join("app.sock");
        let app = spec(&[(&format!("unix:{}", path.display()), "http")]);
        let bound = BoundUnix::bind(&app.listen[0], &path).unwrap();
        let victim = swap(&path, &owned);
        let before = OwnerSocketDir::state(&victim);
        let error = bound.hold(1001, 1001).unwrap_err();
        assert!(
            matches!(&error, ListenError::Replaced { path: p, .. } if *p == path),
            "{what}: {error}"
        );
        assert_eq!(
            error.to_string(),
            format!(
                "listen unix:{0}: {0} is not the socket appvisord bound any more (replaced by \
                 someone who can write its directory); nothing was changed",
                path.display()
            )
        );
        assert_eq!(OwnerSocketDir::state(&victim), before, "{what}: changed");
        let _ = std::fs::remove_file(&path);
    }
    assert_eq!(OwnerSocketDir::state(&owned.target), (0o600, 0, 0));
    assert_eq!(std::fs::read_to_string(&owned.target).unwrap(), "secret");
}

#[test]
fn a_directory_moved_away_after_bind_still_holds_the_socket_bound() {
    let Some(owned) = OwnerSocketDir::new() else {
        return;
    };
    let path = owned.dir.join("app.sock");
    let app = spec(&[(&format!("unix:{}", path.display()), "http")]);
    let bound = BoundUnix::bind(&app.listen[0], &path).unwrap();
    // The owner moves the directory and puts a link to root's in its place:
    // the daemon keeps working on the directory it opened.
    let moved = owned.dir.with_file_name("moved");
    std::fs::rename(&owned.dir, &moved).unwrap();
    std::os::unix::fs::symlink(owned.target.parent().unwrap(), &owned.dir).unwrap();
    let held = bound.hold(OWNER, OWNER).unwrap();
    assert_eq!(
        OwnerSocketDir::state(&moved.join("app.sock")),
        (0o660, OWNER, OWNER)
    );
    assert_eq!(OwnerSocketDir::state(&owned.target), (0o600, 0, 0));
    drop(held);
    assert!(
        !moved.join("app.sock").exists(),
        "removed where it was made"
    );
}

/// The sockets are kept across an update that changes the app's owner
/// (`rebind`), and chowned and chmodded again then: by then the owner has
/// had all the time they want to replace the file by a link.
#[test]
fn a_kept_socket_replaced_by_a_link_is_not_followed_on_rebind() {
    let Some(owned) = OwnerSocketDir::new() else {
        return;
    };
    let path = owned.dir.join("app.sock");
    let app = spec(&[(&format!("unix:{}", path.display()), "http")]);
    let held = HeldSockets::bind(&app, OWNER, OWNER).unwrap();
    assert_eq!(OwnerSocketDir::state(&path), (0o660, OWNER, OWNER));
    std::fs::remove_file(&path).unwrap();
    std::os::unix::fs::symlink(&owned.target, &path).unwrap();
    std::os::unix::fs::lchown(&path, Some(OWNER), Some(OWNER)).unwrap();

    let error = HeldSockets::rebind(&app, 65532, 65531, Some(held)).unwrap_err();
    assert!(matches!(&error, ListenError::Replaced { .. }), "{error}");
    assert_eq!(OwnerSocketDir::state(&owned.target), (0o600, 0, 0));
    assert_eq!(
        std::fs::read_link(&path).unwrap(),
        owned.target,
        "the owner's link is left where it is"
    );
}
