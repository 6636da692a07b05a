//! The part of SPDY/3.1 the API server needs to be a remote-command client of a kubelet:
//! opening streams, sending data (and half-closing), reading data, answering pings.
//!
//! Header blocks are written as zlib stored (uncompressed) blocks of one continuous stream
//! without a preset dictionary, each ended as a sync flush ends, which any zlib reader accepts; the headers the far side sends
//! (stream replies) carry nothing the client needs, so they are skipped unread.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The SPDY version every control frame carries.
const VERSION: u16 = 3;
/// `SYN_STREAM`.
const SYN_STREAM: u16 = 1;
/// `SYN_REPLY`.
const SYN_REPLY: u16 = 2;
/// `RST_STREAM`.
const RST_STREAM: u16 = 3;
/// `PING`.
const PING: u16 = 6;
/// `GOAWAY`.
const GOAWAY: u16 = 7;
/// The flag that ends a stream's side.
const FLAG_FIN: u8 = 0x01;
/// The largest data frame written; SPDY allows 2^24 - 1.
pub const MAX_DATA: usize = 32 * 1024;

/// A frame the far side sent, as far as a client cares.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// Data on a stream; `fin` ends the far side's half.
    Data {
        /// The stream.
        stream: u32,
        /// The bytes.
        data: Vec<u8>,
        /// Whether the far side is done sending on it.
        fin: bool,
    },
    /// The far side accepted a stream.
    Reply {
        /// The stream.
        stream: u32,
        /// Whether it is also done sending on it.
        fin: bool,
    },
    /// A stream was reset.
    Reset {
        /// The stream.
        stream: u32,
    },
    /// A ping to answer with the same id.
    Ping(u32),
    /// The far side is going away.
    GoAway,
    /// A frame a client may ignore (settings, window updates, headers).
    Other,
}

/// Reads one frame; `None` at the end of the connection.
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> std::io::Result<Option<Frame>> {
    let mut head = [0u8; 8];
    match r.read_exact(&mut head).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let flags = head[4];
    let len = u32::from_be_bytes([0, head[5], head[6], head[7]]) as usize;
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload).await?;
    let word = |at: usize| -> u32 {
        payload.get(at..at + 4).map_or(0, |b| {
            u32::from_be_bytes([b[0], b[1], b[2], b[3]]) & 0x7fff_ffff
        })
    };
    if head[0] & 0x80 == 0 {
        let stream = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) & 0x7fff_ffff;
        return Ok(Some(Frame::Data {
            stream,
            data: payload,
            fin: flags & FLAG_FIN != 0,
        }));
    }
    let kind = u16::from_be_bytes([head[2], head[3]]);
    Ok(Some(match kind {
        SYN_REPLY => Frame::Reply {
            stream: word(0),
            fin: flags & FLAG_FIN != 0,
        },
        RST_STREAM => Frame::Reset { stream: word(0) },
        PING => Frame::Ping(
            payload
                .get(0..4)
                .map_or(0, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]])),
        ),
        GOAWAY => Frame::GoAway,
        _ => Frame::Other,
    }))
}

fn control(kind: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(8 + payload.len());
    f.extend_from_slice(&(0x8000 | VERSION).to_be_bytes());
    f.extend_from_slice(&kind.to_be_bytes());
    f.push(flags);
    f.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
    f.extend_from_slice(payload);
    f
}

/// The client's side of a connection: stream ids and the header compressor's state.
#[derive(Debug, Default)]
pub struct Client {
    next_stream: u32,
    headers_started: bool,
}

impl Client {
    /// A fresh connection's client.
    pub fn new() -> Self {
        Client {
            next_stream: 1,
            headers_started: false,
        }
    }

