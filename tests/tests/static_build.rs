//! The build appvisor recommends for production: `appvisord` and `appctl`
//! linked statically against musl (README, "Install"), which keeps the
//! daemon's resident memory within its target (docs/benchmarks.md).
//! The rest of the suite runs the glibc debug build; this test builds the
//! static one and runs it for real, where musl differs from glibc: the user
//! database (users, supplementary groups, a caller's groups for `[access]`)
//! and the syscalls behind spawning and confinement.
//!
//! Needs root, and the `x86_64-unknown-linux-musl` Rust target (`.ci/run`
//! installs it with rustup); skipped with the reason printed without either.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use appvisor_tests::daemon::describe_output;
use appvisor_tests::{
    bins, require_root, AppBuilder, Daemon, DaemonOptions, Prefix, ProcStatus, Readiness, State,
    TestGroup, TestUser,
};

const TARGET: &str = "x86_64-unknown-linux-musl";
const DEADLINE: Duration = Duration::from_secs(20);

/// The installed standard library for `TARGET`, if any.
fn target_installed() -> bool {
    let Ok(out) = Command::new("rustc").args(["--print", "sysroot"]).output() else {
        return false;
    };
    let sysroot = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    sysroot
        .join("lib/rustlib")
        .join(TARGET)
        .join("lib")
        .is_dir()
}

/// Builds the static release binaries in their own target directory (the
/// suite's build directory stays free) and returns where they are.
fn build_static() -> PathBuf {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the workspace");
    let target_dir = bins::target_dir()
        .parent()
        .expect("target/debug has a parent")
        .join("static-release");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(workspace)
        .args(["build", "--release", "--locked", "--target", TARGET])
        .args(["-p", "appvisor-supervisor", "-p", "appvisor-ctl"])
        .arg("--target-dir")
        .arg(&target_dir)
        .output()
        .expect("running cargo build");
    assert!(
        out.status.success(),
        "building the static release: {}",
        describe_output(&out)
    );
    target_dir.join(TARGET).join("release")
}

/// Whether the ELF file at `path` names a program interpreter (PT_INTERP):
/// a static executable has none, so it needs no ld.so and no libc.so.
fn has_interpreter(path: &Path) -> bool {
    let elf = std::fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    assert_eq!(
        &elf[..5],
        b"\x7fELF\x02",
        "{} is a 64-bit ELF file",
        path.display()
    );
    let u16_at = |at: usize| usize::from(u16::from_le_bytes([elf[at], elf[at + 1]]));
    let u64_at = |at: usize| {
        let bytes: [u8; 8] = elf[at..at + 8].try_into().expect("8 bytes");
        usize::try_from(u64::from_le_bytes(bytes)).expect("offset fits")
    };
    let (phoff, phentsize, phnum) = (u64_at(0x20), u16_at(0x36), u16_at(0x38));
    (0..phnum).any(|i| {
        let at = phoff + i * phentsize;
        u32::from_le_bytes(elf[at..at + 4].try_into().expect("4 bytes")) == 3
    })
}

#[test]
fn the_static_release_build_runs_confined_apps_as_their_users() {
    require_root!();
    if !target_installed() {
        appvisor_tests::skip(format_args!(
            "needs the {TARGET} Rust target (rustup target add {TARGET}; .ci/run installs it)"
        ));
        return;
    }
    let bin_dir = build_static();
    for program in ["appvisord", "appctl"] {
        assert!(
            !has_interpreter(&bin_dir.join(program)),
            "{program} is static: no PT_INTERP"
        );
    }

    let group = TestGroup::ensure("avt-static-grp");
    let user = TestUser::ensure_in_groups("avt-app-static", &["avt-static-grp"]);
    let ops = TestGroup::ensure("avt-static-ops");
    let operator = TestUser::ensure_in_groups("avt-ctl-static", &["avt-static-ops"]);
    let stranger = TestUser::ensure("avt-ctl-eve");
    let prefix = Prefix::new();
    // Reads /etc/shadow (Landlock refuses it), says so, and stays up.
    let probe = "import errno, time\n\
                 try:\n    open('/etc/shadow').read()\n    print('shadow read', flush=True)\n\
                 except OSError as e:\n    print('shadow', errno.errorcode[e.errno], flush=True)\n\
                 time.sleep(1000000)\n";
    AppBuilder::new("shop", &user, [bins::SYSTEM_PYTHON, "-c", probe])
        .readiness(Readiness::None)
        .start_secs(Duration::from_millis(500))
        .extra_toml(&format!("[access]\ngroups = [\"{}\"]", ops.name))
        .write(&prefix);
    let daemon = Daemon::start(
        &prefix,
        DaemonOptions {
            bin_dir: Some(bin_dir),
            ..DaemonOptions::default()
        },
    );

    // The app runs as its user with the supplementary groups of /etc/group.
    let first = daemon.wait_for_state("shop", State::Running, DEADLINE);
    let pid = first.pid.expect("a running app has a pid");
    let proc = ProcStatus::read(pid).expect("the app's process exists");
    assert_eq!(proc.uid, [user.uid; 4], "uids of {pid}");
    assert_eq!(proc.gid, [user.gid; 4], "gids of {pid}");
    assert!(
        proc.groups.contains(&group.gid),
        "avt-static-grp ({}) in {:?}",
        group.gid,
        proc.groups
    );
    daemon.wait_until(DEADLINE, "the app's report on /etc/shadow", || {
        daemon.app_logs("shop", 5, false).contains("shadow ")
    });
    assert!(
        daemon.app_logs("shop", 5, false).contains("shadow EACCES"),
        "Landlock refuses /etc/shadow: {}",
        daemon.app_logs("shop", 5, false)
    );
    let out = daemon.appctl_ok(["security", "shop", "--json"]);
    let reports: Vec<appvisor_protocol::AppSecurity> =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(reports[0].landlock.status, "full", "{out}");

    // An operator through a group of /etc/group restarts it without root;
    // a stranger does not even see it.
    let out = daemon.appctl_as(&operator, ["restart", "shop"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe_output(&out));
    let restarted = daemon.app("shop");
    assert_eq!(restarted.state, State::Running);
    assert_ne!(restarted.pid, Some(pid), "a new process after restart");
    let out = daemon.appctl_as(&stranger, ["restart", "shop"]);
    assert_eq!(out.status.code(), Some(2), "{}", describe_output(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).starts_with("appctl: no app named shop that"),
        "{}",
        describe_output(&out)
    );
}
