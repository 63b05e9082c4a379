//! What the sandbox may learn from an app's venv, and how `pyvenv.cfg` is
//! read when it may be believed at all.
//!
//! A venv's `pyvenv.cfg` names the base interpreter (`home`), whose prefix
//! the app must read and execute. That file is as trustworthy as whoever
//! can write it: an owner who may write it could name `/proc/self` or
//! another app's code and have the daemon grant it. So `spawn::prepare`
//! reads it only when it is root's own all the way up (`files::
//! read_root_owned`), and then exactly as CPython does, so the daemon and
//! the interpreter never disagree about which line counts.
//!
//! Pure: the file's bytes come in; nothing here touches the file system.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// The largest `pyvenv.cfg` CPython reads: at 32 KiB its getpath refuses
/// to start ("cannot read file larger than 32KB during initialization").
pub const PYVENV_CFG_MAX: u64 = 32 * 1024 - 1;

/// What a spawn derived from the venv holding `command[0]`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct VenvFacts {
    /// The venv (the parent of `command[0]`'s `bin`); `None` outside one.
    pub venv: Option<PathBuf>,
    pub home: PythonHome,
}

impl VenvFacts {
    /// Outside any venv: nothing to derive.
    pub fn none() -> VenvFacts {
        VenvFacts {
            venv: None,
            home: PythonHome::Absent,
        }
    }
}

/// The base interpreter's `bin`, as far as the daemon believes it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PythonHome {
    /// No venv, no `pyvenv.cfg`, or one that names no absolute `home`.
    Absent,
    /// `home` from a root-owned `pyvenv.cfg`, read as CPython reads it.
    Trusted { cfg: PathBuf, home: PathBuf },
    /// A `pyvenv.cfg` that someone other than root can change, so it was
    /// not read and widens nothing; `why` names the path at fault.
    Ignored { cfg: PathBuf, why: String },
}

impl PythonHome {
    /// The `home` the sandbox may grant, if any.
    pub fn home(&self) -> Option<&Path> {
        match self {
            PythonHome::Trusted { home, .. } => Some(home),
            PythonHome::Absent | PythonHome::Ignored { .. } => None,
        }
    }
}

/// `home` from the bytes of a `pyvenv.cfg`, exactly as CPython's getpath
/// reads it (3.11 and later; `Modules/getpath.c`'s `readlines`, then
/// `getpath.py`):
///
/// - the text ends at the first NUL byte;
/// - lines are split at `\n`, and `\r`s at a line's end are dropped;
/// - each line is split at its first `=`; a line without one is skipped;
/// - the key, stripped of Python's whitespace and lowercased, must be
///   `home`: `HOME = …` counts, and the *first* such line wins;
/// - the value is stripped of Python's whitespace.
///
/// Bytes that are not UTF-8 stay as they are (CPython decodes with
/// `surrogateescape`, which gives the same path back). A relative `home`
/// grants nothing: `None`.
pub fn parse_pyvenv_home(cfg: &[u8]) -> Option<PathBuf> {
    let text = cfg.split(|b| *b == 0).next().unwrap_or_default();
    for line in text.split(|b| *b == b'\n') {
        let end = line.iter().rposition(|b| *b != b'\r').map_or(0, |i| i + 1);
        let line = &line[..end];
        let Some(eq) = line.iter().position(|b| *b == b'=') else {
            continue;
        };
        let key = py_strip(&line[..eq]);
        let is_home = std::str::from_utf8(key).is_ok_and(|key| key.to_lowercase() == "home");
        if is_home {
            let home = Path::new(OsStr::from_bytes(py_strip(&line[eq + 1..])));
            return home.is_absolute().then(|| home.to_owned());
        }
    }
    None
}

