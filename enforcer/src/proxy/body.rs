//! Sans-IO body framing: a strict chunked decoder that re-encodes as it goes, so a body streams
//! through with bounded memory and the receiver gets a canonical encoding of exactly the bytes the
//! proxy validated.
//!
//! Re-encoding: each chunk is written as `{size:x}\r\n{data}\r\n`, the last chunk as `0\r\n\r\n`.
//! Chunk extensions are validated and dropped; trailer fields are validated and dropped (in both
//! directions), so no header the policy did not see reaches the server after the body.

use bytes::BytesMut;

/// Longest chunk-size line accepted, extensions included.
const MAX_SIZE_LINE: usize = 4096;
/// Most hex digits in a chunk size (so the size fits in 64 bits).
const MAX_SIZE_DIGITS: u32 = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading hex digits of the chunk size.
    Size,
    /// Just read `;`, expecting an extension name.
    ExtNameStart,
    ExtName,
    /// Just read `=`, expecting a token or a quoted string.
    ExtValueStart,
    ExtValueToken,
    ExtValueQuoted,
    ExtValueEscape,
    /// Expecting the LF of the size line.
    SizeLf,
    Data,
    DataCr,
    DataLf,
    /// At the start of a trailer line (or the final empty line).
    TrailerStart,
    TrailerName,
    TrailerValue,
    TrailerLf,
    FinalLf,
    Done,
}

/// Why a chunked body was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkError(pub &'static str);

impl std::fmt::Display for ChunkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

/// Decodes a chunked body and writes its canonical re-encoding.
#[derive(Debug)]
pub struct ChunkedDecoder {
    state: State,
    size: u64,
    digits: u32,
    line_len: usize,
    remaining: u64,
    trailer_bytes: usize,
    max_trailer_bytes: usize,
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn hex(b: u8) -> Option<u64> {
    (b as char).to_digit(16).map(u64::from)
}

impl ChunkedDecoder {
    pub fn new(max_trailer_bytes: usize) -> Self {
        Self {
            state: State::Size,
            size: 0,
            digits: 0,
            line_len: 0,
            remaining: 0,
            trailer_bytes: 0,
            max_trailer_bytes,
        }
    }

    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Consumes a prefix of `input`, appending the re-encoded form to `out`. Returns how many
    /// bytes were consumed; stops early only when the body ends (check [`Self::is_done`]).
    pub fn decode(&mut self, input: &[u8], out: &mut BytesMut) -> Result<usize, ChunkError> {
        let mut i = 0;
        while i < input.len() {
            if self.state == State::Done {
                break;
            }
            if self.state == State::Data {
                let n = (self.remaining.min((input.len() - i) as u64)) as usize;
                out.extend_from_slice(&input[i..i + n]);
                i += n;
                self.remaining -= n as u64;
                if self.remaining == 0 {
                    self.state = State::DataCr;
                }
                continue;
            }
            let b = input[i];
            i += 1;
            self.step(b, out)?;
        }
        Ok(i)
    }

    fn size_line_byte(&mut self) -> Result<(), ChunkError> {
        self.line_len += 1;
        if self.line_len > MAX_SIZE_LINE {
            return Err(ChunkError("chunk-size line too long"));
        }
        Ok(())
    }

    fn step(&mut self, b: u8, out: &mut BytesMut) -> Result<(), ChunkError> {
        use State::*;
        match self.state {
            Size => {
                self.size_line_byte()?;
                if let Some(d) = hex(b) {
                    self.digits += 1;
                    if self.digits > MAX_SIZE_DIGITS {
                        return Err(ChunkError("chunk size too large"));
                    }
                    self.size = self.size << 4 | d;
                } else if self.digits == 0 {
                    return Err(ChunkError("chunk size is not hexadecimal"));
                } else if b == b';' {
                    self.state = ExtNameStart;
                } else if b == b'\r' {
                    self.state = SizeLf;
                } else {
                    return Err(ChunkError("invalid character after chunk size"));
                }
            }
            ExtNameStart => {
                self.size_line_byte()?;
                if !is_tchar(b) {
                    return Err(ChunkError("invalid chunk extension"));
                }
                self.state = ExtName;
            }
            ExtName | ExtValueToken => {
                self.size_line_byte()?;
                match b {
                    b';' => self.state = ExtNameStart,
                    b'\r' => self.state = SizeLf,
                    b'=' if self.state == ExtName => self.state = ExtValueStart,
                    b if is_tchar(b) => {}
                    _ => return Err(ChunkError("invalid chunk extension")),
                }
            }
            ExtValueStart => {
                self.size_line_byte()?;
                match b {
                    b'"' => self.state = ExtValueQuoted,
                    b if is_tchar(b) => self.state = ExtValueToken,
                    _ => return Err(ChunkError("invalid chunk extension value")),
                }
            }
            ExtValueQuoted => {
                self.size_line_byte()?;
                match b {
                    b'"' => self.state = ExtValueToken,
                    b'\\' => self.state = ExtValueEscape,
                    b'\t' | b' ' | 0x21..=0x7e | 0x80..=0xff => {}
                    _ => return Err(ChunkError("invalid chunk extension value")),
                }
            }
            ExtValueEscape => {
                self.size_line_byte()?;
                match b {
                    b'\t' | b' ' | 0x21..=0x7e | 0x80..=0xff => self.state = ExtValueQuoted,
                    _ => return Err(ChunkError("invalid chunk extension value")),
                }
            }
            SizeLf => {
                if b != b'\n' {
                    return Err(ChunkError("chunk-size line not ended by CRLF"));
                }
                self.line_len = 0;
                self.digits = 0;
                if self.size == 0 {
                    out.extend_from_slice(b"0\r\n");
                    self.state = TrailerStart;
                } else {
                    let mut line = [0u8; 20];
                    let n = write_hex(self.size, &mut line);
                    out.extend_from_slice(&line[..n]);
                    self.remaining = self.size;
                    self.size = 0;
                    self.state = Data;
                }
            }
            Data => unreachable!("data is copied in bulk"),
            DataCr => {
                if b != b'\r' {
                    return Err(ChunkError("chunk data not followed by CRLF"));
                }
                self.state = DataLf;
            }
            DataLf => {
                if b != b'\n' {
                    return Err(ChunkError("chunk data not followed by CRLF"));
                }
                out.extend_from_slice(b"\r\n");
                self.state = Size;
            }
            TrailerStart => {
                if b == b'\r' {
                    self.state = FinalLf;
                } else if is_tchar(b) {
                    self.trailer_byte()?;
                    self.state = TrailerName;
                } else {
                    return Err(ChunkError("invalid trailer field"));
                }
            }
            TrailerName => {
                self.trailer_byte()?;
                match b {
                    b':' => self.state = TrailerValue,
                    b if is_tchar(b) => {}
                    _ => return Err(ChunkError("invalid trailer field name")),
                }
            }
            TrailerValue => {
                self.trailer_byte()?;
                match b {
                    b'\r' => self.state = TrailerLf,
                    b'\t' | b' '..=0x7e | 0x80..=0xff => {}
                    _ => return Err(ChunkError("invalid trailer field value")),
                }
            }
            TrailerLf => {
                if b != b'\n' {
                    return Err(ChunkError("trailer line not ended by CRLF"));
                }
                self.state = TrailerStart;
            }
            FinalLf => {
                if b != b'\n' {
                    return Err(ChunkError("chunked body not ended by CRLF"));
                }
                out.extend_from_slice(b"\r\n");
                self.state = Done;
            }
            Done => {}
        }
        Ok(())
    }

