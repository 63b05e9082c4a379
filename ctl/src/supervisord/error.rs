//! Why a program (or an `[include]`, or `[supervisord]`) is not imported:
//! typed here, and words only in the import report's problems.

/// A value that Python's `%` formatting, as supervisord applies it, would
/// refuse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExpandError {
    #[error("a '%' in {value:?} that is not %(name)s or %%")]
    Stray { value: String },
    #[error("an unclosed %( in {value:?}")]
    Unclosed { value: String },
    #[error("%({name}) without a conversion (s or d) in {value:?}")]
    NoConversion { name: String, value: String },
    #[error("%({name}){flags}{conversion} names nothing supervisord knows")]
    Unknown {
        name: String,
        flags: String,
        conversion: char,
    },
    #[error("%({name}){flags}d of a non-number {var:?}")]
    NotANumber {
        name: String,
        flags: String,
        var: String,
    },
    #[error("%({name}){flags}{conversion}: only s and d are supported")]
    Conversion {
        name: String,
        flags: String,
        conversion: char,
    },
}

/// An `environment = KEY="v",KEY2=v2` that supervisord's parser refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvironmentError {
    #[error("no closing quotation in {text:?}")]
    Unquoted { text: String },
    #[error(
        "unexpected end of key/value pairs in {text:?} (quote values with other characters than \
         letters, digits and _/.+-():)"
    )]
    Unpaired { text: String },
}

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("no files = …")]
    NoIncludeFiles,
    /// `line`: where the option was read, when the report's origin (the
    /// section's line) does not say it.
    #[error("{key}{}: {source}", line.map(|l| format!(" (line {l})")).unwrap_or_default())]
    Expand {
        key: String,
        line: Option<usize>,
        source: ExpandError,
    },
    #[error("files: {pattern}: {source}")]
    Glob {
        pattern: String,
        source: glob::PatternError,
    },
    #[error("environment: {0}")]
    Environment(#[from] EnvironmentError),
    #[error("numprocs > 1 needs %(process_num) in process_name, as supervisord says")]
    NoProcessNum,
    #[error("group {group:?} cannot be made an app group name")]
    GroupName { group: String },
    #[error(
        "{name:?} cannot be made an app name ([a-z0-9][a-z0-9_-]{{0,63}}): rename the program and \
         import again"
    )]
    AppName { name: String },
    #[error("no command")]
    NoCommand,
    #[error("command: no closing quotation in {command:?}")]
    UnclosedCommand { command: String },
    #[error("command is empty")]
    EmptyCommand,
    #[error(
        "no user (or root): supervisord would run it as root, which appvisor never does; add \
         user = NAME to the section and import again"
    )]
    Root,
    #[error("umask: {umask:?} is not an octal number")]
    Umask { umask: String },
    #[error("{key}: {value:?} is not true or false")]
    Boolean { key: String, value: String },
    #[error("{key}: {value:?} is not a whole number")]
    Number { key: String, value: String },
    #[error("{value:?} is not a size like 50MB")]
    Size { value: String },
    #[error("stopsignal: {value:?} is not TERM, HUP, INT, QUIT, KILL, USR1 or USR2")]
    Signal { value: String },
}
