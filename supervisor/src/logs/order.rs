//! Arrival order across an app's two streams, in memory and on disk.
//!
//! Owns the rules shared by everything that shows both streams as one: the
//! run stamps, the on-disk index records, and where a line break goes when
//! the output switches streams in the middle of a line. It must never decide
//! order from anything but the stamps taken under the app's order lock.
//!
//! # The model
//!
//! A *run* is a stretch of one stream's output with no output of the other
//! stream in between. Each run gets a *stamp* when it begins: wall-clock
//! nanoseconds, strictly increasing per app, so stamps compare across daemon
//! restarts. Sorting runs by stamp gives the order in which the daemon read
//! the output. Within a run, bytes keep their order.
//!
//! On disk, each log file has an index file, `.index/<file name>`, of
//! [`RECORD`]-byte records `(stamp, end)`: the bytes of the file before
//! `end` and after the previous record's end belong to the run `stamp`. A
//! record is written when its run ends (the other stream wrote), at rotation
//! and when the daemon lets go of the file, so a single-stream flood costs
//! no index writes at all. Bytes after the last record belong to the open
//! run, whose stamp the reader gets from memory. The index is advisory: a
//! missing index, or one reaching past its file (truncated behind the
//! daemon's back), only loses ordering, never output.

use std::time::{SystemTime, UNIX_EPOCH};

use super::Stream;

/// Bytes of one index record: stamp and end offset, both little-endian u64.
pub(crate) const RECORD: usize = 16;

/// The stamp of bytes whose run is not known (files written without an
/// index): older than every stamped run.
pub(crate) const UNKNOWN: u64 = 0;

/// One index record.
pub(crate) fn encode(stamp: u64, end: u64) -> [u8; RECORD] {
    let mut record = [0u8; RECORD];
    record[..8].copy_from_slice(&stamp.to_le_bytes());
    record[8..].copy_from_slice(&end.to_le_bytes());
    record
}

/// `(stamp, end)` of one record; `bytes` is [`RECORD`] long.
pub(crate) fn decode(bytes: &[u8]) -> (u64, u64) {
    let word = |range: std::ops::Range<usize>| {
        let mut word = [0u8; 8];
        word.copy_from_slice(&bytes[range]);
        u64::from_le_bytes(word)
    };
    (word(0..8), word(8..16))
}

/// Stamps for new runs: nanoseconds since the epoch, made strictly
/// increasing (a clock stepped back, or two runs in one nanosecond, still
/// give increasing stamps).
#[derive(Debug, Default)]
pub(crate) struct Clock {
    last: u64,
}

impl Clock {
    pub(crate) fn next(&mut self) -> u64 {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        self.last = now.max(self.last.saturating_add(1));
        self.last
    }
}

/// Which streams a reader shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Selection {
    /// Both, interleaved in arrival order.
    Both,
    Only(Stream),
}

impl Selection {
    pub fn includes(self, stream: Stream) -> bool {
        match self {
            Selection::Both => true,
            Selection::Only(only) => only == stream,
        }
    }

    /// The selected streams, stdout first.
    pub(crate) fn streams(self) -> &'static [Stream] {
        match self {
            Selection::Both => &[Stream::Stdout, Stream::Stderr],
            Selection::Only(Stream::Stdout) => &[Stream::Stdout],
            Selection::Only(Stream::Stderr) => &[Stream::Stderr],
        }
    }
}

/// The line-break rule of interleaved output: when the output switches
/// streams in the middle of a line (a partial line flushed after a pause,
/// then the other stream wrote), a newline goes in between, so lines of the
/// two streams never run together. The rest of the cut line follows when its
/// stream comes back, as a line of its own.
#[derive(Debug, Clone, Copy)]
pub struct Interleave {
    last: Option<Stream>,
    at_line_start: bool,
}

impl Default for Interleave {
    fn default() -> Self {
        Interleave {
            last: None,
            at_line_start: true,
        }
    }
}

impl Interleave {
    /// Records that `data` of `stream` comes next; true when a line break
    /// must be shown before it.
    pub fn push(&mut self, stream: Stream, data: &[u8]) -> bool {
        if data.is_empty() {
            return false;
        }
        let switch = self.before(stream);
        self.after(data);
        switch
    }

    /// Output of `stream` comes next: true when a line break must be shown
    /// first. Follow with [`Interleave::after`] once the output is known.
    pub fn before(&mut self, stream: Stream) -> bool {
        let switch = self.last.is_some_and(|last| last != stream) && !self.at_line_start;
        self.last = Some(stream);
        if switch {
            self.at_line_start = true;
        }
        switch
    }

    /// Records the output shown after [`Interleave::before`].
    pub fn after(&mut self, data: &[u8]) {
        if let Some(&last) = data.last() {
            self.at_line_start = last == b'\n';
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let record = encode(1_795_438_927_000_000_001, 52_428_800);
        assert_eq!(decode(&record), (1_795_438_927_000_000_001, 52_428_800));
    }

    #[test]
    fn stamps_strictly_increase() {
        let mut clock = Clock::default();
        let mut last = 0;
        for _ in 0..10_000 {
            let stamp = clock.next();
            assert!(stamp > last);
            last = stamp;
        }
        clock.last = u64::MAX - 1;
        assert_eq!(clock.next(), u64::MAX);
        assert_eq!(clock.next(), u64::MAX, "saturates, never wraps");
    }

    #[test]
    fn a_break_goes_only_between_streams_inside_a_line() {
        use Stream::{Stderr, Stdout};
        type Pushes = &'static [(Stream, &'static str)];
        let table: &[(Pushes, &[bool])] = &[
            (&[(Stdout, "a\n"), (Stderr, "b\n")], &[false, false]),
            (&[(Stdout, "50%"), (Stderr, "warn\n")], &[false, true]),
            (&[(Stdout, "50%"), (Stdout, " 60%\n")], &[false, false]),
            (
                &[(Stdout, "50%"), (Stderr, "w\n"), (Stdout, "done\n")],
                &[false, true, false],
            ),
            (
                &[(Stderr, "x"), (Stdout, ""), (Stdout, "y")],
                &[false, false, true],
            ),
        ];
        for (pushes, want) in table {
            let mut interleave = Interleave::default();
            let got: Vec<bool> = pushes
                .iter()
                .map(|(stream, data)| interleave.push(*stream, data.as_bytes()))
                .collect();
            assert_eq!(&got, want, "{pushes:?}");
        }
    }
}
