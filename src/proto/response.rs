//! Response framing: splitting the byte stream into lines, status lines, and multi-line bodies
//! with dot-unstuffing.
//!
//! Line rules follow CPython's `poplib` exactly so results are byte-identical: a line ends at
//! LF; `...CRLF` loses the CRLF, `CR...LF` loses both the leading CR and the LF, anything else
//! loses the LF. A body line starting with `..` loses one dot, and its octet count one byte.
//! The body ends at a line that is exactly `.` after stripping.

use super::ProtoError;

/// Size limits that keep a hostile server from exhausting memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest status line, including its line end (poplib's `_MAXLINE`).
    pub max_status_line: usize,
    /// Longest line inside a multi-line body, including line end and dot-stuffing.
    pub max_line_length: usize,
    /// Largest multi-line body collected in memory: its octets as poplib counts them, plus
    /// what each line costs the sink beyond its bytes ([`BodySink::line_cost`]), so that a
    /// reply of many short lines is bounded by what it costs in memory, not by its wire size.
    pub max_response_size: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_status_line: 2048,
            max_line_length: 1 << 20,
            max_response_size: 256 << 20,
        }
    }
}

/// One framed line: where its content lies in the reader's buffer and how many octets it took.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawLine {
    start: usize,
    end: usize,
    /// Bytes consumed from the stream, line end included.
    pub octets: usize,
}

/// Buffers received bytes and cuts them into lines.
#[derive(Debug, Default)]
pub struct LineReader {
    buf: Vec<u8>,
    /// Start of unread data.
    pos: usize,
    /// End of received data (`buf[filled..]` is scratch space for the next read).
    filled: usize,
    /// Bytes after `pos` already searched for LF without success.
    scanned: usize,
    /// Free space offered to the next read: starts small (thousands of idle connections
    /// stay cheap) and doubles while reads fill it (bulk transfers get big reads).
    chunk: usize,
    offered: usize,
    /// Bytes of the line at `pos` already handed out in parts ([`LineReader::next_raw_part`]);
    /// the line itself stays unread until its last part is taken.
    handed: usize,
}

/// A part of a raw line ([`LineReader::next_raw_part`]): its bytes, and the whole line when the
/// part ends it.
pub type LinePart = (Vec<u8>, Option<RawLine>);

const MIN_CHUNK: usize = 8 * 1024;
const MAX_CHUNK: usize = 256 * 1024;

impl LineReader {
    pub fn new() -> Self {
        LineReader {
            chunk: MIN_CHUNK,
            ..Self::default()
        }
    }

    /// Space to read into; call [`LineReader::commit`] with the number of bytes written.
    pub fn read_buf(&mut self) -> &mut [u8] {
        if self.pos == self.filled {
            self.pos = 0;
            self.filled = 0;
        } else if self.pos > 0 && self.buf.len() - self.filled < self.chunk {
            self.buf.copy_within(self.pos..self.filled, 0);
            self.filled -= self.pos;
            self.pos = 0;
        }
        let chunk = self.chunk.max(MIN_CHUNK);
        if self.buf.len() - self.filled < chunk {
            self.buf.resize(self.filled + chunk, 0);
        }
        self.offered = self.buf.len() - self.filled;
        &mut self.buf[self.filled..]
    }

    pub fn commit(&mut self, n: usize) {
        if n == self.offered {
            self.chunk = (self.chunk * 2).min(MAX_CHUNK);
        }
        self.filled += n;
        debug_assert!(self.filled <= self.buf.len());
    }

