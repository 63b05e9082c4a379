//! Running the quickstart, `examples/quickstart/run.sh`, without a
//! terminal: its output read line by line with deadlines, the commands it
//! prints, SIGTERM as Ctrl-C. On drop the script, its daemon and their
//! cgroup subtree are killed and removed.

use std::io::{BufRead as _, BufReader};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;

use crate::daemon::describe_output;
use crate::procfs;

/// How long the script may take to stop after SIGTERM.
const STOP_DEADLINE: Duration = Duration::from_secs(30);

/// `examples/quickstart/run.sh`.
pub fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/quickstart/run.sh")
}

/// A running `run.sh`, in its own process group, killed with its daemon
/// and their cgroup on drop.
#[derive(Debug)]
pub struct Quickstart {
    child: Child,
    lines: Receiver<String>,
    seen: Vec<String>,
    cgroup: String,
}

impl Quickstart {
    /// Runs `run.sh ARGS --bin-dir BIN_DIR --cgroup CGROUP`.
    pub fn start(args: &[&str], bin_dir: &Path, cgroup: &str) -> Quickstart {
        let mut child = Command::new(script())
            .args(args)
            .arg("--bin-dir")
            .arg(bin_dir)
            .args(["--cgroup", cgroup])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .env("NO_COLOR", "1")
            .process_group(0)
            .spawn()
            .expect("running examples/quickstart/run.sh");
        let (send, lines) = mpsc::channel();
        for stream in [
            Box::new(child.stdout.take().expect("piped")) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().expect("piped")),
        ] {
            let send = send.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if send.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        Quickstart {
            child,
            lines,
            seen: Vec::new(),
            cgroup: cgroup.to_owned(),
        }
    }

    /// Reads output until a line satisfies `done`, or panics with all of it.
    pub fn wait_for(
        &mut self,
        what: &str,
        deadline: Duration,
        done: impl Fn(&str) -> bool,
    ) -> String {
        let end = Instant::now() + deadline;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if done(&line) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "run.sh: no {what} within {deadline:?}; its output:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// The commands printed after "In another terminal, try:".
    pub fn printed_commands(&mut self) -> Vec<String> {
        self.wait_for("commands", Duration::from_secs(10), |line| {
            line.starts_with("In another terminal")
        });
        let mut commands = Vec::new();
        loop {
            let line = self.wait_for("the end of the commands", Duration::from_secs(10), |_| true);
            if line.starts_with("Stop the daemon") {
                return commands;
            }
            if let Some(command) = line.strip_prefix("  ") {
                commands.push(command.to_owned());
            }
        }
    }

    /// SIGTERM, as Ctrl-C would: the script stops the daemon, which stops
    /// the app. Returns the script's exit code.
    pub fn stop(&mut self) -> Option<i32> {
        let pid = Pid::from_raw(i32::try_from(self.child.id()).expect("pid fits"));
        kill(pid, Signal::SIGTERM).expect("signalling run.sh");
        let end = Instant::now() + STOP_DEADLINE;
        loop {
            if let Some(status) = self.child.try_wait().expect("waiting for run.sh") {
                return status.code();
            }
            assert!(
                Instant::now() < end,
                "run.sh still running {STOP_DEADLINE:?} after SIGTERM; its output:\n{}",
                self.seen.join("\n")
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Quickstart {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let group = Pid::from_raw(i32::try_from(self.child.id()).expect("pid fits"));
            let _ = killpg(group, Signal::SIGKILL);
            let _ = self.child.wait();
        }
        let Some(root) = procfs::cgroup2_root() else {
            return;
        };
        let own = procfs::cgroup_of(std::process::id()).unwrap_or_default();
        let dir = root.join(own).join(&self.cgroup);
        procfs::kill_cgroup_tree(&dir, Duration::from_secs(5));
        procfs::remove_cgroup_tree(&dir);
    }
}

/// Runs a printed command as the user would paste it; panics unless it
/// succeeds.
pub fn run_printed(command: &str) -> String {
    let out = Command::new("sh")
        .args(["-c", command])
        .output()
        .expect("running sh");
    assert!(
        out.status.success(),
        "the printed command `{command}` failed: {}",
        describe_output(&out)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
