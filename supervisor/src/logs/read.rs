//! `logs -n N` from the files: the last N lines of one stream, or of both
//! interleaved in arrival order, handed out in pieces with a fixed memory
//! budget whatever N and the line lengths are.
//!
//! Owns reading snapshots of the files and their indexes (see
//! [`super::order`]). It must never hold more than one scan block, one
//! [`PIECE`] and one index block per stream, and never read more than
//! [`READ_LAST_MAX_BYTES`] to find where the lines begin. Every call does
//! blocking file I/O: call it from `spawn_blocking`.
//!
//! Two passes. The first walks the runs of both streams backwards, newest
//! first by stamp, counting newlines (and the line breaks the interleave
//! rule adds between streams) until it has N + 1: that is where the output
//! starts, one position per stream. The second walks forwards from there,
//! oldest first by stamp, and hands out the bytes in pieces of at most
//! [`PIECE`] bytes.

use std::io;
use std::os::unix::fs::FileExt;

use bytes::{BufMut, Bytes, BytesMut};
use memchr::memrchr_iter;

use super::file::FilesSnapshot;
use super::order::{self, Interleave, RECORD, UNKNOWN};
use super::Stream;

/// The most bytes the first pass reads, so a request for a hundred thousand
/// lines of a chatty app cannot make the daemon read all its files.
pub const READ_LAST_MAX_BYTES: usize = 64 * 1024 * 1024;
/// The largest piece [`LogReader::next_piece`] returns.
pub const PIECE: usize = 16 * 1024;
/// Bytes the first pass reads at once.
const SCAN_BLOCK: usize = 32 * 1024;
/// Index records read at once.
const INDEX_BLOCK: u64 = 256;

/// The files of the selected streams at one instant (see
/// [`super::AppLogs::snapshot`]).
#[derive(Debug)]
pub struct LogSnapshot {
    cursors: Vec<Cursor>,
}

impl LogSnapshot {
    pub(crate) fn new(streams: Vec<(Stream, FilesSnapshot)>) -> LogSnapshot {
        LogSnapshot {
            cursors: streams
                .into_iter()
                .enumerate()
                .map(|(rank, (stream, files))| Cursor {
                    stream,
                    rank,
                    files,
                    cache: RecordCache::default(),
                })
                .collect(),
        }
    }

    /// A reader positioned at the start of the last `n` complete lines, plus
    /// a trailing partial line. Blocking file I/O.
    pub fn last_lines(mut self, n: usize) -> io::Result<LogReader> {
        let starts = find_start(&mut self.cursors, n)?;
        let mut positions = Vec::with_capacity(starts.len());
        for (cursor, start) in self.cursors.iter_mut().zip(starts) {
            positions.push(match start {
                Some((at, offset)) => Some(Position {
                    at,
                    segment: cursor.segment(at)?,
                    offset,
                }),
                None => None,
            });
        }
        Ok(LogReader {
            cursors: self.cursors,
            positions,
            interleave: Interleave::default(),
        })
    }
}

/// Hands out the output found by [`LogSnapshot::last_lines`].
#[derive(Debug)]
pub struct LogReader {
    cursors: Vec<Cursor>,
    positions: Vec<Option<Position>>,
    interleave: Interleave,
}

impl LogReader {
    /// The next piece of output, at most [`PIECE`] bytes (plus a line break
    /// the interleave rule adds); `None` at the end. Blocking file I/O.
    pub fn next_piece(&mut self) -> io::Result<Option<Bytes>> {
        let mut out = BytesMut::new();
        while out.len() < PIECE {
            let next = (0..self.cursors.len())
                .filter_map(|c| Some((c, self.positions[c]?)))
                .min_by_key(|(c, p)| (p.segment.stamp, self.cursors[*c].rank));
            let Some((c, mut position)) = next else { break };
            if position.offset >= position.segment.end {
                self.positions[c] =
                    self.cursors[c]
                        .next_nonempty(position.at)?
                        .map(|(at, segment)| Position {
                            at,
                            segment,
                            offset: segment.start,
                        });
                continue;
            }
            if out.capacity() == 0 {
                out.reserve(PIECE + 1);
            }
            let cursor = &self.cursors[c];
            if self.interleave.before(cursor.stream) {
                out.put_u8(b'\n');
            }
            let want = usize::try_from(position.segment.end - position.offset)
                .unwrap_or(usize::MAX)
                .min(PIECE.saturating_sub(out.len()).max(1));
            let base = out.len();
            out.resize(base + want, 0);
            cursor.files.files[position.at.file]
                .file
                .read_exact_at(&mut out[base..], position.offset)?;
            self.interleave.after(&out[base..]);
            position.offset += want as u64;
            self.positions[c] = Some(position);
        }
        Ok((!out.is_empty()).then(|| out.freeze()))
    }