    /// Convenience for tests and callers holding a slice.
    pub fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            let space = self.read_buf();
            let n = space.len().min(data.len());
            space[..n].copy_from_slice(&data[..n]);
            self.commit(n);
            data = &data[n..];
        }
    }

    /// Frees the memory a very long line made the buffer grow to, keeping what is unread: a
    /// 16 MiB line must not leave 16 MiB held beside the reply built from it.
    pub fn release(&mut self) {
        if self.buf.capacity() > 4 * MAX_CHUNK {
            self.buf = self.buf[self.pos..self.filled].to_vec();
            self.filled -= self.pos;
            self.pos = 0;
            self.chunk = MIN_CHUNK;
        }
    }

    /// Bytes received but not yet consumed.
    pub fn buffered(&self) -> &[u8] {
        &self.buf[self.pos..self.filled]
    }

    fn consume(&mut self, n: usize) {
        self.pos += n;
        self.scanned = 0;
        self.handed = 0;
    }

    /// The next complete raw line (terminator included), or `None` if more data is needed.
    /// A line (with its LF) longer than `limit` is an error, as in poplib.
    pub fn next_raw_line(
        &mut self,
        limit: usize,
        what: &'static str,
    ) -> Result<Option<RawLine>, ProtoError> {
        let data = &self.buf[self.pos..self.filled];
        let from = self.scanned.min(data.len());
        match memchr::memchr(b'\n', &data[from..]) {
            Some(i) => {
                let len = from + i + 1;
                if len > limit {
                    return Err(ProtoError::LineTooLong { what, limit });
                }
                let line = RawLine {
                    start: self.pos,
                    end: self.pos + len,
                    octets: len,
                };
                self.consume(len);
                Ok(Some(line))
            }
            None if data.len() > limit => Err(ProtoError::LineTooLong { what, limit }),
            None => {
                self.scanned = data.len();
                Ok(None)
            }
        }
    }

    /// io's `readline(max)` over raw lines: at most `max` bytes of the line at the front, from
    /// where its last part ended, and the whole line when this part ends it (only then is the
    /// line consumed, so that whoever frames replies sees it whole). The line is bounded by
    /// `limit` as in [`LineReader::next_raw_line`]; `None` if more data is needed.
    pub fn next_raw_part(
        &mut self,
        limit: usize,
        what: &'static str,
        max: usize,
    ) -> Result<Option<LinePart>, ProtoError> {
        let handed = self.handed;
        let data = &self.buf[self.pos..self.filled];
        let from = self.scanned.min(data.len());
        let line_len = memchr::memchr(b'\n', &data[from..]).map(|i| from + i + 1);
        if line_len.unwrap_or(data.len()) > limit {
            return Err(ProtoError::LineTooLong { what, limit });
        }
        if line_len.is_none_or(|len| len - handed > max) && data.len() - handed >= max {
            let start = self.pos + handed;
            self.handed += max;
            return Ok(Some((self.buf[start..start + max].to_vec(), None)));
        }
        let Some(raw) = self.next_raw_line(limit, what)? else {
            return Ok(None);
        };
        Ok(Some((self.raw(raw)[handed..].to_vec(), Some(raw))))
    }

    /// The bytes of a raw line returned by [`LineReader::next_raw_line`], terminator included.
    /// Valid until the next `read_buf`.
    pub fn raw(&self, line: RawLine) -> &[u8] {
        &self.buf[line.start..line.end]
    }

    /// The content of a line with its terminator stripped the way poplib strips it.
    pub fn content(&self, line: RawLine) -> &[u8] {
        strip_line_end(self.raw(line))
    }
}

/// poplib's `_getline` stripping: CRLF, else leading CR + LF, else the last byte.
pub fn strip_line_end(raw: &[u8]) -> &[u8] {
    if raw.ends_with(b"\r\n") {
        &raw[..raw.len() - 2]
    } else if raw.first() == Some(&b'\r') {
        &raw[1..raw.len() - 1]
    } else {
        &raw[..raw.len().saturating_sub(1)]
    }
}

/// Classifies a status line: `+...` is success (poplib's rule), anything else a server error.
pub fn check_status(line: &[u8]) -> Result<(), ProtoError> {
    if line.first() == Some(&b'+') {
        Ok(())
    } else {
        Err(ProtoError::ServerError(line.to_vec()))
    }
}

