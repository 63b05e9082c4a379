//! The in-memory tail of one stream: the most recent bytes, kept raw and split
//! into lines only when someone asks.
//!
//! Owns a bounded copy of recent output so `appctl logs` and the "last log
//! lines" of a failed start need no disk read. It must never grow beyond
//! [`TAIL_BYTES`] of live data, and must never do per-line work on the capture
//! path: a push is at most one bounded `memcpy`.

use memchr::memrchr;

/// Bytes of recent output kept per stream.
pub(crate) const TAIL_BYTES: usize = 64 * 1024;
/// A line longer than this is cut in the tail (never in the files).
pub(crate) const TAIL_LINE_BYTES: usize = 4 * 1024;
/// Marks where the tail cut a line.
const CUT: &str = "…";

#[derive(Debug)]
pub(crate) struct Tail {
    /// Recent output. Up to `2 * TAIL_BYTES` so that trimming (a `memmove`)
    /// happens once per `TAIL_BYTES` pushed, but only the last `TAIL_BYTES`
    /// are ever shown.
    buf: Vec<u8>,
    /// Whether `buf[0]` begins a line (stream start, or the byte before it
    /// was a newline).
    starts_line: bool,
    /// The most lines [`Tail::lines`] returns.
    max_lines: usize,
    /// Bytes pushed since the stream was opened: a [`Tail::mark`].
    pushed: u64,
}

impl Tail {
    pub(crate) fn new(max_lines: usize) -> Self {
        Tail {
            buf: Vec::new(),
            starts_line: true,
            max_lines,
            pushed: 0,
        }
    }

    /// Records output just written to the stream.
    pub(crate) fn push(&mut self, data: &[u8]) {
        self.pushed += data.len() as u64;
        if data.len() >= TAIL_BYTES {
            let start = data.len() - TAIL_BYTES;
            self.starts_line = match start {
                0 => self.buf.last().map_or(self.starts_line, |&b| b == b'\n'),
                _ => data[start - 1] == b'\n',
            };
            self.buf.clear();
            self.buf.extend_from_slice(&data[start..]);
            return;
        }
        let total = self.buf.len() + data.len();
        if total > 2 * TAIL_BYTES {
            // `data` is shorter than TAIL_BYTES, so `drop < buf.len()`.
            let drop = total - TAIL_BYTES;
            self.starts_line = self.buf[drop - 1] == b'\n';
            self.buf.drain(..drop);
        }
        self.buf.extend_from_slice(data);
    }

    /// The last `n` complete lines (at most `max_lines`), oldest first, plus
    /// the trailing partial line if there is one. Invalid UTF-8 becomes
    /// U+FFFD; a cut line is marked with `…` where it was cut.
    pub(crate) fn lines(&self, n: usize) -> Vec<String> {
        let (view, starts_line) = self.view();
        self.lines_of(view, starts_line, n)
    }

    /// Where the stream is now, for [`Tail::lines_since`].
    pub(crate) fn mark(&self) -> u64 {
        self.pushed
    }

    /// Like [`Tail::lines`], but only what was pushed after `mark` (as
    /// much of it as the tail still holds): one attempt's output, without
    /// what earlier attempts wrote.
    pub(crate) fn lines_since(&self, mark: u64, n: usize) -> Vec<String> {
        let (view, starts_line) = self.view();
        let view_start = self.pushed - view.len() as u64;
        match usize::try_from(mark.saturating_sub(view_start)) {
            Ok(0) => self.lines_of(view, starts_line, n),
            Ok(skip) if skip < view.len() => {
                self.lines_of(&view[skip..], view[skip - 1] == b'\n', n)
            }
            _ => Vec::new(),
        }
    }

    fn lines_of(&self, view: &[u8], starts_line: bool, n: usize) -> Vec<String> {
        let n = n.min(self.max_lines);
        let (complete, partial) = match memrchr(b'\n', view) {
            Some(i) => view.split_at(i + 1),
            None => view.split_at(0),
        };
        let mut lines = Vec::with_capacity(n + 1);
        let mut end = complete.len();
        while lines.len() < n && end > 0 {
            let newline = end - 1;
            let start = memrchr(b'\n', &complete[..newline]).map_or(0, |i| i + 1);
            lines.push(render(
                &complete[start..newline],
                start == 0 && !starts_line,
            ));
            end = start;
        }
        lines.reverse();
        if !partial.is_empty() {
            lines.push(render(partial, complete.is_empty() && !starts_line));
        }
        lines
    }

    /// The last `TAIL_BYTES` of `buf`, and whether they begin a line.
    fn view(&self) -> (&[u8], bool) {
        match self.buf.len().checked_sub(TAIL_BYTES) {
            Some(start) if start > 0 => (&self.buf[start..], self.buf[start - 1] == b'\n'),
            _ => (&self.buf, self.starts_line),
        }
    }
}