    /// Where the interleave rule stands after the last piece, for live
    /// output that follows.
    pub fn interleave(&self) -> Interleave {
        self.interleave
    }

    /// Everything, for tests and small reads.
    pub fn read_to_end(mut self) -> io::Result<Vec<u8>> {
        let mut all = Vec::new();
        while let Some(piece) = self.next_piece()? {
            all.extend_from_slice(&piece);
        }
        Ok(all)
    }
}

/// One stream's files, walked segment by segment. Segment `s` of a file
/// with `m` index records is the range its record `s` ends (`s < m`) or,
/// for `s == m`, the rest of the file after the last record.
#[derive(Debug)]
struct Cursor {
    stream: Stream,
    /// Breaks ties between equal stamps (files without an index).
    rank: usize,
    files: FilesSnapshot,
    cache: RecordCache,
}

/// A segment of a file: bytes `start..end`, from the run `stamp`.
#[derive(Debug, Clone, Copy)]
struct Segment {
    start: u64,
    end: u64,
    stamp: u64,
}

/// A segment's place: file (0 is the newest) and segment number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct At {
    file: usize,
    segment: u64,
}

#[derive(Debug, Clone, Copy)]
struct Position {
    at: At,
    segment: Segment,
    /// The next byte to hand out.
    offset: u64,
}

impl Cursor {
    fn records(&self, file: usize) -> u64 {
        self.files.files[file].index.as_ref().map_or(0, |(_, n)| *n)
    }

    fn segment(&mut self, at: At) -> io::Result<Segment> {
        let len = self.files.files[at.file].len;
        let records = self.records(at.file);
        let (stamp, end) = if at.segment < records {
            let (stamp, end) = self.record(at.file, at.segment)?;
            (stamp, end.min(len))
        } else {
            let stamp = match (at.file, self.files.open_run) {
                (0, Some(open)) => open,
                _ if records > 0 => self.record(at.file, records - 1)?.0,
                _ => UNKNOWN,
            };
            (stamp, len)
        };
        let start = if at.segment == 0 {
            0
        } else {
            self.record(at.file, at.segment - 1)?.1.min(end)
        };
        Ok(Segment { start, end, stamp })
    }

    fn record(&mut self, file: usize, record: u64) -> io::Result<(u64, u64)> {
        let records = self.records(file);
        let Some((index, _)) = self.files.files[file].index.as_ref() else {
            return Ok((UNKNOWN, 0));
        };
        self.cache.get(file, index, records, record)
    }

    fn last(&self) -> Option<At> {
        (!self.files.files.is_empty()).then(|| At {
            file: 0,
            segment: self.records(0),
        })
    }

    /// The segment before `at` (older).
    fn prev(&self, at: At) -> Option<At> {
        if at.segment > 0 {
            Some(At {
                segment: at.segment - 1,
                ..at
            })
        } else if at.file + 1 < self.files.files.len() {
            Some(At {
                file: at.file + 1,
                segment: self.records(at.file + 1),
            })
        } else {
            None
        }
    }

    /// The segment after `at` (newer).
    fn next(&self, at: At) -> Option<At> {
        if at.segment < self.records(at.file) {
            Some(At {
                segment: at.segment + 1,
                ..at
            })
        } else if at.file > 0 {
            Some(At {
                file: at.file - 1,
                segment: 0,
            })
        } else {
            None
        }
    }

    /// The newest non-empty segment at or before `at`.
    fn prev_nonempty(&mut self, mut at: Option<At>) -> io::Result<Option<(At, Segment)>> {
        while let Some(here) = at {
            let segment = self.segment(here)?;
            if segment.end > segment.start {
                return Ok(Some((here, segment)));
            }
            at = self.prev(here);
        }
        Ok(None)
    }

