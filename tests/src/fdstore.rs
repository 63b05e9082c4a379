//! A mini service manager's fd store, as systemd keeps one for a service
//! with `FileDescriptorStoreMax=`: a `NOTIFY_SOCKET` that keeps each fd a
//! datagram carries with `FDSTORE=1` under its `FDNAME=`, drops the fds of
//! a name on `FDSTOREREMOVE=1`, and hands them all to the next daemon
//! ([`crate::DaemonOptions::passed_fds`]). For hosts without systemd as
//! PID 1, like the test host.

use std::io::IoSliceMut;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};

#[derive(Debug, Default)]
struct Store {
    fds: Vec<(String, Arc<OwnedFd>)>,
    /// Messages other than the store's (READY=1, ...).
    other: Vec<String>,
}

/// The receiving end of `NOTIFY_SOCKET`.
#[derive(Debug)]
pub struct ServiceManager {
    path: PathBuf,
    store: Arc<Mutex<Store>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl ServiceManager {
    /// Binds `dir/notify.sock` and starts receiving.
    pub fn start(dir: &Path) -> ServiceManager {
        let path = dir.join("notify.sock");
        let socket =
            UnixDatagram::bind(&path).unwrap_or_else(|e| panic!("binding {}: {e}", path.display()));
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .expect("read timeout");
        let store = Arc::new(Mutex::new(Store::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (store, stop) = (Arc::clone(&store), Arc::clone(&stop));
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    receive(&socket, &store);
                }
            })
        };
        ServiceManager {
            path,
            store,
            stop,
            thread: Some(thread),
        }
    }

    /// `NOTIFY_SOCKET` for the daemon.
    pub fn env(&self) -> (String, String) {
        ("NOTIFY_SOCKET".to_owned(), self.path.display().to_string())
    }

    /// The names in the store, in the order they came.
    pub fn names(&self) -> Vec<String> {
        let store = self.store.lock().unwrap();
        store.fds.iter().map(|(n, _)| n.clone()).collect()
    }

    /// What the next daemon is passed: every fd in the store.
    pub fn passed(&self) -> Vec<(String, Arc<OwnedFd>)> {
        self.store.lock().unwrap().fds.clone()
    }

    /// The other messages so far.
    pub fn messages(&self) -> Vec<String> {
        self.store.lock().unwrap().other.clone()
    }
}

impl Drop for ServiceManager {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

fn receive(socket: &UnixDatagram, store: &Mutex<Store>) {
    let mut buf = vec![0u8; 4096];
    let mut cmsg = nix::cmsg_space!([RawFd; 16]);
    let (bytes, fds) = {
        let mut iov = [IoSliceMut::new(&mut buf)];
        let Ok(msg) = recvmsg::<()>(
            socket.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) else {
            return;
        };
        let mut fds = Vec::new();
        if let Ok(cmsgs) = msg.cmsgs() {
            for c in cmsgs {
                if let ControlMessageOwned::ScmRights(raw) = c {
                    // SAFETY: the kernel just installed these fds in this
                    // process for this message; nothing else owns them.
                    fds.extend(
                        raw.into_iter()
                            .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
                    );
                }
            }
        }
        (msg.bytes, fds)
    };
    let text = String::from_utf8_lossy(&buf[..bytes]).into_owned();
    let field = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key).map(str::to_owned))
    };
    let mut store = store.lock().unwrap();
    if field("FDSTORE=").as_deref() == Some("1") {
        let name = field("FDNAME=").unwrap_or_else(|| "stored".to_owned());
        store
            .fds
            .extend(fds.into_iter().map(|fd| (name.clone(), Arc::new(fd))));
    } else if field("FDSTOREREMOVE=").as_deref() == Some("1") {
        let name = field("FDNAME=").unwrap_or_default();
        store.fds.retain(|(n, _)| *n != name);
    } else {
        store.other.push(text);
    }
}
