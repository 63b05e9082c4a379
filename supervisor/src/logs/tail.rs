//! The in-memory tail of one app: its most recent output, both streams in
//! arrival order, kept raw and split into lines only when someone asks.
//!
//! Owns a bounded copy of recent output so the "last log lines" of a failed
//! start, and the lines since a mark, need no disk read and survive a log
//! disk that is full or missing. It must never grow beyond [`TAIL_BYTES`] of
//! live data (twice that in the buffer, at most [`MAX_RUNS`] run marks), and
//! must never do per-line work on the capture path: a push is at most one
//! bounded `memcpy`.

use std::collections::VecDeque;

use memchr::memchr_iter;

use super::order::{Interleave, Selection};
use super::Stream;

/// Bytes of recent output kept per app.
pub(crate) const TAIL_BYTES: usize = 64 * 1024;
/// A line longer than this is cut in the tail (never in the files).
pub(crate) const TAIL_LINE_BYTES: usize = 4 * 1024;
/// Stream switches remembered; more drop the oldest output early.
const MAX_RUNS: usize = 4096;
/// Marks where the tail cut a line.
const CUT: &str = "…";

/// A position in an app's output: bytes pushed into the tail since the app
/// was loaded. [`Tail::lines_since`] shows only what came after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct LogMark(pub(crate) u64);

#[derive(Debug)]
pub(crate) struct Tail {
    /// Recent output. Up to `2 * TAIL_BYTES` so that trimming (a `memmove`)
    /// happens once per `TAIL_BYTES` pushed, but only the last `TAIL_BYTES`
    /// are ever shown.
    buf: Vec<u8>,
    /// Position of `buf[0]`.
    base: u64,
    /// Where each stream's stretch of `buf` begins, oldest first; the first
    /// may begin before `base`.
    runs: VecDeque<Run>,
    /// For a first run that began before `base`: whether `buf[0]` starts a
    /// line (the byte before it was a newline).
    base_starts_line: bool,
    /// Whether each stream's output so far ends with a newline.
    at_line_start: [bool; 2],
    /// The most lines [`Tail::lines`] returns.
    max_lines: usize,
}

#[derive(Debug, Clone, Copy)]
struct Run {
    start: u64,
    stream: Stream,
    /// The run's first byte begins a line of its stream.
    starts_line: bool,
}

/// One line being assembled: its bytes (from one or more runs of its
/// stream), whether its start fell out of the tail, whether a newline ended it.
#[derive(Debug, Default)]
struct Line {
    bytes: Vec<u8>,
    lost_start: bool,
    complete: bool,
}

fn index(stream: Stream) -> usize {
    match stream {
        Stream::Stdout => 0,
        Stream::Stderr => 1,
    }
}

impl Tail {
    pub(crate) fn new(max_lines: usize) -> Self {
        Tail {
            buf: Vec::new(),
            base: 0,
            runs: VecDeque::new(),
            base_starts_line: true,
            at_line_start: [true, true],
            max_lines,
        }
    }

    /// The position after everything pushed so far.
    pub(crate) fn mark(&self) -> LogMark {
        LogMark(self.end())
    }

    fn end(&self) -> u64 {
        self.base + self.buf.len() as u64
    }

    /// Records output just captured from `stream`.
    pub(crate) fn push(&mut self, stream: Stream, data: &[u8]) {
        let Some(&last) = data.last() else { return };
        if self.runs.back().map(|run| run.stream) != Some(stream) {
            self.runs.push_back(Run {
                start: self.end(),
                stream,
                starts_line: self.at_line_start[index(stream)],
            });
        }
        self.at_line_start[index(stream)] = last == b'\n';
        if data.len() >= TAIL_BYTES {
            let start = data.len() - TAIL_BYTES;
            let new_base = self.end() + start as u64;
            // With `start == 0` the new run begins at `base` and its own
            // `starts_line` applies.
            if start > 0 {
                self.base_starts_line = data[start - 1] == b'\n';
            }
            self.buf.clear();
            self.buf.extend_from_slice(&data[start..]);
            self.base = new_base;
            self.forget_runs_before_base();
        } else {
            let total = self.buf.len() + data.len();
            if total > 2 * TAIL_BYTES {
                self.drop_front(total - TAIL_BYTES);
            }
            self.buf.extend_from_slice(data);
        }
        while self.runs.len() > MAX_RUNS {
            let next = self.runs[1].start;
            // `next` is inside `buf`: only runs reaching into `buf` are kept.
            self.drop_front(usize::try_from(next - self.base).unwrap_or(self.buf.len()));
        }
    }

