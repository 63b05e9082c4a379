//! Say what is wrong: an app file that cannot be read is an
//! invalid file like any other, whatever made it so.

use std::os::unix::fs::symlink;
use std::time::Duration;

use appvisor_tests::testapps::sleeper;
use appvisor_tests::{require_root, Daemon, DaemonOptions, Prefix, State, TestUser};

#[test]
fn a_dangling_symlinked_app_file_keeps_the_last_valid_version_running() {
    require_root!();
    let user = TestUser::ensure("avt-app1");
    let prefix = Prefix::new();
    // CM keeps the real file elsewhere and links it into apps.d.
    let real = prefix.write("cm/shop.toml", &sleeper("shop", &user).to_toml());
    symlink(&real, prefix.app_file("shop")).expect("linking the app file");
    let daemon = Daemon::start(&prefix, DaemonOptions::default());
    let running = daemon.wait_for_state("shop", State::Running, Duration::from_secs(10));

    std::fs::remove_file(&real).expect("removing the link's target");
    let update = daemon.appctl(["update"]);
    assert_eq!(
        update.status.code(),
        Some(2),
        "{}",
        appvisor_tests::daemon::describe_output(&update)
    );
    let after = daemon.app("shop");
    assert_eq!(after.state, State::Running, "{after:?}");
    assert_eq!(after.pid, running.pid, "the last valid version runs on");
    let error = after.config_error.unwrap_or_default();
    assert!(
        error.contains("cannot read app file: No such file or directory"),
        "{error}"
    );
}
