//! The shipped systemd unit, `examples/systemd/appvisord.service`: its
//! pre-start command, read from the file itself, lets the daemon start
//! when an app file is invalid (an invalid app file is the app's
//! problem, never the daemon's), and the unit passes `systemd-analyze
//! verify` where the tool exists, alone and with each drop-in the
//! package's postinst can write (`debian/systemd-drop-in`, whose choice
//! from the systemd version and cgroup file system is checked here
//! without root). There is no systemd to start it under here, so the
//! command line is run as systemd would run it.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use appvisor_tests::bins;
use appvisor_tests::daemon::describe_output;
use appvisor_tests::systemd;

/// The unit as shipped.
fn unit() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/systemd/appvisord.service");
    fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// The value of `key=` in the unit; panics unless it is there exactly once.
fn directive(unit: &str, key: &str) -> String {
    let values: Vec<&str> = unit
        .lines()
        .filter_map(|line| line.strip_prefix(key)?.strip_prefix('='))
        .collect();
    assert_eq!(values.len(), 1, "{key}= once in the unit: {values:?}");
    values[0].trim().to_owned()
}

/// A host: `appvisor.toml` naming its own `apps.d`, with one valid-looking
/// and one invalid app file.
struct Host {
    dir: tempfile::TempDir,
}

impl Host {
    fn new() -> Host {
        let dir = tempfile::tempdir().expect("a temp dir");
        let apps = dir.path().join("apps.d");
        fs::create_dir(&apps).unwrap();
        fs::write(
            dir.path().join("appvisor.toml"),
            format!(
                "apps_dir = \"{}\"\nstate_dir = \"{}\"\n",
                apps.display(),
                dir.path().join("state").display()
            ),
        )
        .unwrap();
        fs::write(
            apps.join("broken.toml"),
            "user = \"nobody\"\ncommand = \"not a list\"\nno_such_key = true\n",
        )
        .unwrap();
        Host { dir }
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("appvisor.toml")
    }

    /// Runs a unit command line (no quoting in it) with the binary built
    /// by cargo and this host's config in place of the installed ones.
    fn run(&self, command_line: &str) -> Output {
        assert!(
            !command_line.contains(['"', '\'', '$', '\\']),
            "a plain command line: {command_line}"
        );
        let mut words = command_line.split_whitespace();
        let program = words.next().expect("a command");
        assert_eq!(program, "/usr/bin/appvisord", "{command_line}");
        let config = self.config();
        let args: Vec<&str> = words
            .map(|word| match word {
                "/etc/appvisor/appvisor.toml" => config.to_str().unwrap(),
                other => other,
            })
            .collect();
        assert!(
            args.contains(&config.to_str().unwrap()),
            "the command reads /etc/appvisor/appvisor.toml: {command_line}"
        );
        Command::new(bins::appvisord())
            .args(&args)
            .output()
            .unwrap_or_else(|e| panic!("running {command_line}: {e}"))
    }
}

#[test]
fn the_units_pre_start_check_passes_with_an_invalid_app_file() {
    let host = Host::new();
    let pre_start = directive(&unit(), "ExecStartPre");

    let out = host.run(&pre_start);
    assert!(
        out.status.success(),
        "`{pre_start}` must not keep the daemon (and every app) down for one invalid app file\n{}",
        describe_output(&out)
    );
    // The file is invalid indeed: the full check, as CM runs it, says so.
    let full = host.run("/usr/bin/appvisord check --config /etc/appvisor/appvisor.toml");
    assert_eq!(full.status.code(), Some(2), "{}", describe_output(&full));
    assert!(
        String::from_utf8_lossy(&full.stdout).contains("broken.toml"),
        "{}",
        describe_output(&full)
    );

    // What the daemon itself needs is still checked: settings that cannot
    // work fail before the start.
    fs::remove_dir_all(host.dir.path().join("apps.d")).unwrap();
    let out = host.run(&pre_start);
    assert_eq!(out.status.code(), Some(2), "{}", describe_output(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("cannot read apps directory"),
        "{}",
        describe_output(&out)
    );
}

#[test]
fn the_unit_passes_systemd_analyze_verify() {
    let Ok(tool) = which("systemd-analyze") else {
        appvisor_tests::skip("needs systemd-analyze (Debian's systemd package)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let out = verify(&tool, dir.path(), None);
    // It exits 0 on unknown keys and bad values, but prints them.
    assert!(
        out.status.success() && out.stderr.is_empty() && out.stdout.is_empty(),
        "systemd-analyze verify of the unit\n{}",
        describe_output(&out)
    );
}

/// `debian/systemd-drop-in`, as postinst runs it, with `args`.
fn drop_in(args: &[&str]) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../debian/systemd-drop-in");
    let out = Command::new(&script)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", script.display()));
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "{} {args:?}\n{}",
        script.display(),
        describe_output(&out)
    );
    String::from_utf8(out.stdout).expect("a drop-in in UTF-8")
}

#[test]
fn the_drop_in_follows_the_systemd_version_and_the_cgroup_file_system() {
    let killmode_mixed = ["[Service]", "KillMode=mixed"];
    let subgroup = ["[Service]", "DelegateSubgroup=appvisor-daemon"];
    let cases: [(&str, &str, &[&str]); 8] = [
        // Debian 12 on its default pure cgroup v2: a restart after a crash
        // would fail with 219/CGROUP, so a crash kills the apps.
        ("252", "cgroup2fs", &killmode_mixed),
        ("253", "cgroup2fs", &killmode_mixed),
        // Debian 13: the daemon starts in its leaf, adoption works.
        ("254", "cgroup2fs", &subgroup),
        ("257", "cgroup2fs", &subgroup),
        // Hybrid or v1: nothing in the unit's v2 cgroup, adoption works.
        ("252", "tmpfs", &[]),
        ("257", "tmpfs", &[]),
        // No systemctl, or a version line it cannot read: the safe side.
        ("", "cgroup2fs", &killmode_mixed),
        ("", "tmpfs", &[]),
    ];
    for (version, fs, expected) in cases {
        let text = drop_in(&[version, fs]);
        assert_eq!(
            systemd::settings(&text),
            expected,
            "systemd {version:?} on {fs}:\n{text}"
        );
        assert!(
            text.contains("docs/handoff.md"),
            "the drop-in says where the reason is:\n{text}"
        );
    }

    // Without arguments it reads this host, as postinst runs it.
    let (version, fs) = (systemd::version(), systemd::cgroup_fs());
    let text = drop_in(&[]);
    assert_eq!(
        systemd::settings(&text),
        systemd::expected_settings(version, &fs),
        "this host (systemd {version:?}, /sys/fs/cgroup {fs}):\n{text}"
    );
    let usage =
        Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("../debian/systemd-drop-in"))
            .arg("252")
            .output()
            .expect("running systemd-drop-in");
    assert_eq!(usage.status.code(), Some(2), "{}", describe_output(&usage));
}