    /// The oldest non-empty segment after `at`.
    fn next_nonempty(&mut self, at: At) -> io::Result<Option<(At, Segment)>> {
        let mut at = self.next(at);
        while let Some(here) = at {
            let segment = self.segment(here)?;
            if segment.end > segment.start {
                return Ok(Some((here, segment)));
            }
            at = self.next(here);
        }
        Ok(None)
    }

    fn read_at(&self, file: usize, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.files.files[file].file.read_exact_at(buf, offset)
    }
}

/// One block of one file's index records.
#[derive(Debug, Default)]
struct RecordCache {
    file: usize,
    first: u64,
    bytes: Vec<u8>,
}

impl RecordCache {
    fn get(
        &mut self,
        file: usize,
        index: &std::fs::File,
        records: u64,
        record: u64,
    ) -> io::Result<(u64, u64)> {
        let cached = self.bytes.len() as u64 / RECORD as u64;
        if self.file != file || record < self.first || record >= self.first + cached {
            let first = record / INDEX_BLOCK * INDEX_BLOCK;
            let count = INDEX_BLOCK.min(records - first);
            self.bytes.resize(count as usize * RECORD, 0);
            index.read_exact_at(&mut self.bytes, first * RECORD as u64)?;
            self.file = file;
            self.first = first;
        }
        let at = (record - self.first) as usize * RECORD;
        Ok(order::decode(&self.bytes[at..at + RECORD]))
    }
}

/// The first pass: per stream, the position the output starts at (`None`:
/// nothing of that stream).
fn find_start(cursors: &mut [Cursor], n: usize) -> io::Result<Vec<Option<(At, u64)>>> {
    let mut heads = Vec::with_capacity(cursors.len());
    for cursor in cursors.iter_mut() {
        let last = cursor.last();
        heads.push(cursor.prev_nonempty(last)?);
    }
    let mut starts: Vec<Option<(At, u64)>> = vec![None; cursors.len()];
    let mut newlines = 0;
    let mut budget = READ_LAST_MAX_BYTES;
    // The cursor whose segment came just after (newer than) the current one.
    let mut newer: Option<usize> = None;
    let mut block = Vec::new();
    loop {
        let Some(c) = (0..cursors.len())
            .filter(|&c| heads[c].is_some())
            .max_by_key(|&c| {
                let (_, segment) = heads[c].expect("filtered");
                (segment.stamp, cursors[c].rank)
            })
        else {
            return Ok(starts);
        };
        let (at, segment) = heads[c].expect("filtered");
        let cursor = &mut cursors[c];
        if newer.is_some_and(|newer| newer != c) {
            // The interleave rule puts a line break after this segment if
            // it ends inside a line.
            let mut last = [0u8; 1];
            cursor.read_at(at.file, &mut last, segment.end - 1)?;
            if last[0] != b'\n' {
                newlines += 1;
                if newlines > n {
                    starts[c] = Some((at, segment.end));
                    return Ok(starts);
                }
            }
        }
        let mut end = segment.end;
        while end > segment.start {
            if budget == 0 {
                // Enough read: the output starts inside this line.
                starts[c] = Some((at, end));
                return Ok(starts);
            }
            let len = usize::try_from(end - segment.start)
                .unwrap_or(usize::MAX)
                .min(SCAN_BLOCK)
                .min(budget);
            if block.is_empty() {
                block.resize(SCAN_BLOCK, 0);
            }
            let from = end - len as u64;
            cursor.read_at(at.file, &mut block[..len], from)?;
            budget -= len;
            for i in memrchr_iter(b'\n', &block[..len]) {
                newlines += 1;
                if newlines > n {
                    starts[c] = Some((at, from + i as u64 + 1));
                    return Ok(starts);
                }
            }
            end = from;
        }
        starts[c] = Some((at, segment.start));
        newer = Some(c);
        let prev = cursor.prev(at);
        heads[c] = cursor.prev_nonempty(prev)?;
    }
}

#[cfg(test)]
mod tests {
    use std::fs::File;
    use std::io::Write;

    use super::*;
    use crate::logs::file::FileSnapshot;

    /// One file: content and, if indexed, its records `(stamp, end)`.
    struct TestFile {
        content: &'static [u8],
        records: Option<&'static [(u64, u64)]>,
    }

    fn plain(content: &'static [u8]) -> TestFile {
        TestFile {
            content,
            records: None,
        }
    }

