//! The nf_tables netlink protocol, written by hand: messages are built into one buffer and
//! sent to the kernel as a single batch, which the kernel applies as one transaction (all of
//! it or none of it). Talking to the kernel directly, rather than through the `nft` program,
//! is what keeps a full sync of 10,000 services within a second: `nft` spends most of that
//! time parsing and checking its own text.
//!
//! Layout: every message is a `nlmsghdr` (16 bytes, host order), an `nfgenmsg` (family,
//! version, resource id in network order) and attributes (`nlattr`: length and type in host
//! order, payload padded to 4 bytes). nf_tables integers inside attributes are big-endian.

use std::os::fd::{AsRawFd, OwnedFd};

use nix::sys::socket::{
    bind, recv, send, setsockopt, socket, sockopt, AddressFamily, MsgFlags, NetlinkAddr, SockFlag,
    SockProtocol, SockType,
};

/// `nlmsghdr` flags.
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
/// `NLM_F_CREATE`: make the object if it is missing.
pub const NLM_F_CREATE: u16 = 0x400;
/// `NLM_F_EXCL`: fail if it exists.
pub const NLM_F_EXCL: u16 = 0x200;
/// `NLM_F_APPEND` (rules: at the end of the chain).
pub const NLM_F_APPEND: u16 = 0x800;

const NLMSG_ERROR: u16 = 0x2;
const NLMSG_DONE: u16 = 0x3;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NLA_F_NESTED: u16 = 0x8000;

/// The nf_tables message types.
#[derive(Debug, Clone, Copy)]
#[repr(u16)]
pub enum Msg {
    NewTable = 0,
    DelTable = 2,
    NewChain = 3,
    DelChain = 5,
    NewRule = 6,
    DelRule = 8,
    NewSet = 9,
    DelSet = 11,
    NewSetElem = 12,
    DelSetElem = 14,
}

/// An error from the kernel or the socket.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The kernel refused a message of the batch (the whole batch was rolled back).
    #[error("the kernel refused {what}: {errno}")]
    Refused {
        /// Which message (its description).
        what: String,
        /// The kernel's errno.
        errno: nix::errno::Errno,
    },
    /// The netlink socket failed.
    #[error("netlink: {0}")]
    Socket(#[from] nix::errno::Errno),
    /// The kernel's answer could not be read.
    #[error("netlink: unexpected answer: {0}")]
    Protocol(String),
}

/// Builds attributes into a buffer; nested attributes are closed by [`Attrs::end`].
#[derive(Default)]
pub struct Attrs {
    buf: Vec<u8>,
    open: Vec<usize>,
}

impl Attrs {
    fn pad(&mut self) {
        while self.buf.len() % 4 != 0 {
            self.buf.push(0);
        }
    }

    /// An attribute with raw bytes.
    pub fn bytes(&mut self, ty: u16, data: &[u8]) -> &mut Self {
        let len = (4 + data.len()) as u16;
        self.buf.extend_from_slice(&len.to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(data);
        self.pad();
        self
    }

    /// A NUL-terminated string.
    pub fn str(&mut self, ty: u16, s: &str) -> &mut Self {
        let mut v = Vec::with_capacity(s.len() + 1);
        v.extend_from_slice(s.as_bytes());
        v.push(0);
        self.bytes(ty, &v)
    }

    /// A big-endian u32.
    pub fn u32(&mut self, ty: u16, v: u32) -> &mut Self {
        self.bytes(ty, &v.to_be_bytes())
    }

    /// A big-endian u64.
    pub fn u64(&mut self, ty: u16, v: u64) -> &mut Self {
        self.bytes(ty, &v.to_be_bytes())
    }

    /// Opens a nested attribute.
    pub fn nest(&mut self, ty: u16) -> &mut Self {
        self.open.push(self.buf.len());
        self.buf.extend_from_slice(&0u16.to_ne_bytes());
        self.buf
            .extend_from_slice(&(ty | NLA_F_NESTED).to_ne_bytes());
        self
    }

    /// Closes the innermost nested attribute.
    pub fn end(&mut self) -> &mut Self {
        let start = self.open.pop().expect("a nested attribute to close");
        let len = (self.buf.len() - start) as u16;
        self.buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
        self
    }
}

/// A batch of nf_tables messages, applied by the kernel as one transaction.
pub struct Batch {
    buf: Vec<u8>,
    seq: u32,
    count: usize,
    /// Where the last message added starts (it asks for the acknowledgement).
    last: usize,
    family: u8,
}

impl Batch {
    /// A new batch for one address family (`NFPROTO_IPV4` = 2, `NFPROTO_INET` = 1).
    pub fn new(family: u8) -> Batch {
        let mut b = Batch {
            buf: Vec::with_capacity(64 * 1024),
            seq: 1,
            count: 0,
            last: 0,
            family,
        };
        b.header(NFNL_MSG_BATCH_BEGIN, 0, 0, NFNL_SUBSYS_NFTABLES);
        b
    }