    /// Drops the first `n` bytes of `buf` (`n <= buf.len()`).
    fn drop_front(&mut self, n: usize) {
        if n == 0 {
            return;
        }
        self.base_starts_line = self.buf[n - 1] == b'\n';
        self.buf.drain(..n);
        self.base += n as u64;
        self.forget_runs_before_base();
    }

    /// Keeps only the run `base` falls in and those after it.
    fn forget_runs_before_base(&mut self) {
        while self.runs.len() >= 2 && self.runs[1].start <= self.base {
            self.runs.pop_front();
        }
    }

    /// The last `n` complete lines of the selected streams (at most
    /// `max_lines`), oldest first, plus a trailing partial line if there is
    /// one. Both streams are interleaved in arrival order. Invalid UTF-8
    /// becomes U+FFFD; a cut line is marked with `…` where it was cut.
    pub(crate) fn lines(&self, selection: Selection, n: usize) -> Vec<String> {
        self.lines_since(selection, LogMark(0), n)
    }

    /// [`Tail::lines`] of the output after `mark` only.
    pub(crate) fn lines_since(&self, selection: Selection, mark: LogMark, n: usize) -> Vec<String> {
        let n = n.min(self.max_lines);
        let shown = self.end().saturating_sub(TAIL_BYTES as u64).max(self.base);
        let from = mark.0.max(shown);
        // The last n + 1 lines, so a trailing partial line comes with n
        // complete ones.
        let mut lines: VecDeque<Line> = VecDeque::with_capacity(n + 2);
        let keep = |line: Line, lines: &mut VecDeque<Line>| {
            lines.push_back(line);
            if lines.len() > n + 1 {
                lines.pop_front();
            }
        };
        // Per stream: the line being assembled, and whether any of the
        // stream's output was shown yet.
        let mut current: [Option<Line>; 2] = [None, None];
        let mut seen = [false, false];
        let mut interleave = Interleave::default();
        for (i, run) in self.runs.iter().enumerate() {
            let end = self.runs.get(i + 1).map_or(self.end(), |next| next.start);
            let start = run.start.max(from);
            if start >= end || !selection.includes(run.stream) {
                continue;
            }
            let data = &self.buf[self.offset(start)..self.offset(end)];
            let slot = index(run.stream);
            if interleave.push(run.stream, data) {
                // The other stream's partial line ends here (see Interleave).
                if let Some(mut line) = current[1 - slot].take() {
                    line.complete = true;
                    keep(line, &mut lines);
                }
            }
            let starts_line = if start == run.start {
                run.starts_line
            } else if start == self.base {
                self.base_starts_line
            } else {
                self.buf[self.offset(start) - 1] == b'\n'
            };
            // A line that does not start here began before what is shown,
            // unless its start was shown (and cut by the other stream).
            let mut line = current[slot].take().unwrap_or_else(|| Line {
                lost_start: !starts_line && !seen[slot],
                ..Line::default()
            });
            seen[slot] = true;
            let mut piece_start = 0;
            for newline in memchr_iter(b'\n', data) {
                append_capped(&mut line.bytes, &data[piece_start..newline]);
                line.complete = true;
                keep(std::mem::take(&mut line), &mut lines);
                piece_start = newline + 1;
            }
            append_capped(&mut line.bytes, &data[piece_start..]);
            if !line.bytes.is_empty() || line.lost_start {
                current[slot] = Some(line);
            }
        }
        // At most one stream has an unfinished line: the one that wrote last
        // (a switch ends the other's).
        for line in current.into_iter().flatten() {
            keep(line, &mut lines);
        }
        let complete = lines.iter().filter(|line| line.complete).count();
        let skip = complete.saturating_sub(n);
        lines.iter().skip(skip).map(render).collect()
    }

