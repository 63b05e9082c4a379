//! Over-long lines: a line longer than [`MAX_LINE`] bytes is cut, and the
//! cut piece ends with [`CONTINUED`], so every line in the files, the tail
//! and a follower's stream is bounded whatever the app writes (300 MB
//! without a newline included), and rotation always finds a line boundary.
//!
//! Owns one stream's count of bytes since its last newline. It must never
//! scan a chunk more than about twice: it jumps from window to window with
//! `memrchr`, so ordinary output with short lines costs a few calls per
//! chunk, not one per line.

use bytes::{Bytes, BytesMut};
use memchr::memrchr;

/// The longest line kept whole, in bytes (journald's `LineMax` is 48 KiB).
pub const MAX_LINE: usize = 64 * 1024;
/// Ends each piece of a line cut at [`MAX_LINE`]: the line continues on the
/// next line.
pub const CONTINUED: &[u8] = "…\n".as_bytes();

/// Cuts one stream's over-long lines.
#[derive(Debug, Default)]
pub(crate) struct LineSplitter {
    /// Bytes since the stream's last newline.
    line_len: usize,
}

impl LineSplitter {
    /// `data` with a [`CONTINUED`] mark after every [`MAX_LINE`] bytes of a
    /// line (stepping back to a UTF-8 character boundary when there is one
    /// within three bytes). Returns `data` itself when nothing is cut.
    pub(crate) fn split(&mut self, data: Bytes) -> Bytes {
        let mut out: Option<BytesMut> = None;
        // `data[..copied]` is in `out`; the current line began
        // `run` bytes before `pos`.
        let mut copied = 0;
        let mut pos = 0;
        let mut run = self.line_len;
        while pos < data.len() {
            let room = MAX_LINE.saturating_sub(run);
            // A line of exactly MAX_LINE bytes keeps its newline, at `pos + room`.
            let window_end = data.len().min(pos + room + 1);
            if let Some(i) = memrchr(b'\n', &data[pos..window_end]) {
                pos += i + 1;
                run = 0;
                continue;
            }
            if pos + room >= data.len() {
                run += data.len() - pos;
                break;
            }
            let cut = char_boundary(&data, pos, pos + room);
            let out = out.get_or_insert_with(|| BytesMut::with_capacity(data.len() + 64));
            out.extend_from_slice(&data[copied..cut]);
            out.extend_from_slice(CONTINUED);
            copied = cut;
            pos = cut;
            run = 0;
        }
        self.line_len = run;
        match out {
            None => data,
            Some(mut out) => {
                out.extend_from_slice(&data[copied..]);
                out.freeze()
            }
        }
    }
}

/// `cut`, or up to three bytes before it so a UTF-8 character is not split,
/// but never `from` or before (binary output is cut where it is).
fn char_boundary(data: &[u8], from: usize, cut: usize) -> usize {
    let is_continuation = |b: u8| b & 0xC0 == 0x80;
    (cut.saturating_sub(3).max(from + 1)..=cut)
        .rev()
        .find(|&i| !is_continuation(data[i]))
        .unwrap_or(cut)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split_all(pieces: &[&[u8]]) -> Vec<u8> {
        let mut splitter = LineSplitter::default();
        let mut out = Vec::new();
        for piece in pieces {
            out.extend_from_slice(&splitter.split(Bytes::copy_from_slice(piece)));
        }
        out
    }

    #[test]
    fn short_lines_pass_untouched_and_uncopied() {
        let data = Bytes::from("a\nbb\n".repeat(50_000));
        let mut splitter = LineSplitter::default();
        let out = splitter.split(data.clone());
        assert_eq!(out.as_ptr(), data.as_ptr(), "no copy");
        assert_eq!(splitter.line_len, 0);
    }

    #[test]
    fn a_line_of_exactly_max_line_bytes_is_whole() {
        let mut line = vec![b'x'; MAX_LINE];
        line.push(b'\n');
        assert_eq!(split_all(&[&line]), line);
        // Also when its newline comes in the next chunk.
        assert_eq!(split_all(&[&line[..MAX_LINE], b"\n"]), line);
    }

    #[test]
    fn a_long_line_is_cut_every_max_line_bytes_and_marked() {
        let data = vec![0u8; 3 * MAX_LINE + 5];
        let out = split_all(&[&data]);
        let pieces: Vec<&[u8]> = out.split_inclusive(|&b| b == b'\n').collect();
        assert_eq!(pieces.len(), 4);
        for piece in &pieces[..3] {
            assert_eq!(piece.len(), MAX_LINE + CONTINUED.len());
            assert!(piece.ends_with(CONTINUED));
        }
        assert_eq!(pieces[3], &[0u8; 5][..]);
    }

    #[test]
    fn cuts_follow_the_line_across_chunks() {
        // 300 chunks of 1000 bytes, no newline: cut every MAX_LINE bytes of
        // the line, wherever the chunk boundaries are.
        let chunk = [b'y'; 1000];
        let chunks: Vec<&[u8]> = (0..300).map(|_| &chunk[..]).collect();
        let out = split_all(&chunks);
        let lines: Vec<&[u8]> = out.split(|&b| b == b'\n').collect();
        assert_eq!(lines.len(), 300_000 / MAX_LINE + 1);
        for line in &lines[..lines.len() - 1] {
            assert_eq!(line.len(), MAX_LINE + CONTINUED.len() - 1);
        }
        let kept: usize = lines.iter().map(|l| l.len()).sum::<usize>()
            - (lines.len() - 1) * (CONTINUED.len() - 1);
        assert_eq!(kept, 300_000, "no byte lost");
    }

    #[test]
    fn a_newline_resets_the_count() {
        let mut data = vec![b'a'; MAX_LINE - 1];
        data.push(b'\n');
        data.extend(vec![b'b'; MAX_LINE]);
        data.push(b'\n');
        assert_eq!(split_all(&[&data]), data);
    }

    #[test]
    fn a_cut_never_splits_a_utf8_character() {
        let mut data = vec![b'a'; MAX_LINE - 1];
        data.extend_from_slice("é".as_bytes()); // bytes MAX_LINE-1 and MAX_LINE
        data.extend_from_slice(b"rest\n");
        let out = split_all(&[&data]);
        let text = std::str::from_utf8(&out).expect("still valid UTF-8");
        let first = text.lines().next().unwrap();
        assert_eq!(first.len(), MAX_LINE - 1 + "…".len());
        assert!(text.ends_with("érest\n"));
    }
}
