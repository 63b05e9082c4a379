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

/// The most errors kept for one file. A file with thousands of errors is
/// generated, not written: the first hundred say what is wrong, and keeping
/// them all would let one file fill the daemon's memory and every status.
pub const MAX_ERRORS_PER_FILE: usize = 100;

/// Errors gathered up to [`MAX_ERRORS_PER_FILE`]; past it they are only
/// counted, so gathering stays linear in time and bounded in memory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Gathered {
    kept: Vec<ConfigError>,
    /// Errors found beyond the ones kept.
    more: usize,
}

impl Gathered {
    pub fn push(&mut self, error: ConfigError) {
        if self.kept.len() < MAX_ERRORS_PER_FILE {
            self.kept.push(error);
        } else {
            self.more += 1;
        }
    }

    /// Takes in what `other` gathered, counted ones included.
    pub fn append(&mut self, other: Gathered) {
        self.more += other.more;
        self.extend(other.kept);
    }

    /// Counts an error beyond the cap without building it.
    pub fn count_more(&mut self, n: usize) {
        self.more += n;
    }

    pub fn is_full(&self) -> bool {
        self.kept.len() >= MAX_ERRORS_PER_FILE
    }

    pub fn is_empty(&self) -> bool {
        self.kept.is_empty() && self.more == 0
    }

    pub fn iter(&self) -> std::slice::Iter<'_, ConfigError> {
        self.kept.iter()
    }

    /// Each kept error through `f` (to place it at its key, say).
    pub fn map(mut self, f: impl FnMut(ConfigError) -> ConfigError) -> Gathered {
        self.kept = self.kept.into_iter().map(f).collect();
        self
    }

    /// The kept errors in file order (`file`'s own first, then those of
    /// other files such as `appvisor.toml` or env files), and then, if
    /// some were only counted, one more that says how many.
    pub fn finish(mut self, file: &Path) -> Vec<ConfigError> {
        self.kept
            .sort_by_key(|error| (error.file != file, error.line, error.column));
        if self.more > 0 {
            self.kept.push(
                ConfigError::new(file, format!("{} more errors not shown", self.more))
                    .with_hint("fix the ones above first: each check shows the first hundred"),
            );
        }
        self.kept
    }
}

impl Extend<ConfigError> for Gathered {
    fn extend<I: IntoIterator<Item = ConfigError>>(&mut self, errors: I) {
        for error in errors {
            self.push(error);
        }
    }
}

/// Where the lines of a text start, and how many characters precede every
/// 256th byte, so that any byte offset becomes a line and column in
/// O(log lines): an error's position must not cost a scan of the file,
/// or a file of many errors costs their product.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct LineIndex {
    /// Byte offset of each line's start; the first is 0.
    line_starts: Vec<u32>,
    /// Characters in `text[..256 * i]`.
    chars_before_block: Vec<u32>,
}

const BLOCK: usize = 256;

impl LineIndex {
    pub fn new(text: &str) -> LineIndex {
        let bytes = text.as_bytes();
        let to_u32 = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        let mut line_starts = vec![0];
        line_starts.extend(memchr::memchr_iter(b'\n', bytes).map(|i| to_u32(i + 1)));
        let mut chars_before_block = Vec::with_capacity(bytes.len() / BLOCK + 1);
        let mut chars = 0;
        for block in bytes.chunks(BLOCK) {
            chars_before_block.push(to_u32(chars));
            chars += count_chars(block);
        }
        chars_before_block.push(to_u32(chars));
        LineIndex {
            line_starts,
            chars_before_block,
        }
    }

    /// Characters in `text[..offset]`, `offset` on a character boundary.
    fn chars_before(&self, text: &str, offset: usize) -> usize {
        let block = offset / BLOCK;
        let before = self.chars_before_block.get(block).copied().unwrap_or(0) as usize;
        before + count_chars(&text.as_bytes()[block * BLOCK..offset])
    }
}

/// Characters in UTF-8 bytes: the bytes that do not continue one.
fn count_chars(bytes: &[u8]) -> usize {
    bytes.iter().filter(|b| (**b & 0xC0) != 0x80).count()
}

/// A file's path and text, to turn byte spans into line and column.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SourceFile<'a> {
    pub path: &'a Path,
    pub text: &'a str,
    lines: &'a LineIndex,
}

impl<'a> SourceFile<'a> {
    /// `lines` must be `LineIndex::new(text)`.
    pub fn new(path: &'a Path, text: &'a str, lines: &'a LineIndex) -> SourceFile<'a> {
        SourceFile { path, text, lines }
    }

    /// 1-based line and column (in characters) of byte `offset`.
    pub fn position(&self, offset: usize) -> (usize, usize) {
        let offset = floor_char_boundary(self.text, offset.min(self.text.len()));
        let starts = &self.lines.line_starts;
        let line = starts
            .partition_point(|start| *start as usize <= offset)
            .max(1);
        let line_start = starts[line - 1] as usize;
        let column = self.lines.chars_before(self.text, offset)
            - self.lines.chars_before(self.text, line_start)
            + 1;
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
        let text = "a = 1\nbé = \"x\"\n";
        let lines = LineIndex::new(text);
        let source = SourceFile::new(Path::new("x.toml"), text, &lines);
        assert_eq!(source.position(0), (1, 1));
        assert_eq!(source.position(4), (1, 5));
        assert_eq!(source.position(6), (2, 1));
        // "bé = " is 6 bytes but 5 characters.
        assert_eq!(source.position(12), (2, 6));
        // Inside "é": its first byte.
        assert_eq!(source.position(8), (2, 2));
        assert_eq!(source.position(text.len()), (3, 1));
        assert_eq!(source.position(text.len() + 10), (3, 1));
    }

    #[test]
    fn positions_agree_with_counting_on_long_mixed_lines() {
        // Lines longer than the index's blocks, multi-byte characters
        // straddling block edges.
        let mut text = String::new();
        for i in 0..40 {
            text.push_str(&"é€a".repeat(i * 17));
            text.push('\n');
        }
        let lines = LineIndex::new(&text);
        let source = SourceFile::new(Path::new("x.toml"), &text, &lines);
        for (offset, _) in text.char_indices() {
            let before = &text[..offset];
            let line = before.matches('\n').count() + 1;
            let start = before.rfind('\n').map_or(0, |i| i + 1);
            let column = before[start..].chars().count() + 1;
            assert_eq!(source.position(offset), (line, column), "at {offset}");
        }
    }

    #[test]
    fn gathering_keeps_the_first_hundred_in_file_order_and_counts_the_rest() {
        let file = Path::new("apps.d/shop.toml");
        let mut gathered = Gathered::default();
        for line in (1..=250).rev() {
            gathered.push(ConfigError::new(file, "unknown key").with_position(line, 1));
        }
        gathered.count_more(5);
        let errors = gathered.finish(file);
        assert_eq!(errors.len(), MAX_ERRORS_PER_FILE + 1);
        // The first hundred found (lines 250 down to 151), in file order.
        assert_eq!(errors[0].line, Some(151));
        assert_eq!(errors[99].line, Some(250));
        assert_eq!(
            errors[100].to_string(),
            "apps.d/shop.toml: 155 more errors not shown \
             (fix the ones above first: each check shows the first hundred)"
        );
    }
}
