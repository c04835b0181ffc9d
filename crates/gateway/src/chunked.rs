//! Chunked transfer coding (RFC 9112 §7.1), decoded incrementally and strictly: hex sizes of at
//! most 16 digits, CRLF line ends only (a bare LF is where smuggling starts), extensions skipped,
//! trailers read and dropped within a bound.

/// Trailer bytes accepted before the message is refused.
const MAX_TRAILERS: usize = 16 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Size,
    Extension,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    TrailerStart,
    TrailerLine,
    TrailerLf,
    EndLf,
    Done,
}

/// A decoder of one chunked body.
#[derive(Debug)]
pub struct Decoder {
    state: State,
    left: u64,
    digits: u8,
    trailers: usize,
}

/// Malformed chunked framing.
#[derive(Debug, PartialEq, Eq)]
pub struct Malformed;

impl Default for Decoder {
    fn default() -> Decoder {
        Decoder { state: State::Size, left: 0, digits: 0, trailers: 0 }
    }
}

impl Decoder {
    /// Whether the last chunk and the trailers have been read.
    pub fn done(&self) -> bool {
        self.state == State::Done
    }

    /// Decodes from the front of `input`, handing each piece of chunk data to `data`; returns
    /// how many bytes it consumed (all of them, unless the body ended before).
    pub fn feed(&mut self, input: &[u8], data: &mut dyn FnMut(&[u8])) -> Result<usize, Malformed> {
        let mut i = 0;
        while i < input.len() && self.state != State::Done {
            let b = input[i];
            match self.state {
                State::Size => match (b as char).to_digit(16) {
                    Some(v) if self.digits < 16 => {
                        self.left = self.left << 4 | u64::from(v);
                        self.digits += 1;
                    }
                    None if self.digits > 0 && matches!(b, b';' | b' ' | b'\t') => self.state = State::Extension,
                    None if self.digits > 0 && b == b'\r' => self.state = State::SizeLf,
                    _ => return Err(Malformed),
                },
                State::Extension => match b {
                    b'\r' => self.state = State::SizeLf,
                    b'\n' => return Err(Malformed),
                    _ => {}
                },
                State::SizeLf => {
                    if b != b'\n' {
                        return Err(Malformed);
                    }
                    self.digits = 0;
                    self.state = if self.left == 0 { State::TrailerStart } else { State::Data };
                }
                State::Data => {
                    let n = usize::try_from(self.left).unwrap_or(usize::MAX).min(input.len() - i);
                    data(&input[i..i + n]);
                    i += n;
                    self.left -= n as u64;
                    if self.left == 0 {
                        self.state = State::DataCr;
                    }
                    continue;
                }
                State::DataCr => {
                    self.state = if b == b'\r' {
                        State::DataLf
                    } else {
                        return Err(Malformed);
                    }
                }
                State::DataLf => {
                    self.state = if b == b'\n' {
                        State::Size
                    } else {
                        return Err(Malformed);
                    }
                }
                State::TrailerStart => match b {
                    b'\r' => self.state = State::EndLf,
                    b'\n' => return Err(Malformed),
                    _ => self.state = State::TrailerLine,
                },
                State::TrailerLine => match b {
                    b'\r' => self.state = State::TrailerLf,
                    b'\n' => return Err(Malformed),
                    _ => {}
                },
                State::TrailerLf => {
                    self.state = if b == b'\n' {
                        State::TrailerStart
                    } else {
                        return Err(Malformed);
                    }
                }
                State::EndLf => {
                    self.state = if b == b'\n' {
                        State::Done
                    } else {
                        return Err(Malformed);
                    }
                }
                State::Done => unreachable!("the loop stops at Done"),
            }
            if matches!(self.state, State::TrailerLine | State::TrailerLf) {
                self.trailers += 1;
                if self.trailers > MAX_TRAILERS {
                    return Err(Malformed);
                }
            }
            i += 1;
        }
        Ok(i)
    }
}

/// Appends `data` as one chunk.
pub fn encode(out: &mut Vec<u8>, data: &[u8]) {
    if !data.is_empty() {
        out.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
        out.extend_from_slice(data);
        out.extend_from_slice(b"\r\n");
    }
}

/// The last chunk.
pub const END: &[u8] = b"0\r\n\r\n";

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_in_pieces(input: &[u8], piece: usize) -> Result<(Vec<u8>, usize, bool), Malformed> {
        let mut d = Decoder::default();
        let mut out = Vec::new();
        let mut used = 0;
        for part in input.chunks(piece) {
            used += d.feed(part, &mut |b| out.extend_from_slice(b))?;
            if d.done() {
                break;
            }
        }
        Ok((out, used, d.done()))
    }

    #[test]
    fn decodes_in_any_pieces_and_stops_at_the_end() {
        let body = b"4\r\nWiki\r\n5;name=value\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\nExpires: never\r\n\r\nNEXT";
        for piece in [1, 2, 3, 7, body.len()] {
            let (out, used, done) = decode_in_pieces(body, piece).unwrap();
            assert_eq!(out, b"Wikipedia in\r\n\r\nchunks.");
            assert!(done);
            assert_eq!(&body[used..], b"NEXT", "piece {piece}");
        }
    }

    #[test]
    fn refuses_what_smuggling_relies_on() {
        for bad in [
            &b"4\nWiki\r\n0\r\n\r\n"[..],
            b"4\r\nWiki\n0\r\n\r\n",
            b"4\r\nWikiX\r\n0\r\n\r\n",
            b"x\r\n",
            b"\r\n",
            b"11111111111111111\r\n",
            b"-1\r\n",
            b"0\r\n\n",
        ] {
            assert_eq!(decode_in_pieces(bad, 1), Err(Malformed), "{}", String::from_utf8_lossy(bad));
        }
        let (_, _, done) = decode_in_pieces(b"4\r\nWi", 3).unwrap();
        assert!(!done, "an unfinished body is not done");
    }

    #[test]
    fn encodes_chunks() {
        let mut out = Vec::new();
        encode(&mut out, b"hello, world");
        encode(&mut out, b"");
        out.extend_from_slice(END);
        assert_eq!(out, b"c\r\nhello, world\r\n0\r\n\r\n");
    }
}