/// The RFC 2449 response code of `-ERR [CODE] text`, e.g. `IN-USE` or `SYS/TEMP`.
pub fn resp_code(line: &[u8]) -> Option<&[u8]> {
    let rest = line.strip_prefix(b"-ERR [")?;
    let end = memchr::memchr(b']', rest)?;
    let code = &rest[..end];
    let valid = !code.is_empty()
        && code
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'/'));
    valid.then_some(code)
}

/// Receives the content lines of a multi-line body, already dot-unstuffed.
pub trait BodySink {
    fn line(&mut self, content: &[u8]) -> Result<(), ProtoError>;

    /// A streaming sink returns true once it holds a chunk: decoding pauses there.
    fn full(&self) -> bool {
        false
    }

    /// Memory a line costs beyond its content bytes, counted against `max_response_size`.
    fn line_cost(&self) -> usize {
        0
    }
}

/// Decodes one multi-line body incrementally; keeps its progress across partial input.
#[derive(Debug, Default)]
pub struct BodyDecoder {
    /// Octets so far, counted like poplib (line end included, one less per unstuffed line).
    pub octets: usize,
    /// Octets plus the sink's per-line cost: what `max_response_size` bounds.
    cost: usize,
}

impl BodyDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds complete lines in `reader` to `sink` until the sink is full or the data runs
    /// out. Returns `Some(octets)` once the terminating `.` line has been read, else `None`
    /// (more data needed, or `sink.full()`).
    pub fn advance<S: BodySink + ?Sized>(
        &mut self,
        reader: &mut LineReader,
        limits: &Limits,
        sink: &mut S,
    ) -> Result<Option<usize>, ProtoError> {
        while !sink.full() {
            let Some(raw) = reader.next_raw_line(limits.max_line_length, "message")? else {
                break;
            };
            let content = reader.content(raw);
            if content == b"." {
                return Ok(Some(self.octets));
            }
            let (content, octets) = match content.strip_prefix(b".") {
                Some(rest) if rest.first() == Some(&b'.') => (rest, raw.octets - 1),
                _ => (content, raw.octets),
            };
            self.octets += octets;
            self.cost = self.cost.saturating_add(octets + sink.line_cost());
            if self.cost > limits.max_response_size {
                return Err(ProtoError::ResponseTooLarge {
                    limit: limits.max_response_size,
                });
            }
            sink.line(content)?;
        }
        Ok(None)
    }
}

/// What a line costs in memory once it is a Python `bytes` in a list (object header, list
/// slot, allocator rounding), beyond its content: the unit of the `max_response_size` bound.
pub const LINE_COST: usize = 64;

/// Lines are stored in segments of about this size: no reallocation copies of a large body,
/// and each segment can be freed as soon as it has been handed over.
const SEGMENT: usize = 64 << 10;

/// Body lines in a few large buffers plus end offsets, instead of one allocation per line.
#[derive(Debug, Default)]
pub struct LinesSink {
    segments: Vec<Segment>,
    count: usize,
}

/// One buffer of consecutive lines.
#[derive(Debug, Default)]
pub struct Segment {
    data: Vec<u8>,
    ends: Vec<usize>,
}

impl Segment {
    pub fn lines(&self) -> impl ExactSizeIterator<Item = &[u8]> {
        self.ends.iter().enumerate().map(move |(i, &end)| {
            let start = if i == 0 { 0 } else { self.ends[i - 1] };
            &self.data[start..end]
        })
    }
}

impl LinesSink {
    pub fn lines(&self) -> impl Iterator<Item = &[u8]> {
        self.segments.iter().flat_map(Segment::lines)
    }

    /// The number of lines.
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The segments, in order, for a consumer that frees each once converted.
    pub fn into_segments(self) -> Vec<Segment> {
        self.segments
    }

    /// The segments already full, handed over early (the one being filled stays): a consumer
    /// converting a large body as it arrives never holds two whole copies of it.
    pub fn take_full(&mut self) -> Vec<Segment> {
        let keep = self.segments.len().saturating_sub(1);
        let mut full: Vec<Segment> = self.segments.drain(..keep).collect();
        full.shrink_to_fit();
        full
    }
}

