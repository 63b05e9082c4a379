//! Project tasks that are not a build of the binaries themselves:
//!
//! - `cargo xtask deb` builds the Debian package (README, "Install from the
//!   package"): the static musl release build, the generated files below,
//!   then `cargo deb` with the metadata of `supervisor/Cargo.toml`.
//! - `cargo xtask generate DIR` writes the man pages and shell completions
//!   alone.
//!
//! The man pages and completions are generated, never written by hand, from
//! the definitions the binaries parse with (`appvisor_ctl::cli`,
//! `appvisor::cli`) and from the contract (`docs/configuration.md` becomes
//! appvisor.toml(5)), so none of them can fall out of date.

mod completions;
mod man;
mod markdown;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{bail, Context as _};
use clap::{Parser, Subcommand};

/// The static build the package ships (README, "Install").
const MUSL: &str = "x86_64-unknown-linux-musl";

/// Where the package's generated files go, under the release directory of
/// the musl build: cargo-deb maps `target/release/generated/...` in the
/// assets of supervisor/Cargo.toml to it, whatever the target directory.
const GENERATED: &str = "generated";

/// Project tasks: the Debian package, man pages and shell completions.
#[derive(Debug, Parser)]
#[command(name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Debug, Subcommand)]
enum Task {
    /// Build the Debian package: the static release binaries, their man
    /// pages and completions, the unit, the default settings and the docs,
    /// as DIR/debian/appvisor_VERSION_amd64.deb. Needs the musl target and
    /// cargo-deb (.ci/run installs both).
    Deb {
        /// Cargo's target directory for the static build [default:
        /// $CARGO_TARGET_DIR, else target/].
        #[arg(long, value_name = "DIR")]
        target_dir: Option<PathBuf>,
    },
    /// Write the man pages (man/, gzip-compressed) and the bash, zsh and
    /// fish completions (completions/SHELL/) into DIR.
    Generate {
        #[arg(value_name = "DIR")]
        out: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let workspace = workspace();
    let result = match cli.task {
        Task::Deb { target_dir } => {
            let target_dir = target_dir
                .or_else(|| std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from))
                .unwrap_or_else(|| workspace.join("target"));
            deb(&workspace, &target_dir).map(|deb| println!("{}", deb.display()))
        }
        Task::Generate { out } => generate(&workspace, &out),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("cargo xtask: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// The workspace root: this crate's parent directory.
fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask/ sits in the workspace")
        .to_path_buf()
}

fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

/// Runs `command`, failing with what it was and how it ended.
fn run(mut command: Command) -> anyhow::Result<()> {
    let shown = format!("{command:?}");
    let status = command
        .status()
        .with_context(|| format!("running {shown}"))?;
    if !status.success() {
        bail!("{shown} failed: {status}");
    }
    Ok(())
}

fn deb(workspace: &Path, target_dir: &Path) -> anyhow::Result<PathBuf> {
    let probe = cargo().args(["deb", "--version"]).output();
    if !probe.is_ok_and(|out| out.status.success()) {
        bail!(
            "cargo-deb is not installed: cargo install --locked cargo-deb \
             (.ci/run installs the version the package is tested with)"
        );
    }

    // The same command as tests/tests/static_build.rs, so that with the same
    // target directory either reuses the other's build.
    let mut build = cargo();
    build
        .current_dir(workspace)
        .args(["build", "--release", "--locked", "--target", MUSL])
        .args(["-p", "appvisor-supervisor", "-p", "appvisor-ctl"])
        .arg("--target-dir")
        .arg(target_dir);
    run(build)?;

    generate(
        workspace,
        &target_dir.join(MUSL).join("release").join(GENERATED),
    )?;

    let out_dir = target_dir.join("debian");
    let mut package = cargo();
    package
        .current_dir(workspace)
        .env("CARGO_TARGET_DIR", target_dir)
        .args(["deb", "--package", "appvisor-supervisor", "--target", MUSL])
        // The build above is the one to package; the release profile keeps
        // line tables for the benchmarks, the package does not need them.
        .args(["--no-build", "--locked", "--strip", "--output"])
        .arg(&out_dir);
    let shown = format!("{package:?}");
    let output = package
        .output()
        .with_context(|| format!("running {shown}"))?;
    std::io::stderr().write_all(&output.stderr)?;
    if !output.status.success() {
        bail!("{shown} failed: {}", output.status);
    }
    // cargo-deb prints the path of the package it wrote.
    let printed = String::from_utf8_lossy(&output.stdout);
    let deb = printed
        .lines()
        .map(str::trim)
        .rfind(|line| line.ends_with(".deb"))
        .with_context(|| format!("{shown} printed no package path: {printed}"))?;
    let deb = PathBuf::from(deb);
    add_md5sums(&deb)?;
    Ok(deb)
}

/// Repacks `deb` with `DEBIAN/md5sums`, which cargo-deb does not write and
/// `dpkg --verify appvisor` checks the installed files against.
fn add_md5sums(deb: &Path) -> anyhow::Result<()> {
    let tree = deb.with_extension("tree");
    if tree.exists() {
        std::fs::remove_dir_all(&tree).with_context(|| format!("removing {}", tree.display()))?;
    }
    let mut extract = Command::new("dpkg-deb");
    extract.arg("--raw-extract").arg(deb).arg(&tree);
    run(extract)?;

    let mut files = Vec::new();
    let mut dirs = vec![tree.clone()];
    while let Some(dir) = dirs.pop() {
        for entry in
            std::fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))?
        {
            let path = entry?.path();
            let relative = path.strip_prefix(&tree)?.to_path_buf();
            if relative.starts_with("DEBIAN") {
                continue;
            }
            let kind = std::fs::symlink_metadata(&path)?.file_type();
            if kind.is_dir() {
                dirs.push(path);
            } else if kind.is_file() {
                files.push(relative);
            }
        }
    }
    files.sort();
    let sums = Command::new("md5sum")
        .current_dir(&tree)
        .arg("--")
        .args(&files)
        .output()
        .context("running md5sum")?;
    if !sums.status.success() {
        bail!("md5sum failed: {}", String::from_utf8_lossy(&sums.stderr));
    }
    std::fs::write(tree.join("DEBIAN/md5sums"), &sums.stdout).context("writing md5sums")?;