    fn trailer_byte(&mut self) -> Result<(), ChunkError> {
        self.trailer_bytes += 1;
        if self.trailer_bytes > self.max_trailer_bytes {
            return Err(ChunkError("trailer section too large"));
        }
        Ok(())
    }
}

/// Writes `{n:x}\r\n` into `buf`, returning its length.
fn write_hex(mut n: u64, buf: &mut [u8; 20]) -> usize {
    let mut digits = [0u8; 16];
    let mut len = 0;
    loop {
        digits[len] = b"0123456789abcdef"[(n & 15) as usize];
        len += 1;
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    for k in 0..len {
        buf[k] = digits[len - 1 - k];
    }
    buf[len] = b'\r';
    buf[len + 1] = b'\n';
    len + 2
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes `input` fed in pieces of `step` bytes.
    fn run(input: &[u8], step: usize) -> Result<(Vec<u8>, usize), ChunkError> {
        let mut d = ChunkedDecoder::new(1024);
        let mut out = BytesMut::new();
        let mut pos = 0;
        while pos < input.len() && !d.is_done() {
            let end = (pos + step).min(input.len());
            pos += d.decode(&input[pos..end], &mut out)?;
        }
        if !d.is_done() {
            return Err(ChunkError("incomplete"));
        }
        Ok((out.to_vec(), pos))
    }

    #[test]
    fn decodes_and_reencodes() {
        let input = b"5;a=b;c=\"q\\\"x\"\r\nhello\r\n00A\r\n0123456789\r\n0\r\nX-T: 1\r\n\r\nNEXT";
        for step in [1, 2, 3, 7, 1000] {
            let (out, used) = run(input, step).unwrap();
            assert_eq!(
                out, b"5\r\nhello\r\na\r\n0123456789\r\n0\r\n\r\n",
                "step {step}"
            );
            assert_eq!(used, input.len() - 4);
        }
    }

    #[test]
    fn rejects_bad_chunks() {
        let bad: &[&[u8]] = &[
            b"\r\n",
            b"g\r\n",
            b"-1\r\n",
            b"5 \r\nhello\r\n0\r\n\r\n",
            b"5 ;a\r\nhello\r\n0\r\n\r\n",
            b"5;\r\nhello\r\n0\r\n\r\n",
            b"5;a=\r\nhello\r\n0\r\n\r\n",
            b"5;a b\r\nhello\r\n0\r\n\r\n",
            b"5\nhello\r\n0\r\n\r\n",
            b"5\r\nhelloX\r\n0\r\n\r\n",
            b"5\r\nhello\n0\r\n\r\n",
            b"0\r\n\n",
            b"0\r\nX-T 1\r\n\r\n",
            b"0\r\nX-T: \x01\r\n\r\n",
            b"0\r\n folded\r\n\r\n",
            b"10000000000000000\r\n",
            b"0x5\r\nhello\r\n0\r\n\r\n",
        ];
        for input in bad {
            assert!(
                run(input, 3).is_err(),
                "accepted {:?}",
                String::from_utf8_lossy(input)
            );
        }
        let long = format!("1;{}\r\n", "a".repeat(5000));
        assert!(run(long.as_bytes(), 100).is_err());
        let trailers = format!("0\r\nX: {}\r\n\r\n", "a".repeat(2000));
        assert!(run(trailers.as_bytes(), 100).is_err());
    }

    #[test]
    fn large_sizes() {
        let mut d = ChunkedDecoder::new(10);
        let mut out = BytesMut::new();
        d.decode(b"fffffffffffffff0\r\nabc", &mut out).unwrap();
        assert_eq!(&out[..], b"fffffffffffffff0\r\nabc");
        assert!(!d.is_done());
    }
}