    fn header(&mut self, ty: u16, flags: u16, family: u8, res_id: u16) -> usize {
        let start = self.buf.len();
        self.buf.extend_from_slice(&0u32.to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf
            .extend_from_slice(&(flags | NLM_F_REQUEST).to_ne_bytes());
        self.buf.extend_from_slice(&self.seq.to_ne_bytes());
        self.buf.extend_from_slice(&0u32.to_ne_bytes());
        self.buf.push(family);
        self.buf.push(0);
        self.buf.extend_from_slice(&res_id.to_be_bytes());
        self.seq += 1;
        let len = (self.buf.len() - start) as u32;
        self.buf[start..start + 4].copy_from_slice(&len.to_ne_bytes());
        start
    }

    /// Adds one message with its attributes.
    pub fn push(&mut self, msg: Msg, flags: u16, attrs: &Attrs) {
        let start = self.header(
            (NFNL_SUBSYS_NFTABLES << 8) | msg as u16,
            flags,
            self.family,
            0,
        );
        self.buf.extend_from_slice(&attrs.buf);
        let len = (self.buf.len() - start) as u32;
        self.buf[start..start + 4].copy_from_slice(&len.to_ne_bytes());
        self.count += 1;
        self.last = start;
    }

    /// How many messages the batch holds.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Its size in bytes.
    pub fn bytes(&self) -> usize {
        self.buf.len()
    }

    /// Sends the batch and waits for the kernel's verdict.
    pub fn send(mut self, sock: &Socket) -> Result<(), Error> {
        if self.count == 0 {
            return Ok(());
        }
        // Ask for an acknowledgement of the last message only: the kernel reports every
        // failing message anyway, and acknowledging 100,000 messages would overflow the
        // socket's receive buffer.
        let last_seq = self.seq - 1;
        let flags_at = self.last + 6;
        let flags = u16::from_ne_bytes([self.buf[flags_at], self.buf[flags_at + 1]]) | NLM_F_ACK;
        self.buf[flags_at..flags_at + 2].copy_from_slice(&flags.to_ne_bytes());
        self.header(NFNL_MSG_BATCH_END, 0, 0, NFNL_SUBSYS_NFTABLES);
        sock.send_all(&self.buf)?;
        let mut failure = None;
        let mut rbuf = vec![0u8; 1 << 16];
        loop {
            let n = recv(sock.fd.as_raw_fd(), &mut rbuf, MsgFlags::empty())?;
            let mut off = 0;
            while off + 16 <= n {
                let len =
                    u32::from_ne_bytes(rbuf[off..off + 4].try_into().expect("4 bytes")) as usize;
                let ty = u16::from_ne_bytes([rbuf[off + 4], rbuf[off + 5]]);
                let seq = u32::from_ne_bytes(rbuf[off + 8..off + 12].try_into().expect("4 bytes"));
                if len < 16 || off + len > n {
                    return Err(Error::Protocol(format!("message of {len} bytes")));
                }
                if ty == NLMSG_ERROR {
                    let code =
                        i32::from_ne_bytes(rbuf[off + 16..off + 20].try_into().expect("4 bytes"));
                    if code != 0 && failure.is_none() {
                        failure = Some(Error::Refused {
                            what: self.describe(seq),
                            errno: nix::errno::Errno::from_raw(-code),
                        });
                    }
                    if seq == last_seq {
                        return failure.map_or(Ok(()), Err);
                    }
                } else if ty == NLMSG_DONE {
                    return failure.map_or(Ok(()), Err);
                }
                off += (len + 3) & !3;
            }
        }
    }

    /// What the message with sequence number `seq` does, read back from the batch (kept
    /// out of the way of building batches of 100,000 messages).
    fn describe(&self, seq: u32) -> String {
        let mut off = 0;
        while off + 20 <= self.buf.len() {
            let len =
                u32::from_ne_bytes(self.buf[off..off + 4].try_into().expect("4 bytes")) as usize;
            let ty = u16::from_ne_bytes([self.buf[off + 4], self.buf[off + 5]]);
            let s = u32::from_ne_bytes(self.buf[off + 8..off + 12].try_into().expect("4 bytes"));
            if s == seq {
                let attrs = &self.buf[off + 20..off + len];
                let (verb, name_attr) = match ty & 0xff {
                    0 => ("table", 1),
                    2 => ("deleting table", 1),
                    3 => ("chain", 3),
                    5 => ("deleting chain", 3),
                    6 => ("a rule in chain", 2),
                    8 => ("flushing chain", 2),
                    9 => ("set", 2),
                    11 => ("deleting set", 2),
                    12 => ("elements of set", 2),
                    14 => ("deleting elements of set", 2),
                    _ => ("message", 0),
                };
                return format!(
                    "{verb} {}",
                    string_attr(attrs, name_attr).unwrap_or_default()
                );
            }
            off += (len + 3) & !3;
        }
        format!("message {seq}")
    }
}

/// A netlink socket to nf_tables, in the network namespace of the thread that opened it.
pub struct Socket {
    fd: OwnedFd,
}

impl Socket {
    /// Opens one. Its send buffer is raised so that a whole batch fits in one message.
    pub fn open() -> Result<Socket, Error> {
        let fd = socket(
            AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkNetFilter,
        )?;
        bind(fd.as_raw_fd(), &NetlinkAddr::new(0, 0))?;
        // Raised beyond the system limit where we may (root); otherwise as far as allowed.
        if setsockopt(&fd, sockopt::RcvBufForce, &(4 << 20)).is_err() {
            let _ = setsockopt(&fd, sockopt::RcvBuf, &(4 << 20));
        }
        Ok(Socket { fd })
    }