/// Python's `str.isspace()`: Unicode White_Space (Rust's) plus the
/// information separators U+001C to U+001F.
fn is_py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// `bytes` without leading and trailing Python whitespace; bytes that are
/// not UTF-8 are never whitespace.
fn py_strip(bytes: &[u8]) -> &[u8] {
    // (start, end, is space) of every character or undecodable byte.
    let mut units = Vec::new();
    let mut at = 0;
    for chunk in bytes.utf8_chunks() {
        for (i, c) in chunk.valid().char_indices() {
            units.push((at + i, at + i + c.len_utf8(), is_py_space(c)));
        }
        at += chunk.valid().len();
        for _ in chunk.invalid() {
            units.push((at, at + 1, false));
            at += 1;
        }
    }
    let first = units.iter().position(|unit| !unit.2);
    let last = units.iter().rposition(|unit| !unit.2);
    match (first, last) {
        (Some(first), Some(last)) => &bytes[units[first].0..units[last].1],
        _ => &[],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_home_as_cpython_does() {
        let cases: &[(&[u8], Option<&str>)] = &[
            (b"home = /usr/bin\nversion = 3.11.2\n", Some("/usr/bin")),
            (b"version = 3.12\nhome=/opt/py/bin\n", Some("/opt/py/bin")),
            // Keys are case-insensitive and the first match wins: the
            // trick that once granted /proc.
            (b"HOME = /usr/bin\nhome = /proc/self\n", Some("/usr/bin")),
            (b"Home=/opt/a/bin\nhome=/opt/b/bin\n", Some("/opt/a/bin")),
            (b"  hOmE\t =\t/opt/py/bin  \r\n", Some("/opt/py/bin")),
            // Python's whitespace, not only ASCII: NBSP, U+3000, U+001F.
            (
                "\u{a0}home\u{3000}= /opt/py/bin\u{1f}\n".as_bytes(),
                Some("/opt/py/bin"),
            ),
            // Only trailing \r's are dropped, then the value is stripped.
            (b"home = /opt/py/bin\r\r\n", Some("/opt/py/bin")),
            // The first '=' splits: the value may hold more.
            (b"home = /opt/a=b/bin\n", Some("/opt/a=b/bin")),
            // A line without '=' is skipped, even if it says home.
            (b"home /proc/self\nhome = /usr/bin\n", Some("/usr/bin")),
            // Keys that only look like home.
            (b"home2 = /proc/self\nthe home = /x/bin\n", None),
            // Text after a NUL is not there for CPython.
            (b"version = 3\0\nhome = /proc/self\n", None),
            // Relative: nothing to grant.
            (b"home = relative/bin\n", None),
            (b"home = \n", None),
            (b"", None),
            // The last line needs no newline.
            (b"home = /opt/py/bin", Some("/opt/py/bin")),
        ];
        for (cfg, want) in cases {
            assert_eq!(
                parse_pyvenv_home(cfg),
                want.map(PathBuf::from),
                "{:?}",
                String::from_utf8_lossy(cfg)
            );
        }
    }

    #[test]
    fn bytes_that_are_not_utf8_are_kept() {
        let home = parse_pyvenv_home(b"home = /opt/py\xff/bin\n").unwrap();
        assert_eq!(home.as_os_str().as_bytes(), b"/opt/py\xff/bin");
        // An undecodable byte in the key means it is not "home".
        assert_eq!(parse_pyvenv_home(b"home\xff = /proc/self\n"), None);
    }

    #[test]
    fn strips_python_whitespace_only() {
        assert_eq!(py_strip(b" \t a b \x0b\x0c"), b"a b");
        assert_eq!(py_strip("\u{2028}x\u{85}".as_bytes()), b"x");
        assert_eq!(py_strip(b"   "), b"");
        assert_eq!(py_strip(b"\xff "), b"\xff");
        // U+200B (zero width space) is not whitespace to Python.
        assert_eq!(py_strip("\u{200b}".as_bytes()), "\u{200b}".as_bytes());
    }

    #[test]
    fn only_a_trusted_home_is_granted() {
        let trusted = PythonHome::Trusted {
            cfg: "/opt/venv/pyvenv.cfg".into(),
            home: "/opt/py/bin".into(),
        };
        assert_eq!(trusted.home(), Some(Path::new("/opt/py/bin")));
        let ignored = PythonHome::Ignored {
            cfg: "/srv/shop/venv/pyvenv.cfg".into(),
            why: "/srv/shop is owned by uid 1001, not root".into(),
        };
        assert_eq!(ignored.home(), None);
        assert_eq!(PythonHome::Absent.home(), None);
    }
}