    /// The header block for `headers`, as the next piece of the connection's zlib stream.
    fn header_block(&mut self, headers: &[(&str, &str)]) -> Vec<u8> {
        let mut plain = Vec::new();
        plain.extend_from_slice(&(headers.len() as u32).to_be_bytes());
        for (k, v) in headers {
            let k = k.to_ascii_lowercase();
            plain.extend_from_slice(&(k.len() as u32).to_be_bytes());
            plain.extend_from_slice(k.as_bytes());
            plain.extend_from_slice(&(v.len() as u32).to_be_bytes());
            plain.extend_from_slice(v.as_bytes());
        }
        let mut out = Vec::with_capacity(plain.len() + 16);
        if !self.headers_started {
            // zlib: deflate, 32 KiB window, no preset dictionary.
            out.extend_from_slice(&[0x78, 0x01]);
            self.headers_started = true;
        }
        for chunk in plain.chunks(u16::MAX as usize) {
            // A stored block that is not the last: the stream goes on with the next frame.
            let n = chunk.len() as u16;
            out.push(0);
            out.extend_from_slice(&n.to_le_bytes());
            out.extend_from_slice(&(!n).to_le_bytes());
            out.extend_from_slice(chunk);
        }
        // An empty stored block, as a zlib sync flush ends: it makes the reader hand over
        // what it has without looking past this frame.
        out.extend_from_slice(&[0, 0, 0, 0xff, 0xff]);
        out
    }

    /// A `SYN_STREAM` opening the next stream with `headers`; returns its id and the frame.
    pub fn open(&mut self, headers: &[(&str, &str)]) -> (u32, Vec<u8>) {
        let id = self.next_stream;
        self.next_stream += 2;
        let mut payload = Vec::new();
        payload.extend_from_slice(&id.to_be_bytes());
        payload.extend_from_slice(&0u32.to_be_bytes());
        // Priority 0, slot 0.
        payload.extend_from_slice(&[0, 0]);
        payload.extend_from_slice(&self.header_block(headers));
        (id, control(SYN_STREAM, 0, &payload))
    }
}

/// Data frames carrying `data` on `stream` (at least one, so that an empty `fin` is sent).
pub fn data(stream: u32, data: &[u8], fin: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 8);
    let mut chunks: Vec<&[u8]> = data.chunks(MAX_DATA).collect();
    if chunks.is_empty() {
        chunks.push(&[]);
    }
    let last = chunks.len() - 1;
    for (i, c) in chunks.into_iter().enumerate() {
        out.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
        out.push(if fin && i == last { FLAG_FIN } else { 0 });
        out.extend_from_slice(&(c.len() as u32).to_be_bytes()[1..]);
        out.extend_from_slice(c);
    }
    out
}

/// The answer to a ping.
pub fn pong(id: u32) -> Vec<u8> {
    control(PING, 0, &id.to_be_bytes())
}

/// Writes a frame and flushes it.
pub async fn write<W: AsyncWrite + Unpin>(w: &mut W, frame: &[u8]) -> std::io::Result<()> {
    w.write_all(frame).await?;
    w.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_round_trip() {
        let mut c = Client::new();
        let (a, syn) = c.open(&[("streamType", "error")]);
        let (b, _) = c.open(&[("streamType", "stdin")]);
        assert_eq!((a, b), (1, 3));
        assert_eq!(&syn[..4], &[0x80, 0x03, 0x00, 0x01]);
        // The block: zlib header, then one stored block holding the plain header block.
        let block = &syn[8 + 10..];
        assert_eq!(&block[..2], &[0x78, 0x01]);
        let plain_len = u16::from_le_bytes([block[3], block[4]]) as usize;
        assert_eq!(block.len(), 2 + 5 + plain_len + 5);
        assert!(block.ends_with(&[0, 0, 0, 0xff, 0xff]));
        assert!(block.windows(10).any(|w| w == b"streamtype"));

        let mut bytes = data(3, b"hello", false);
        bytes.extend(data(3, b"", true));
        bytes.extend(control(SYN_REPLY, FLAG_FIN, &5u32.to_be_bytes()));
        bytes.extend(pong(7));
        bytes.extend(control(9, 0, &[0; 8]));
        let mut r = &bytes[..];
        let mut got = Vec::new();
        while let Some(f) = read_frame(&mut r).await.unwrap() {
            got.push(f);
        }
        assert_eq!(
            got,
            vec![
                Frame::Data {
                    stream: 3,
                    data: b"hello".to_vec(),
                    fin: false
                },
                Frame::Data {
                    stream: 3,
                    data: vec![],
                    fin: true
                },
                Frame::Reply {
                    stream: 5,
                    fin: true
                },
                Frame::Ping(7),
                Frame::Other,
            ]
        );
    }

    #[test]
    fn big_data_is_split() {
        let d = data(1, &vec![7u8; MAX_DATA + 1], true);
        assert_eq!(d.len(), 2 * 8 + MAX_DATA + 1);
        assert_eq!(d[4], 0);
        assert_eq!(d[8 + MAX_DATA + 4], FLAG_FIN);
    }
}