/// One tail line as text: lossy UTF-8, cut to `TAIL_LINE_BYTES` on a character
/// boundary, with `…` where its start was lost or its end was cut.
fn render(line: &[u8], lost_start: bool) -> String {
    let (line, cut_end) = if line.len() > TAIL_LINE_BYTES {
        let mut end = TAIL_LINE_BYTES;
        // Step back over UTF-8 continuation bytes (at most three) so a valid
        // character is not turned into U+FFFD by the cut.
        while end > TAIL_LINE_BYTES - 3 && (line[end] & 0xC0) == 0x80 {
            end -= 1;
        }
        (&line[..end], true)
    } else {
        (line, false)
    };
    let text = String::from_utf8_lossy(line);
    let mut out = String::with_capacity(text.len() + 2 * CUT.len());
    if lost_start {
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

    fn tail_of(pushes: &[&[u8]], max_lines: usize, n: usize) -> Vec<String> {
        let mut tail = Tail::new(max_lines);
        for p in pushes {
            tail.push(p);
        }
        tail.lines(n)
    }

    #[test]
    fn lines_since_a_mark_leave_out_what_came_before() {
        let mut tail = Tail::new(10);
        tail.push(b"attempt 1\nTraceback 1\n");
        let mark = tail.mark();
        assert_eq!(tail.lines_since(mark, 5), Vec::<String>::new());
        tail.push(b"attempt 2\nTrace");
        tail.push(b"back 2\n");
        assert_eq!(tail.lines_since(mark, 5), ["attempt 2", "Traceback 2"]);
        assert_eq!(tail.lines_since(mark, 1), ["Traceback 2"]);
        assert_eq!(tail.lines_since(0, 5).len(), 4);
        // A mark older than what the tail holds gives what it holds.
        let mut tail = Tail::new(10);
        tail.push(&vec![b'x'; TAIL_BYTES]);
        tail.push(b"\nlast\n");
        assert_eq!(tail.lines_since(1, 1), ["last"]);
    }

    #[test]
    fn lines_table() {
        struct Case {
            name: &'static str,
            pushes: &'static [&'static [u8]],
            max_lines: usize,
            n: usize,
            want: &'static [&'static str],
        }
        let cases = [
            Case {
                name: "empty",
                pushes: &[],
                max_lines: 200,
                n: 10,
                want: &[],
            },
            Case {
                name: "n larger than available",
                pushes: &[b"a\nb\n"],
                max_lines: 200,
                n: 10,
                want: &["a", "b"],
            },
            Case {
                name: "last n only",
                pushes: &[b"a\nb\nc\nd\n"],
                max_lines: 200,
                n: 2,
                want: &["c", "d"],
            },
            Case {
                name: "partial line comes after n complete lines",
                pushes: &[b"a\nb\nc\npart"],
                max_lines: 200,
                n: 2,
                want: &["b", "c", "part"],
            },
            Case {
                name: "only a partial line",
                pushes: &[b"no newline yet"],
                max_lines: 200,
                n: 5,
                want: &["no newline yet"],
            },
            Case {
                name: "n zero gives only the partial line",
                pushes: &[b"a\nb"],
                max_lines: 200,
                n: 0,
                want: &["b"],
            },
            Case {
                name: "lines split across pushes",
                pushes: &[b"hel", b"lo\nwor", b"ld\n"],
                max_lines: 200,
                n: 5,
                want: &["hello", "world"],
            },
            Case {
                name: "empty lines are lines",
                pushes: &[b"\n\nx\n"],
                max_lines: 200,
                n: 5,
                want: &["", "", "x"],
            },
            Case {
                name: "max_lines caps n",
                pushes: &[b"a\nb\nc\n"],
                max_lines: 2,
                n: 100,
                want: &["b", "c"],
            },
            Case {
                name: "invalid utf-8 is replaced, not fatal",
                pushes: &[b"ok\n\xff\xfebad\xc3\n\xe2\x82"],
                max_lines: 200,
                n: 5,
                want: &["ok", "\u{fffd}\u{fffd}bad\u{fffd}", "\u{fffd}"],
            },
            Case {
                name: "carriage returns are kept",
                pushes: &[b"dos\r\n"],
                max_lines: 200,
                n: 5,
                want: &["dos\r"],
            },
        ];
        for case in cases {
            assert_eq!(
                tail_of(case.pushes, case.max_lines, case.n),
                case.want,
                "case {:?}",
                case.name
            );
        }
    }

    #[test]
    fn memory_stays_bounded_and_newest_lines_survive() {
        let mut tail = Tail::new(200);
        let mut expected = Vec::new();
        for i in 0..100_000 {
            let line = format!("line {i}\n");
            tail.push(line.as_bytes());
            expected.push(format!("line {i}"));
            assert!(tail.buf.len() <= 2 * TAIL_BYTES);
        }
        assert_eq!(tail.lines(200), expected[expected.len() - 200..]);
    }

    #[test]
    fn a_huge_push_keeps_only_its_end() {
        let mut data = Vec::new();
        for i in 0..50_000 {
            data.extend_from_slice(format!("{i}\n").as_bytes());
        }
        let mut tail = Tail::new(3);
        tail.push(b"old\n");
        tail.push(&data);
        assert_eq!(tail.buf.len(), TAIL_BYTES);
        assert_eq!(tail.lines(3), ["49997", "49998", "49999"]);
    }

    #[test]
    fn a_long_line_is_cut_in_the_tail() {
        let mut tail = Tail::new(10);
        let mut long = vec![b'x'; TAIL_LINE_BYTES - 1];
        long.extend_from_slice("é".as_bytes()); // straddles the cut
        long.extend_from_slice(b"rest\n");
        tail.push(b"before\n");
        tail.push(&long);
        let lines = tail.lines(10);
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0], "before");
        let expected = format!("{}{CUT}", "x".repeat(TAIL_LINE_BYTES - 1));
        assert_eq!(lines[1], expected);
    }

    #[test]
    fn a_line_whose_start_fell_out_is_marked() {
        let mut tail = Tail::new(10);
        let mut line = vec![b'y'; TAIL_BYTES + 10];
        line.push(b'\n');
        tail.push(&line);
        tail.push(b"next\n");
        let lines = tail.lines(10);
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
                tail.push(piece);
            }
            let lines = tail.lines(200);
            assert_eq!(lines.len(), 200, "size {size}");
            assert_eq!(lines[0], "19800", "size {size}");
            assert_eq!(lines[199], "19999", "size {size}");
        }
    }
}
