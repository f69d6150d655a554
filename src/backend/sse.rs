//! Server-sent events (the `text/event-stream` format of the WHATWG HTML standard), decoded
//! from bytes as they arrive. Pure and incremental: bytes go in (cut anywhere, even inside a
//! UTF-8 character or a `\r\n`), whole events come out.
//!
//! Written here rather than taken from a crate: the maintained SSE crates
//! (`eventsource-stream`, `reqwest-eventsource`) are built on async streams, and the module's
//! workers read a blocking `ureq` body; the format itself is a few lines of rules.
//!
//! Every byte is hostile: an event (or a line) longer than the limit is an error, not an
//! allocation, and data that is not UTF-8 is refused when its event is complete.

use super::BackendError;

/// One complete event: its `event:` name (empty if none was given) and its `data:` lines
/// joined with `\n`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub name: String,
    pub data: String,
}

/// The decoder's state between two reads.
pub struct Decoder {
    line: Vec<u8>,
    name: Vec<u8>,
    data: Vec<u8>,
    has_data: bool,
    /// The last byte seen was a `\r`: a `\n` right after it ends nothing more.
    after_cr: bool,
    max: usize,
}

impl Decoder {
    /// A decoder refusing any event of more than `max` bytes (its lines included).
    pub fn new(max: usize) -> Self {
        Decoder {
            line: Vec::new(),
            name: Vec::new(),
            data: Vec::new(),
            has_data: false,
            after_cr: false,
            max,
        }
    }

    /// Feeds the next bytes; complete events are appended to `out`.
    pub fn feed(&mut self, bytes: &[u8], out: &mut Vec<Event>) -> Result<(), BackendError> {
        for &b in bytes {
            match b {
                b'\n' if self.after_cr => self.after_cr = false,
                b'\r' | b'\n' => {
                    self.after_cr = b == b'\r';
                    self.end_line(out)?;
                }
                _ => {
                    self.after_cr = false;
                    if self.line.len() + self.data.len() >= self.max {
                        return Err(too_large(self.max));
                    }
                    self.line.push(b);
                }
            }
        }
        Ok(())
    }

    /// The body ended: an event whose lines all ended but whose blank line never came is
    /// still delivered (servers that close right after their last `data:` line exist); a
    /// line cut short is not (the connection was lost mid-event).
    pub fn finish(&mut self, out: &mut Vec<Event>) -> Result<(), BackendError> {
        if !self.line.is_empty() {
            self.line.clear();
            self.data.clear();
            self.has_data = false;
            return Ok(());
        }
        self.dispatch(out)
    }

    fn end_line(&mut self, out: &mut Vec<Event>) -> Result<(), BackendError> {
        if self.line.is_empty() {
            return self.dispatch(out);
        }
        let line = std::mem::take(&mut self.line);
        // A line starting with ':' is a comment (keep-alives).
        if line[0] == b':' {
            return Ok(());
        }
        let (field, value) = match line.iter().position(|b| *b == b':') {
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (&line[..], &[][..]),
        };
        match field {
            b"data" => {
                if self.has_data {
                    self.data.push(b'\n');
                }
                if self.data.len() + value.len() > self.max {
                    return Err(too_large(self.max));
                }
                self.data.extend_from_slice(value);
                self.has_data = true;
            }
            b"event" => {
                self.name.clear();
                self.name.extend_from_slice(value);
            }
            // id, retry and unknown fields: nothing a one-shot reader needs.
            _ => {}
        }
        self.line = line;
        self.line.clear();
        Ok(())
    }

    fn dispatch(&mut self, out: &mut Vec<Event>) -> Result<(), BackendError> {
        let name = std::mem::take(&mut self.name);
        if !std::mem::replace(&mut self.has_data, false) {
            return Ok(());
        }
        let data = std::mem::take(&mut self.data);
        let utf8 = |b: Vec<u8>| {
            String::from_utf8(b)
                .map_err(|_| BackendError::Malformed("event stream is not valid UTF-8".into()))
        };
        out.push(Event {
            name: utf8(name)?,
            data: utf8(data)?,
        });
        Ok(())
    }
}

fn too_large(max: usize) -> BackendError {
    BackendError::TooLarge(max as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(name: &str, data: &str) -> Event {
        Event {
            name: name.into(),
            data: data.into(),
        }
    }

    fn decode_in_pieces(input: &[u8], piece: usize) -> Result<Vec<Event>, BackendError> {
        let mut d = Decoder::new(1024);
        let mut out = Vec::new();
        for chunk in input.chunks(piece.max(1)) {
            d.feed(chunk, &mut out)?;
        }
        d.finish(&mut out)?;
        Ok(out)
    }

    #[test]
    fn events_whatever_the_cuts() {
        // (input, expected events)
        let rows: &[(&[u8], Vec<Event>)] = &[
            // The OpenAI shape: data only, blank line between events.
            (
                b"data: {\"a\":1}\n\ndata: [DONE]\n\n",
                vec![ev("", "{\"a\":1}"), ev("", "[DONE]")],
            ),
            // The Anthropic shape: named events, CRLF line ends.
            (
                b"event: ping\r\ndata: {}\r\n\r\nevent: message_stop\r\ndata: {\"t\":2}\r\n\r\n",
                vec![ev("ping", "{}"), ev("message_stop", "{\"t\":2}")],
            ),
            // Bare CR line ends, comments, a field without a colon, no space after it.
            (b": keep-alive\rdata:x\rdata\r\r", vec![ev("", "x\n")]),
            // Multi-line data, unknown fields ignored, an event without data dropped.
            (
                b"id: 7\nevent: e\n\ndata: a\ndata: b\nretry: 5\n\n",
                vec![ev("", "a\nb")],
            ),
            // The last event's blank line never came; a line cut short is dropped.
            (b"data: tail\n", vec![ev("", "tail")]),
            (b"data: a\n\ndata: tai", vec![ev("", "a")]),
            // UTF-8 of several bytes cut by the pieces (é is two bytes, 😀 four).
            ("data: é😀\n\n".as_bytes(), vec![ev("", "é😀")]),
            (b"", vec![]),
        ];
        for (input, want) in rows {
            for piece in [1, 2, 3, 7, 4096] {
                assert_eq!(&decode_in_pieces(input, piece).unwrap(), want, "{piece}");
            }
        }
    }

    #[test]
    fn hostile_bytes_are_errors_not_panics() {
        assert!(matches!(
            decode_in_pieces(b"data: \xff\xfe\n\n", 3),
            Err(BackendError::Malformed(_))
        ));
        // One endless line, or an event of many short lines, stops at the limit.
        let long = vec![b'a'; 5000];
        assert_eq!(
            decode_in_pieces(&long, 100),
            Err(BackendError::TooLarge(1024))
        );
        let many = b"data: aaaaaaaaaa\n".repeat(200);
        assert_eq!(
            decode_in_pieces(&many, 64),
            Err(BackendError::TooLarge(1024))
        );
        // Any bytes at all: never a panic.
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..2000 {
            let bytes: Vec<u8> = (0..64)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    b"data: \r\n:ev\xff"[(seed % 12) as usize]
                })
                .collect();
            let _ = decode_in_pieces(&bytes, (seed % 5) as usize + 1);
        }
    }
}