    fn indexed(content: &'static [u8], records: &'static [(u64, u64)]) -> TestFile {
        TestFile {
            content,
            records: Some(records),
        }
    }

    fn file_with(dir: &std::path::Path, name: &str, bytes: &[u8]) -> File {
        let path = dir.join(name);
        File::create(&path).unwrap().write_all(bytes).unwrap();
        File::open(&path).unwrap()
    }

    /// Files newest first, per stream, with the open run's stamp.
    fn snapshot(
        dir: &std::path::Path,
        streams: &[(Stream, &[TestFile], Option<u64>)],
    ) -> LogSnapshot {
        let mut all = Vec::new();
        for (s, (stream, files, open_run)) in streams.iter().enumerate() {
            let mut snaps = Vec::new();
            for (i, test) in files.iter().enumerate() {
                let file = file_with(dir, &format!("{s}-{i}"), test.content);
                let index = test.records.map(|records| {
                    let mut bytes = Vec::new();
                    for (stamp, end) in records {
                        bytes.extend_from_slice(&order::encode(*stamp, *end));
                    }
                    (
                        file_with(dir, &format!("{s}-{i}.idx"), &bytes),
                        records.len() as u64,
                    )
                });
                snaps.push(FileSnapshot {
                    file,
                    len: test.content.len() as u64,
                    index,
                });
            }
            all.push((
                *stream,
                FilesSnapshot {
                    files: snaps,
                    open_run: *open_run,
                },
            ));
        }
        LogSnapshot::new(all)
    }