impl BodySink for LinesSink {
    fn line(&mut self, content: &[u8]) -> Result<(), ProtoError> {
        let full = self
            .segments
            .last()
            .is_none_or(|s| !s.data.is_empty() && s.data.len() + content.len() > SEGMENT);
        if full {
            // The first segment grows from small (most replies are small); later ones are
            // allocated whole, so a large body is never copied by a reallocation.
            let capacity = if self.segments.is_empty() {
                0
            } else {
                SEGMENT.max(content.len())
            };
            self.segments.push(Segment {
                data: Vec::with_capacity(capacity),
                ends: Vec::new(),
            });
        }
        let segment = self.segments.last_mut().expect("a segment exists");
        segment.data.extend_from_slice(content);
        segment.ends.push(segment.data.len());
        self.count += 1;
        Ok(())
    }

    fn line_cost(&self) -> usize {
        LINE_COST
    }
}

/// Rebuilds the message as bytes with CRLF line ends: whole (`chunk: None`), or in chunks of
/// about `chunk` bytes for streaming.
#[derive(Debug, Default)]
pub struct BytesSink {
    pub data: Vec<u8>,
    pub chunk: Option<usize>,
}

impl BytesSink {
    pub fn chunked(chunk: usize) -> Self {
        BytesSink {
            data: Vec::with_capacity(chunk + 1024),
            chunk: Some(chunk),
        }
    }
}

impl BodySink for BytesSink {
    fn line(&mut self, content: &[u8]) -> Result<(), ProtoError> {
        self.data.reserve(content.len() + 2);
        self.data.extend_from_slice(content);
        self.data.extend_from_slice(b"\r\n");
        Ok(())
    }