#[test]
fn the_unit_with_each_drop_in_passes_systemd_analyze_verify() {
    let Ok(tool) = which("systemd-analyze") else {
        appvisor_tests::skip("needs systemd-analyze (Debian's systemd package)");
        return;
    };
    let host = systemd::version();
    // What postinst writes on this host is clean.
    let here = drop_in(&[]);
    let dir = tempfile::tempdir().unwrap();
    let out = verify(&tool, dir.path(), Some(&here));
    assert!(
        out.status.success() && out.stderr.is_empty() && out.stdout.is_empty(),
        "systemd-analyze verify of the unit with this host's drop-in\n{here}\n{}",
        describe_output(&out)
    );
    // Each drop-in it may write elsewhere is clean too, but for a key
    // newer than this host's systemd, which it names and ignores.
    for (version, fs) in [("252", "cgroup2fs"), ("257", "cgroup2fs"), ("252", "tmpfs")] {
        let text = drop_in(&[version, fs]);
        let dir = tempfile::tempdir().unwrap();
        let out = verify(&tool, dir.path(), Some(&text));
        let printed = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let newer = version.parse::<u32>().unwrap() >= 254 && host.is_some_and(|h| h < 254);
        let complaints: Vec<&str> = printed
            .lines()
            .filter(|line| !(newer && line.contains("Unknown key 'DelegateSubgroup'")))
            .collect();
        assert!(
            out.status.success() && complaints.is_empty(),
            "systemd-analyze verify with the drop-in for systemd {version} on {fs}\n{text}\n{}",
            describe_output(&out)
        );
    }
    // verify reads the drop-in indeed: a bad one is reported.
    let dir = tempfile::tempdir().unwrap();
    let out = verify(&tool, dir.path(), Some("[Service]\nKillMode=bogus\n"));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("bogus"),
        "systemd-analyze verify reads appvisord.service.d/\n{}",
        describe_output(&out)
    );
}

/// `systemd-analyze verify` of the unit in `dir`, with `drop_in` in
/// `dir/appvisord.service.d/` where postinst names it.
fn verify(tool: &Path, dir: &Path, drop_in: Option<&str>) -> Output {
    // verify checks that each command exists: point them at the build.
    let unit_path = dir.join("appvisord.service");
    let appvisord = bins::appvisord();
    fs::write(
        &unit_path,
        unit().replace("/usr/bin/appvisord", appvisord.to_str().unwrap()),
    )
    .unwrap();
    if let Some(text) = drop_in {
        let name = Path::new(systemd::DROP_IN);
        let drop_ins = dir.join(name.parent().unwrap().file_name().unwrap());
        fs::create_dir_all(&drop_ins).unwrap();
        fs::write(drop_ins.join(name.file_name().unwrap()), text).unwrap();
    }
    Command::new(tool)
        .args(["verify", "--man=no"])
        .arg(&unit_path)
        .output()
        .expect("running systemd-analyze")
}

fn which(program: &str) -> Result<PathBuf, ()> {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/bin")])
        .map(|dir| dir.join(program))
        .find(|path| path.is_file())
        .ok_or(())
}