    fn last(streams: &[(Stream, &[TestFile], Option<u64>)], n: usize) -> String {
        let dir = tempfile::tempdir().unwrap();
        let bytes = snapshot(dir.path(), streams)
            .last_lines(n)
            .unwrap()
            .read_to_end()
            .unwrap();
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn one_stream_table() {
        use Stream::Stdout as S;
        let table: &[(&str, &[TestFile], usize, &str)] = &[
            ("no files", &[], 3, ""),
            ("fewer lines than asked", &[plain(b"a\nb\n")], 10, "a\nb\n"),
            (
                "across a rotation boundary",
                &[plain(b"e\nf\n"), plain(b"c\nd\n"), plain(b"a\nb\n")],
                3,
                "d\ne\nf\n",
            ),
            (
                "partial trailing line comes after n lines",
                &[plain(b"c\npar"), plain(b"a\nb\n")],
                2,
                "b\nc\npar",
            ),
            (
                "a line continued across files",
                &[plain(b"tail\nz\n"), plain(b"x\nhead-")],
                2,
                "head-tail\nz\n",
            ),
            (
                "empty current file",
                &[plain(b""), plain(b"a\nb\n")],
                1,
                "b\n",
            ),
            ("n zero: only the partial line", &[plain(b"a\nb")], 0, "b"),
            ("n zero, no partial line", &[plain(b"a\nb\n")], 0, ""),
            ("empty lines are lines", &[plain(b"\n\nx\n")], 2, "\nx\n"),
        ];
        for (name, files, n, want) in table {
            assert_eq!(last(&[(S, files, None)], *n), *want, "case {name:?}");
        }
    }

    #[test]
    fn both_streams_interleave_by_stamp() {
        use Stream::{Stderr, Stdout};
        // stdout: "o1\n" (stamp 10) "o2\n" (30), open run "o3\n" (50)
        // stderr: "e1\n" (20) "e2\n" (40)
        let out = [indexed(b"o1\no2\no3\n", &[(10, 3), (30, 6)])];
        let err = [indexed(b"e1\ne2\n", &[(20, 3), (40, 6)])];
        let streams = [(Stdout, &out[..], Some(50)), (Stderr, &err[..], Some(40))];
        assert_eq!(last(&streams, 100), "o1\ne1\no2\ne2\no3\n");
        assert_eq!(last(&streams, 3), "o2\ne2\no3\n");
        assert_eq!(last(&streams, 1), "o3\n");
    }

    #[test]
    fn a_partial_line_cut_by_the_other_stream_gets_a_break() {
        use Stream::{Stderr, Stdout};
        // stdout "50%" (10), stderr "warn\n" (20), stdout " done\n" (30)
        let out = [indexed(b"50% done\n", &[(10, 3)])];
        let err = [indexed(b"warn\n", &[(20, 5)])];
        let streams = [(Stdout, &out[..], Some(30)), (Stderr, &err[..], None)];
        assert_eq!(last(&streams, 10), "50%\nwarn\n done\n");
        // The break counts as a line end.
        assert_eq!(last(&streams, 2), "warn\n done\n");
        assert_eq!(last(&streams, 1), " done\n");
        // One stream alone: the line is whole.
        assert_eq!(last(&[(Stdout, &out[..], Some(30))], 10), "50% done\n");
    }

    #[test]
    fn runs_spanning_rotated_files_keep_their_place() {
        use Stream::{Stderr, Stdout};
        // stdout run 10 fills file .1 and continues in the current file;
        // then stderr (20); then stdout again (30).
        let out = [indexed(b"b\nd\n", &[(10, 2)]), indexed(b"a\n", &[(10, 2)])];
        let err = [indexed(b"c\n", &[(20, 2)])];
        let streams = [(Stdout, &out[..], Some(30)), (Stderr, &err[..], None)];
        assert_eq!(last(&streams, 10), "a\nb\nc\nd\n");
    }

    #[test]
    fn unindexed_files_come_first_stream_by_stream() {
        use Stream::{Stderr, Stdout};
        let out = [plain(b"o\n")];
        let err = [plain(b"e\n")];
        let streams = [(Stdout, &out[..], None), (Stderr, &err[..], None)];
        assert_eq!(last(&streams, 10), "o\ne\n");
    }

    #[test]
    fn an_index_reaching_past_its_file_loses_no_byte() {
        use Stream::{Stderr, Stdout};
        // The file was truncated behind the daemon's back (copytruncate):
        // records past its end are cut to it; every byte still comes once.
        let out = [indexed(b"o1\no2\n", &[(10, 3), (50, 999), (70, 2000)])];
        let err = [indexed(b"e1\n", &[(20, 3)])];
        let streams = [(Stdout, &out[..], Some(90)), (Stderr, &err[..], None)];
        assert_eq!(last(&streams, 100), "o1\ne1\no2\n");
    }

    #[test]
    fn memory_is_bounded_whatever_the_line_lengths() {
        // 8 MiB in one line: pieces are PIECE bytes, the result whole.
        let dir = tempfile::tempdir().unwrap();
        let line = vec![b'x'; 8 << 20];
        let file = file_with(dir.path(), "big", &line);
        let snapshot = LogSnapshot::new(vec![(
            Stream::Stdout,
            FilesSnapshot {
                files: vec![FileSnapshot {
                    file,
                    len: line.len() as u64,
                    index: None,
                }],
                open_run: None,
            },
        )]);
        let mut reader = snapshot.last_lines(100_000).unwrap();
        let mut total = 0;
        while let Some(piece) = reader.next_piece().unwrap() {
            assert!(piece.len() <= PIECE);
            total += piece.len();
        }
        assert_eq!(total, line.len());
    }

    #[test]
    fn the_first_pass_reads_at_most_its_budget() {
        let dir = tempfile::tempdir().unwrap();
        let size = READ_LAST_MAX_BYTES + (1 << 20);
        let mut content = vec![b'y'; size];
        content[size - 1] = b'\n';
        let file = file_with(dir.path(), "huge", &content);
        let snapshot = LogSnapshot::new(vec![(
            Stream::Stdout,
            FilesSnapshot {
                files: vec![FileSnapshot {
                    file,
                    len: size as u64,
                    index: None,
                }],
                open_run: None,
            },
        )]);
        let out = snapshot.last_lines(10).unwrap().read_to_end().unwrap();
        assert_eq!(out.len(), READ_LAST_MAX_BYTES);
    }

    #[test]
    fn reads_many_lines_across_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let mut content = String::new();
        for i in 0..100_000 {
            content.push_str(&format!("line {i}\n"));
        }
        let file = file_with(dir.path(), "many", content.as_bytes());
        let snapshot = LogSnapshot::new(vec![(
            Stream::Stdout,
            FilesSnapshot {
                files: vec![FileSnapshot {
                    file,
                    len: content.len() as u64,
                    index: None,
                }],
                open_run: None,
            },
        )]);
        let out = snapshot.last_lines(20_000).unwrap().read_to_end().unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 20_000);
        assert_eq!(lines[0], "line 80000");
        assert_eq!(lines[19_999], "line 99999");
    }
}