    fn send_all(&self, buf: &[u8]) -> Result<(), Error> {
        let want = buf.len() + 4096;
        if setsockopt(&self.fd, sockopt::SndBufForce, &want).is_err() {
            let _ = setsockopt(&self.fd, sockopt::SndBuf, &want);
        }
        let n = send(self.fd.as_raw_fd(), buf, MsgFlags::empty())?;
        if n != buf.len() {
            return Err(Error::Protocol(format!("sent {n} of {} bytes", buf.len())));
        }
        Ok(())
    }
}

/// The string attribute of type `ty` among `attrs` (top level only).
fn string_attr(attrs: &[u8], ty: u16) -> Option<String> {
    let mut off = 0;
    while off + 4 <= attrs.len() {
        let len = u16::from_ne_bytes([attrs[off], attrs[off + 1]]) as usize;
        let t = u16::from_ne_bytes([attrs[off + 2], attrs[off + 3]]) & !NLA_F_NESTED;
        if len < 4 || off + len > attrs.len() {
            return None;
        }
        if t == ty {
            let v = &attrs[off + 4..off + len];
            let v = v.strip_suffix(&[0]).unwrap_or(v);
            return Some(String::from_utf8_lossy(v).into_owned());
        }
        off += (len + 3) & !3;
    }
    None
}
