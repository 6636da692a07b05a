//! The DNS server's UDP socket: answers leave from the address their query was sent to.
//!
//! A server bound to `0.0.0.0` that replies with a plain `sendto` lets the kernel pick the
//! source address by route, which on a node with several addresses may not be the one the
//! client asked. A client reaching the server through a Service (DNAT to the node's address)
//! then gets a reply that matches no connection and drops it. So the query's destination is
//! read with `IP_PKTINFO` and the reply is sent from it, as DNS servers commonly do.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::AsRawFd;

use nix::sys::socket::{
    recvmsg, sendmsg, setsockopt, sockopt, ControlMessage, ControlMessageOwned, MsgFlags,
    SockaddrStorage,
};
use tokio::io::Interest;

/// A UDP socket that knows which local address each datagram was sent to.
pub struct Socket {
    inner: tokio::net::UdpSocket,
    pktinfo: bool,
}

/// A received datagram's sender and the local address it was sent to (when known).
#[derive(Debug, Clone, Copy)]
pub struct Peer {
    /// The sender.
    pub from: SocketAddr,
    /// The address the datagram was sent to.
    pub to: Option<Ipv4Addr>,
}

impl Socket {
    /// Binds `addr` (IPv4 sockets learn each datagram's destination).
    pub fn bind(addr: SocketAddr) -> io::Result<Socket> {
        let std = std::net::UdpSocket::bind(addr)?;
        std.set_nonblocking(true)?;
        let pktinfo = addr.is_ipv4() && setsockopt(&std, sockopt::Ipv4PacketInfo, &true).is_ok();
        Ok(Socket {
            inner: tokio::net::UdpSocket::from_std(std)?,
            pktinfo,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    /// Receives a datagram into `buf`: its length and peer.
    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<(usize, Peer)> {
        let fd = self.inner.as_raw_fd();
        self.inner
            .async_io(Interest::READABLE, || {
                let mut iov = [io::IoSliceMut::new(buf)];
                let mut cmsg = nix::cmsg_space!(nix::libc::in_pktinfo);
                let msg =
                    recvmsg::<SockaddrStorage>(fd, &mut iov, Some(&mut cmsg), MsgFlags::empty())?;
                let from = msg
                    .address
                    .and_then(|a| {
                        a.as_sockaddr_in()
                            .map(|s| SocketAddr::from((s.ip(), s.port())))
                            .or_else(|| {
                                a.as_sockaddr_in6()
                                    .map(|s| SocketAddr::from((s.ip(), s.port())))
                            })
                    })
                    .ok_or_else(|| io::Error::other("a datagram without a sender"))?;
                let mut to = None;
                for c in msg.cmsgs()? {
                    if let ControlMessageOwned::Ipv4PacketInfo(info) = c {
                        to = Some(Ipv4Addr::from(u32::from_be(info.ipi_addr.s_addr)));
                    }
                }
                Ok((msg.bytes, Peer { from, to }))
            })
            .await
    }

    /// Sends `data` back to `peer`, from the address it wrote to.
    pub async fn reply(&self, data: &[u8], peer: Peer) -> io::Result<()> {
        let fd = self.inner.as_raw_fd();
        let dest = SockaddrStorage::from(peer.from);
        self.inner
            .async_io(Interest::WRITABLE, || {
                let iov = [io::IoSlice::new(data)];
                let info;
                let cmsgs: Vec<ControlMessage<'_>> = match peer.to.filter(|_| self.pktinfo) {
                    Some(src) => {
                        info = nix::libc::in_pktinfo {
                            ipi_ifindex: 0,
                            ipi_spec_dst: nix::libc::in_addr {
                                s_addr: u32::from(src).to_be(),
                            },
                            ipi_addr: nix::libc::in_addr { s_addr: 0 },
                        };
                        vec![ControlMessage::Ipv4PacketInfo(&info)]
                    }
                    None => Vec::new(),
                };
                sendmsg(fd, &iov, &cmsgs, MsgFlags::empty(), Some(&dest))?;
                Ok(())
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn replies_leave_from_the_address_the_query_was_sent_to() {
        let server = Socket::bind("0.0.0.0:0".parse().unwrap()).unwrap();
        let port = server.local_addr().unwrap().port();
        let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        client
            .set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        // 127.0.0.2 is this machine's too; a reply chosen by route would come from
        // 127.0.0.1.
        for to in ["127.0.0.2", "127.0.0.1"] {
            client.send_to(b"ping", (to, port)).unwrap();
            let mut buf = [0u8; 16];
            let (n, peer) = server.recv(&mut buf).await.unwrap();
            assert_eq!(&buf[..n], b"ping");
            assert_eq!(peer.to, Some(to.parse().unwrap()));
            assert_eq!(peer.from, client.local_addr().unwrap());
            server.reply(b"pong", peer).await.unwrap();
            let (n, from) = client.recv_from(&mut buf).unwrap();
            assert_eq!(&buf[..n], b"pong");
            assert_eq!(
                from,
                SocketAddr::from((to.parse::<Ipv4Addr>().unwrap(), port))
            );
        }
    }
}