    fn offset(&self, position: u64) -> usize {
        usize::try_from(position - self.base).expect("positions inside the tail fit in memory")
    }
}

/// Appends to a line being assembled, keeping one byte more than
/// [`TAIL_LINE_BYTES`] so `render` knows it was cut.
fn append_capped(line: &mut Vec<u8>, piece: &[u8]) {
    let room = (TAIL_LINE_BYTES + 4).saturating_sub(line.len());
    line.extend_from_slice(&piece[..piece.len().min(room)]);
}

/// One tail line as text: lossy UTF-8, cut to `TAIL_LINE_BYTES` on a character
/// boundary, with `…` where its start was lost or its end was cut.
fn render(line: &Line) -> String {
    let bytes = &line.bytes;
    let (bytes, cut_end) = if bytes.len() > TAIL_LINE_BYTES {
        let mut end = TAIL_LINE_BYTES;
        // Step back over UTF-8 continuation bytes (at most three) so a valid
        // character is not turned into U+FFFD by the cut.
        while end > TAIL_LINE_BYTES - 3 && (bytes[end] & 0xC0) == 0x80 {
            end -= 1;
        }
        (&bytes[..end], true)
    } else {
        (&bytes[..], false)
    };
    let text = String::from_utf8_lossy(bytes);
    let mut out = String::with_capacity(text.len() + 2 * CUT.len());
    if line.lost_start {
        out.push_str(CUT);
    }
    out.push_str(&text);
    if cut_end {
        out.push_str(CUT);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use Stream::{Stderr, Stdout};

    const BOTH: Selection = Selection::Both;
    const OUT: Selection = Selection::Only(Stdout);
    const ERR: Selection = Selection::Only(Stderr);

    fn tail_of(pushes: &[(Stream, &[u8])], max_lines: usize) -> Tail {
        let mut tail = Tail::new(max_lines);
        for (stream, data) in pushes {
            tail.push(*stream, data);
        }
        tail
    }

    #[test]
    fn lines_table() {
        struct Case {
            name: &'static str,
            pushes: &'static [(Stream, &'static [u8])],
            selection: Selection,
            n: usize,
            want: &'static [&'static str],
        }
        let cases = [
            Case {
                name: "empty",
                pushes: &[],
                selection: BOTH,
                n: 10,
                want: &[],
            },
            Case {
                name: "n larger than available",
                pushes: &[(Stdout, b"a\nb\n")],
                selection: BOTH,
                n: 10,
                want: &["a", "b"],
            },
            Case {
                name: "last n only",
                pushes: &[(Stdout, b"a\nb\nc\nd\n")],
                selection: OUT,
                n: 2,
                want: &["c", "d"],
            },
            Case {
                name: "partial line comes after n complete lines",
                pushes: &[(Stdout, b"a\nb\nc\npart")],
                selection: BOTH,
                n: 2,
                want: &["b", "c", "part"],
            },
            Case {
                name: "only a partial line",
                pushes: &[(Stderr, b"no newline yet")],
                selection: BOTH,
                n: 5,
                want: &["no newline yet"],
            },
            Case {
                name: "n zero gives only the partial line",
                pushes: &[(Stdout, b"a\nb")],
                selection: BOTH,
                n: 0,
                want: &["b"],
            },
            Case {
                name: "lines split across pushes",
                pushes: &[(Stdout, b"hel"), (Stdout, b"lo\nwor"), (Stdout, b"ld\n")],
                selection: BOTH,
                n: 5,
                want: &["hello", "world"],
            },
            Case {
                name: "empty lines are lines",
                pushes: &[(Stdout, b"\n\nx\n")],
                selection: BOTH,
                n: 5,
                want: &["", "", "x"],
            },
            Case {
                name: "invalid utf-8 is replaced, not fatal",
                pushes: &[(Stdout, b"ok\n\xff\xfebad\xc3\n\xe2\x82")],
                selection: BOTH,
                n: 5,
                want: &["ok", "\u{fffd}\u{fffd}bad\u{fffd}", "\u{fffd}"],
            },
            Case {
                name: "carriage returns are kept",
                pushes: &[(Stdout, b"dos\r\n")],
                selection: BOTH,
                n: 5,
                want: &["dos\r"],
            },
            Case {
                name: "both streams in arrival order",
                pushes: &[
                    (Stderr, b"[INFO] Booting worker\n"),
                    (Stdout, b"request 1\n"),
                    (Stderr, b"[ERROR] oops\n"),
                    (Stdout, b"request 2\n"),
                ],
                selection: BOTH,
                n: 10,
                want: &[
                    "[INFO] Booting worker",
                    "request 1",
                    "[ERROR] oops",
                    "request 2",
                ],
            },
            Case {
                name: "one stream of two",
                pushes: &[
                    (Stderr, b"e1\n"),
                    (Stdout, b"o1\n"),
                    (Stderr, b"e2\n"),
                    (Stdout, b"o2\n"),
                ],
                selection: ERR,
                n: 10,
                want: &["e1", "e2"],
            },
            Case {
                name: "a partial line is ended by the other stream and resumes",
                pushes: &[
                    (Stdout, b"progress 50%"),
                    (Stderr, b"warning\n"),
                    (Stdout, b" done\n"),
                ],
                selection: BOTH,
                n: 10,
                want: &["progress 50%", "warning", " done"],
            },
            Case {
                name: "the same, one stream: the line is whole",
                pushes: &[
                    (Stdout, b"progress 50%"),
                    (Stderr, b"warning\n"),
                    (Stdout, b" done\n"),
                ],
                selection: OUT,
                n: 10,
                want: &["progress 50% done"],
            },
            Case {
                name: "n counts interleaved lines",
                pushes: &[
                    (Stdout, b"o1\n"),
                    (Stderr, b"e1\n"),
                    (Stdout, b"o2\n"),
                    (Stderr, b"e2\npartial"),
                ],
                selection: BOTH,
                n: 2,
                want: &["o2", "e2", "partial"],
            },
        ];
        for case in cases {
            let tail = tail_of(case.pushes, 200);
            assert_eq!(
                tail.lines(case.selection, case.n),
                case.want,
                "case {:?}",
                case.name
            );
        }
    }

    #[test]
    fn max_lines_caps_n() {
        let tail = tail_of(&[(Stdout, b"a\nb\nc\n")], 2);
        assert_eq!(tail.lines(BOTH, 100), ["b", "c"]);
    }

    #[test]
    fn lines_since_a_mark_show_only_what_came_after() {
        let mut tail = Tail::new(200);
        tail.push(Stderr, b"first attempt failed\n");
        tail.push(Stdout, b"partial of the first");
        let mark = tail.mark();
        tail.push(Stdout, b" still\n");
        tail.push(Stderr, b"second attempt failed\n");
        assert_eq!(
            tail.lines_since(BOTH, mark, 10),
            ["… still", "second attempt failed"]
        );
        let mark = tail.mark();
        assert_eq!(tail.lines_since(BOTH, mark, 10), Vec::<String>::new());
    }

    #[test]
    fn lines_since_a_mark_leave_out_what_came_before() {
        let mut tail = Tail::new(10);
        tail.push(Stderr, b"attempt 1\nTraceback 1\n");
        let mark = tail.mark();
        assert_eq!(tail.lines_since(BOTH, mark, 5), Vec::<String>::new());
        tail.push(Stdout, b"attempt 2\n");
        tail.push(Stderr, b"Trace");
        tail.push(Stderr, b"back 2\n");
        assert_eq!(
            tail.lines_since(BOTH, mark, 5),
            ["attempt 2", "Traceback 2"]
        );
        assert_eq!(tail.lines_since(BOTH, mark, 1), ["Traceback 2"]);
        assert_eq!(tail.lines_since(ERR, mark, 5), ["Traceback 2"]);
        assert_eq!(tail.lines_since(BOTH, LogMark(0), 5).len(), 4);
        // A mark older than what the tail holds gives what it holds.
        let mut tail = Tail::new(10);
        tail.push(Stdout, &vec![b'x'; TAIL_BYTES]);
        tail.push(Stdout, b"\nlast\n");
        assert_eq!(tail.lines_since(BOTH, LogMark(1), 1), ["last"]);
    }

    #[test]
    fn memory_stays_bounded_and_newest_lines_survive() {
        let mut tail = Tail::new(200);
        let mut expected = Vec::new();
        for i in 0..100_000 {
            let (stream, prefix) = if i % 3 == 0 {
                (Stderr, "err")
            } else {
                (Stdout, "out")
            };
            let line = format!("{prefix} {i}\n");
            tail.push(stream, line.as_bytes());
            expected.push(format!("{prefix} {i}"));
            assert!(tail.buf.len() <= 2 * TAIL_BYTES);
            assert!(tail.runs.len() <= MAX_RUNS);
        }
        assert_eq!(tail.lines(BOTH, 200), expected[expected.len() - 200..]);
    }

    #[test]
    fn run_marks_stay_bounded_when_streams_alternate_byte_by_byte() {
        let mut tail = Tail::new(200);
        for i in 0..100_000 {
            let stream = if i % 2 == 0 { Stdout } else { Stderr };
            tail.push(stream, b"x");
            assert!(tail.runs.len() <= MAX_RUNS);
        }
        assert!(tail.buf.len() >= MAX_RUNS - 1);
        // Every switch inside a line breaks it: one "x" per line.
        assert!(tail.lines(BOTH, 5).iter().all(|line| line == "x"));
    }

    #[test]
    fn a_huge_push_keeps_only_its_end() {
        let mut data = Vec::new();
        for i in 0..50_000 {
            data.extend_from_slice(format!("{i}\n").as_bytes());
        }
        let mut tail = Tail::new(3);
        tail.push(Stderr, b"old\n");
        tail.push(Stdout, &data);
        assert_eq!(tail.buf.len(), TAIL_BYTES);
        assert_eq!(tail.runs.len(), 1);
        assert_eq!(tail.lines(BOTH, 3), ["49997", "49998", "49999"]);
    }

    #[test]
    fn a_long_line_is_cut_in_the_tail() {
        let mut long = vec![b'x'; TAIL_LINE_BYTES - 1];
        long.extend_from_slice("é".as_bytes()); // straddles the cut
        long.extend_from_slice(b"rest\n");
        let tail = tail_of(&[(Stdout, b"before\n"), (Stdout, &long)], 10);
        let lines = tail.lines(BOTH, 10);
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0], "before");
        let expected = format!("{}{CUT}", "x".repeat(TAIL_LINE_BYTES - 1));
        assert_eq!(lines[1], expected);
    }

    #[test]
    fn a_line_whose_start_fell_out_is_marked() {
        let mut line = vec![b'y'; TAIL_BYTES + 10];
        line.push(b'\n');
        let tail = tail_of(&[(Stdout, &line), (Stdout, b"next\n")], 10);
        let lines = tail.lines(BOTH, 10);
        assert_eq!(lines.len(), 2);
        assert!(lines[0].starts_with(CUT), "{:?}", &lines[0][..10]);
        assert!(lines[0].ends_with(CUT));
        assert_eq!(lines[1], "next");
    }

    #[test]
    fn trimming_keeps_line_boundaries() {
        // Push in sizes that make the trim point land on and off newlines.
        for size in [1, 7, 100, 4095, TAIL_BYTES - 1] {
            let mut tail = Tail::new(200);
            let mut all = Vec::new();
            for i in 0..20_000 {
                all.extend_from_slice(format!("{i:05}\n").as_bytes());
            }
            for piece in all.chunks(size) {
                tail.push(Stdout, piece);
            }
            let lines = tail.lines(BOTH, 200);
            assert_eq!(lines.len(), 200, "size {size}");
            assert_eq!(lines[0], "19800", "size {size}");
            assert_eq!(lines[199], "19999", "size {size}");
        }
    }
}
