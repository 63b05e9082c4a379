//! The shipped systemd unit, `examples/systemd/appvisord.service`: its
//! pre-start command, read from the file itself, lets the daemon start
//! when an app file is invalid (issue 9: an invalid app file is the app's
//! problem, never the daemon's), and the unit passes `systemd-analyze
//! verify` where the tool exists. There is no systemd to start it under
//! here, so the command line is run as systemd would run it.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use appvisor_tests::bins;
use appvisor_tests::daemon::describe_output;

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
    // verify checks that each command exists: point them at the build.
    let dir = tempfile::tempdir().unwrap();
    let unit_path = dir.path().join("appvisord.service");
    let appvisord = bins::appvisord();
    fs::write(
        &unit_path,
        unit().replace("/usr/bin/appvisord", appvisord.to_str().unwrap()),
    )
    .unwrap();
    let out = Command::new(tool)
        .args(["verify", "--man=no"])
        .arg(&unit_path)
        .output()
        .expect("running systemd-analyze");
    // It exits 0 on unknown keys and bad values, but prints them.
    assert!(
        out.status.success() && out.stderr.is_empty() && out.stdout.is_empty(),
        "systemd-analyze verify {}\n{}",
        unit_path.display(),
        describe_output(&out)
    );
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