    let mut build = Command::new("dpkg-deb");
    build
        .args(["--root-owner-group", "-Zxz", "--build"])
        .arg(&tree)
        .arg(deb)
        .stdout(std::process::Stdio::null());
    run(build)?;
    std::fs::remove_dir_all(&tree).with_context(|| format!("removing {}", tree.display()))?;
    Ok(())
}

/// Writes the man pages and completions into `out`, replacing what an
/// earlier run left there.
fn generate(workspace: &Path, out: &Path) -> anyhow::Result<()> {
    if out.exists() {
        std::fs::remove_dir_all(out).with_context(|| format!("removing {}", out.display()))?;
    }
    let man_dir = out.join("man");
    std::fs::create_dir_all(&man_dir).with_context(|| format!("creating {}", man_dir.display()))?;
    for page in man::pages(workspace, &page_date(workspace))? {
        let path = man_dir.join(format!("{}.gz", page.file_name));
        write_gzip(&path, page.source.as_bytes())?;
    }
    for script in completions::scripts() {
        let dir = out.join("completions").join(script.shell.to_string());
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join(&script.file_name);
        std::fs::write(&path, &script.text)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// gzip as `gzip -9n` writes it (Debian policy 12.1): no name, no time,
/// so the same page gives the same bytes.
fn write_gzip(path: &Path, data: &[u8]) -> anyhow::Result<()> {
    let file =
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut encoder = flate2::GzBuilder::new()
        .mtime(0)
        .write(file, flate2::Compression::best());
    encoder.write_all(data)?;
    encoder
        .finish()
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// The date of the pages: the last commit's, so a rebuild of the same
/// commit gives the same pages; today's outside a git checkout.
fn page_date(workspace: &Path) -> String {
    let from = |program: &str, args: &[&str]| {
        Command::new(program)
            .current_dir(workspace)
            .args(args)
            .output()
            .ok()
            .filter(|out| out.status.success())
            .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned())
            .filter(|date| !date.is_empty())
    };
    from("git", &["log", "-1", "--format=%cs"])
        .or_else(|| from("date", &["+%F"]))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_command_and_the_file_format_have_a_page() {
        let pages = man::pages(&workspace(), "2026-01-01").expect("pages render");
        let names: Vec<&str> = pages.iter().map(|page| page.file_name.as_str()).collect();
        for expected in [
            "appctl.1",
            "appctl-status.1",
            "appctl-check.1",
            "appctl-import-supervisord.1",
            "appvisord.8",
            "appvisord-check.8",
            "appvisor.toml.5",
        ] {
            assert!(names.contains(&expected), "{expected} in {names:?}");
        }
        assert!(!names.iter().any(|name| name.contains("help")), "{names:?}");
        for page in &pages {
            assert!(
                page.source.contains(".TH ") && page.source.contains("\n.SH NAME\n"),
                "{} has a title and a NAME",
                page.file_name
            );
        }
        let config = pages
            .iter()
            .find(|page| page.file_name == "appvisor.toml.5")
            .expect("listed");
        assert!(
            config.source.contains("restart.backoff.initial"),
            "appvisor.toml(5) is docs/configuration.md"
        );
    }

    #[test]
    fn completions_cover_both_binaries_in_three_shells() {
        let scripts = completions::scripts();
        let names: Vec<&str> = scripts.iter().map(|s| s.file_name.as_str()).collect();
        assert_eq!(
            names,
            [
                "appctl",
                "_appctl",
                "appctl.fish",
                "appvisord",
                "_appvisord",
                "appvisord.fish"
            ]
        );
        let bash = String::from_utf8_lossy(&scripts[0].text);
        assert!(bash.contains("import-supervisord"), "subcommands complete");
    }

    /// The package's version is the workspace's, revision 1: the newest
    /// entry of debian/changelog must say so, or lintian and apt disagree
    /// about what is installed.
    #[test]
    fn the_debian_changelog_names_this_version() {
        let changelog = std::fs::read_to_string(workspace().join("debian/changelog"))
            .expect("debian/changelog");
        let first = changelog.lines().next().unwrap_or_default();
        let expected = format!("appvisor ({}-1) ", env!("CARGO_PKG_VERSION"));
        assert!(
            first.starts_with(&expected),
            "debian/changelog begins {first:?}; add an entry starting {expected:?}"
        );
    }
}
