//! The error type every config layer reports: file, line, column, key,
//! message and hint. Owns formatting of those errors; never decides what is
//! an error.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// One problem in a configuration file, precise enough for a person to fix
/// it without reading the daemon's source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file as it was given (not canonicalized).
    pub file: PathBuf,
    /// 1-based.
    pub line: Option<usize>,
    /// 1-based, in characters.
    pub column: Option<usize>,
    /// Dotted key, e.g. `restart.backoff.initial` or `listen[1].address`.
    pub key: Option<String>,
    /// Lowercase, no trailing period.
    pub message: String,
    /// What would fix it, printed in parentheses after the message.
    pub hint: Option<String>,
}

impl ConfigError {
    pub fn new(file: impl Into<PathBuf>, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: file.into(),
            line: None,
            column: None,
            key: None,
            message: message.into(),
            hint: None,
        }
    }

    pub fn with_position(mut self, line: usize, column: usize) -> ConfigError {
        self.line = Some(line);
        self.column = Some(column);
        self
    }

    pub fn with_key(mut self, key: impl Into<String>) -> ConfigError {
        self.key = Some(key.into());
        self
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> ConfigError {
        self.hint = Some(hint.into());
        self
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(column) = self.column {
                write!(f, ":{column}")?;
            }
        }
        f.write_str(": ")?;
        if let Some(key) = &self.key {
            write!(f, "{key}: ")?;
        }
        f.write_str(&self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, " ({hint})")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// Every problem found in one pass, in file order where that is known.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl ConfigErrors {
    pub fn iter(&self) -> std::slice::Iter<'_, ConfigError> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<ConfigError> for ConfigErrors {
    fn from(error: ConfigError) -> ConfigErrors {
        ConfigErrors(vec![error])
    }
}

impl From<Vec<ConfigError>> for ConfigErrors {
    fn from(errors: Vec<ConfigError>) -> ConfigErrors {
        ConfigErrors(errors)
    }
}

impl IntoIterator for ConfigErrors {
    type Item = ConfigError;
    type IntoIter = std::vec::IntoIter<ConfigError>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// A file's path and text, to turn byte spans into line and column.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SourceFile<'a> {
    pub path: &'a Path,
    pub text: &'a str,
}

impl<'a> SourceFile<'a> {
    pub fn new(path: &'a Path, text: &'a str) -> SourceFile<'a> {
        SourceFile { path, text }
    }

    /// 1-based line and column (in characters) of byte `offset`.
    pub fn position(&self, offset: usize) -> (usize, usize) {
        let offset = floor_char_boundary(self.text, offset.min(self.text.len()));
        let before = &self.text[..offset];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before[line_start..].chars().count() + 1;
        (line, column)
    }

    /// An error at the start of `span`.
    pub fn error(&self, span: &Range<usize>, message: impl Into<String>) -> ConfigError {
        let (line, column) = self.position(span.start);
        ConfigError::new(self.path, message).with_position(line, column)
    }
}

fn floor_char_boundary(text: &str, mut offset: usize) -> usize {
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    offset
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_forms() {
        let cases = [
            (
                ConfigError::new("apps.d/shop.toml", "invalid duration \"1 fortnight\"")
                    .with_position(4, 9)
                    .with_key("restart.backoff.initial")
                    .with_hint("use forms like 500ms, 30s, 2m"),
                "apps.d/shop.toml:4:9: restart.backoff.initial: invalid duration \"1 fortnight\" (use forms like 500ms, 30s, 2m)",
            ),
            (
                ConfigError::new("apps.d/shop.toml", "missing required key").with_key("user"),
                "apps.d/shop.toml: user: missing required key",
            ),
            (
                ConfigError::new("/etc/appvisor/appvisor.toml", "cannot read file").with_hint("create it"),
                "/etc/appvisor/appvisor.toml: cannot read file (create it)",
            ),
        ];
        for (error, want) in cases {
            assert_eq!(error.to_string(), want);
        }
    }

    #[test]
    fn errors_print_one_per_line() {
        let errors = ConfigErrors(vec![
            ConfigError::new("a.toml", "first").with_position(1, 1),
            ConfigError::new("b.toml", "second"),
        ]);
        assert_eq!(errors.to_string(), "a.toml:1:1: first\nb.toml: second");
    }

    #[test]
    fn positions_count_lines_and_characters() {
        let source = SourceFile::new(Path::new("x.toml"), "a = 1\nbé = \"x\"\n");
        assert_eq!(source.position(0), (1, 1));
        assert_eq!(source.position(4), (1, 5));
        assert_eq!(source.position(6), (2, 1));
        // "bé = " is 6 bytes but 5 characters.
        assert_eq!(source.position(12), (2, 6));
    }
}