    fn full(&self) -> bool {
        self.chunk.is_some_and(|c| self.data.len() >= c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_status(input: &[u8]) -> Result<Option<Vec<u8>>, ProtoError> {
        let mut r = LineReader::new();
        r.feed(input);
        Ok(r.next_raw_line(2048, "status")?
            .map(|l| r.content(l).to_vec()))
    }

    #[test]
    fn strips_like_poplib() {
        // (wire line, content) pairs taken from poplib's _getline.
        let table: &[(&[u8], &[u8])] = &[
            (b"+OK hi\r\n", b"+OK hi"),
            (b"+OK hi\n", b"+OK hi"),
            (b"\r+OK hi\n", b"+OK hi"),
            (b"\r+OK hi\r\n", b"\r+OK hi"),
            (b"+OK a\rb\n", b"+OK a\rb"),
            (b"\n", b""),
            (b"\r\n", b""),
        ];
        for (wire, want) in table {
            assert_eq!(
                read_status(wire).unwrap().unwrap(),
                *want,
                "{:?}",
                String::from_utf8_lossy(wire)
            );
        }
    }

    #[test]
    fn status_limit_matches_maxline() {
        let mut ok = vec![b'+'; 2046];
        ok.extend_from_slice(b"\r\n");
        assert!(read_status(&ok).unwrap().is_some());
        let mut long = vec![b'+'; 2047];
        long.extend_from_slice(b"\r\n");
        assert!(matches!(
            read_status(&long),
            Err(ProtoError::LineTooLong { .. })
        ));
        // No LF yet but already over the limit: fail early instead of buffering forever.
        assert!(matches!(
            read_status(&vec![b'x'; 3000]),
            Err(ProtoError::LineTooLong { .. })
        ));
        assert_eq!(read_status(&[b'x'; 100]).unwrap(), None);
    }

    #[test]
    fn status_classification_and_codes() {
        assert!(check_status(b"+OK").is_ok());
        assert!(check_status(b"+ challenge").is_ok());
        assert_eq!(
            check_status(b"-ERR no"),
            Err(ProtoError::ServerError(b"-ERR no".to_vec()))
        );
        assert_eq!(check_status(b""), Err(ProtoError::ServerError(vec![])));
        assert_eq!(resp_code(b"-ERR [IN-USE] locked"), Some(&b"IN-USE"[..]));
        assert_eq!(resp_code(b"-ERR [SYS/TEMP] later"), Some(&b"SYS/TEMP"[..]));
        assert_eq!(resp_code(b"-ERR [] x"), None);
        assert_eq!(resp_code(b"-ERR [bad code] x"), None);
        assert_eq!(resp_code(b"-ERR no code"), None);
        assert_eq!(resp_code(b"+OK [IN-USE]"), None);
    }

    fn decode(input: &[u8], limits: &Limits) -> Result<(Vec<Vec<u8>>, usize), ProtoError> {
        let mut r = LineReader::new();
        r.feed(input);
        let mut sink = LinesSink::default();
        let octets = BodyDecoder::new()
            .advance(&mut r, limits, &mut sink)?
            .expect("complete body");
        Ok((sink.lines().map(<[u8]>::to_vec).collect(), octets))
    }

    #[test]
    fn body_known_answers() {
        let l = Limits::default();
        let (lines, octets) = decode(b"a\r\n..b\r\n.c\r\n...\r\n\r\n.\r\n", &l).unwrap();
        assert_eq!(
            lines,
            vec![
                b"a".to_vec(),
                b".b".to_vec(),
                b".c".to_vec(),
                b"..".to_vec(),
                vec![]
            ]
        );
        // Checked against CPython poplib: 3 + (5-1) + 4 + (5-1) + 2.
        assert_eq!(octets, 17);
        let (lines, octets) = decode(b"x\ny\n.\n", &l).unwrap();
        assert_eq!(lines, vec![b"x".to_vec(), b"y".to_vec()]);
        assert_eq!(octets, 4);
        let (lines, _) = decode(b".\r\n", &l).unwrap();
        assert!(lines.is_empty());
    }

    #[test]
    fn body_limits() {
        let l = Limits {
            max_status_line: 2048,
            max_line_length: 10,
            max_response_size: 12,
        };
        assert!(matches!(
            decode(b"0123456789abc\r\n.\r\n", &l),
            Err(ProtoError::LineTooLong { .. })
        ));
        assert!(matches!(
            decode(b"12345\r\n12345\r\n.\r\n", &l),
            Err(ProtoError::ResponseTooLarge { .. })
        ));
    }

    #[test]
    fn bytes_sink_uses_crlf() {
        let mut r = LineReader::new();
        r.feed(b"a\n..b\r\n.\r\n");
        let mut sink = BytesSink::default();
        BodyDecoder::new()
            .advance(&mut r, &Limits::default(), &mut sink)
            .unwrap();
        assert_eq!(sink.data, b"a\r\n.b\r\n");
    }

    #[test]
    fn chunked_sink_pauses_and_resumes() {
        let mut r = LineReader::new();
        r.feed(b"aaaa\r\n..bb\r\ncc\r\n.\r\n");
        let mut decoder = BodyDecoder::new();
        let mut out = Vec::new();
        loop {
            let mut sink = BytesSink::chunked(4);
            let done = decoder
                .advance(&mut r, &Limits::default(), &mut sink)
                .unwrap();
            out.push(sink.data);
            if done.is_some() {
                break;
            }
        }
        // The third chunk fills the sink before the "." line is seen: a last, empty call ends it.
        assert_eq!(
            out,
            vec![
                b"aaaa\r\n".to_vec(),
                b".bb\r\n".to_vec(),
                b"cc\r\n".to_vec(),
                vec![]
            ]
        );
    }

    #[test]
    fn leftover_after_body_stays_buffered() {
        let mut r = LineReader::new();
        r.feed(b"a\r\n.\r\n+OK next\r\n");
        let mut sink = LinesSink::default();
        BodyDecoder::new()
            .advance(&mut r, &Limits::default(), &mut sink)
            .unwrap()
            .unwrap();
        assert_eq!(r.buffered(), b"+OK next\r\n");
    }
}
