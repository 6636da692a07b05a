//! nf_tables expressions (the steps of a rule) and their netlink encoding, plus the
//! registers, constants and data they use.

use super::netlink::Attrs;

/// The verdict register.
pub const REG_VERDICT: u32 = 0;
/// The first 32-bit register (`NFT_REG32_00`); a concatenation fills the ones after it.
pub const REG32_0: u32 = 8;

/// Payload bases.
pub const NETWORK: u32 = 1;
/// The transport header.
pub const TRANSPORT: u32 = 2;

/// Meta keys.
pub const META_MARK: u32 = 3;
/// The layer-4 protocol.
pub const META_L4PROTO: u32 = 16;

/// Conntrack keys.
pub const CT_STATE: u32 = 0;
/// The conntrack status bits (`IPS_DST_NAT` = 0x20).
pub const CT_STATUS: u32 = 2;
/// Original-direction destination address (ipv4).
pub const CT_DST_IP: u32 = 20;
/// Original-direction destination port.
pub const CT_PROTO_DST: u32 = 12;

/// `cmp` operators.
pub const EQ: u32 = 0;
/// Dynset: add the element, or refresh its timeout if it exists (NFT_DYNSET_OP_UPDATE).
pub const DYNSET_UPDATE: u32 = 1;
/// Dynset: add the element if it does not exist (NFT_DYNSET_OP_ADD).
pub const DYNSET_ADD: u32 = 0;
/// Dynset: remove the element (NFT_DYNSET_OP_DELETE).
pub const DYNSET_DELETE: u32 = 2;
/// Not equal.
pub const NEQ: u32 = 1;

/// A verdict.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// Let it through.
    Accept,
    /// Drop it.
    Drop,
    /// Back to the calling chain.
    Return,
    /// Into a chain, coming back after it.
    Jump(String),
    /// Into a chain, not coming back.
    Goto(String),
}

impl Verdict {
    fn encode(&self, a: &mut Attrs) {
        // NFTA_DATA_VERDICT { NFTA_VERDICT_CODE, NFTA_VERDICT_CHAIN }
        a.nest(2);
        let (code, chain): (i32, Option<&str>) = match self {
            Verdict::Accept => (1, None),
            Verdict::Drop => (0, None),
            Verdict::Return => (-5, None),
            Verdict::Jump(c) => (-3, Some(c)),
            Verdict::Goto(c) => (-4, Some(c)),
        };
        a.u32(1, code as u32);
        if let Some(c) = chain {
            a.str(2, c);
        }
        a.end();
    }
}

/// Data: raw bytes or a verdict.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Data {
    /// Bytes (already in the byte order the register holds).
    Value(Vec<u8>),
    /// A verdict.
    Verdict(Verdict),
}

impl Data {
    /// Encodes it as a nested attribute of type `ty`.
    pub fn encode(&self, a: &mut Attrs, ty: u16) {
        a.nest(ty);
        match self {
            Data::Value(v) => {
                a.bytes(1, v);
            }
            Data::Verdict(v) => v.encode(a),
        }
        a.end();
    }
}

/// One expression of a rule.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Expr {
    /// Load `len` bytes at `offset` of a header into `dreg`.
    Payload {
        base: u32,
        offset: u32,
        len: u32,
        dreg: u32,
    },
    /// Load packet metadata into `dreg`.
    Meta { key: u32, dreg: u32 },
    /// Set packet metadata from `sreg`.
    MetaSet { key: u32, sreg: u32 },
    /// Load conntrack data into `dreg` (original direction when `original`).
    Ct { key: u32, dreg: u32, original: bool },
    /// Compare `sreg` with `data`; the rule stops here unless it holds.
    Cmp { sreg: u32, op: u32, data: Vec<u8> },
    /// `dreg = (sreg & mask) ^ xor`.
    Bitwise {
        sreg: u32,
        dreg: u32,
        mask: Vec<u8>,
        xor: Vec<u8>,
    },
    /// Put `data` into `dreg`.
    Immediate { dreg: u32, data: Data },
    /// Look `sreg` up in `set`; into `dreg` for maps (the verdict register for verdict maps);
    /// `inverse` matches when absent.
    Lookup {
        set: String,
        sreg: u32,
        dreg: Option<u32>,
        inverse: bool,
    },
    /// A random number below `modulus` into `dreg`.
    Numgen { dreg: u32, modulus: u32 },
    /// Destination NAT to the address in `addr` and port in `port`.
    Dnat { addr: u32, port: Option<u32> },
    /// Source NAT to the address in `addr`.
    Snat { addr: u32 },
    /// Masquerade (source NAT to the outgoing interface's address).
    Masquerade { fully_random: bool },
    /// Reject: with a TCP reset (the rule must have matched TCP), or else ICMP port
    /// unreachable.
    Reject { tcp_reset: bool },
    /// Changes `set` from the packet path: adds `sreg_key` (with `sreg_data` for a map)
    /// or refreshes its timeout ([`DYNSET_UPDATE`]), adds it only ([`DYNSET_ADD`]), or
    /// removes it ([`DYNSET_DELETE`]).
    Dynset {
        op: u32,
        set: String,
        sreg_key: u32,
        sreg_data: Option<u32>,
        timeout_ms: Option<u64>,
    },
    /// `fib daddr type` into `dreg` (an address type: 2 is local).
    FibDaddrType { dreg: u32 },
    /// Count packets and bytes.
    Counter,
}

impl Expr {
    fn name(&self) -> &'static str {
        match self {
            Expr::Payload { .. } => "payload",
            Expr::Meta { .. } | Expr::MetaSet { .. } => "meta",
            Expr::Ct { .. } => "ct",
            Expr::Cmp { .. } => "cmp",
            Expr::Bitwise { .. } => "bitwise",
            Expr::Immediate { .. } => "immediate",
            Expr::Lookup { .. } => "lookup",
            Expr::Numgen { .. } => "numgen",
            Expr::Dnat { .. } | Expr::Snat { .. } => "nat",
            Expr::Masquerade { .. } => "masq",
            Expr::Reject { .. } => "reject",
            Expr::Dynset { .. } => "dynset",
            Expr::FibDaddrType { .. } => "fib",
            Expr::Counter => "counter",
        }
    }

    /// Encodes it as one `NFTA_LIST_ELEM` of a rule's expression list.
    pub fn encode(&self, a: &mut Attrs) {
        a.nest(1); // NFTA_LIST_ELEM
        a.str(1, self.name()); // NFTA_EXPR_NAME
        a.nest(2); // NFTA_EXPR_DATA
        match self {
            Expr::Payload {
                base,
                offset,
                len,
                dreg,
            } => {
                a.u32(1, *dreg).u32(2, *base).u32(3, *offset).u32(4, *len);
            }
            Expr::Meta { key, dreg } => {
                a.u32(1, *dreg).u32(2, *key);
            }
            Expr::MetaSet { key, sreg } => {
                a.u32(2, *key).u32(3, *sreg);
            }
            Expr::Ct {
                key,
                dreg,
                original,
            } => {
                a.u32(1, *dreg).u32(2, *key);
                if *original {
                    a.bytes(3, &[0]);
                }
            }
            Expr::Cmp { sreg, op, data } => {
                a.u32(1, *sreg).u32(2, *op);
                Data::Value(data.clone()).encode(a, 3);
            }
            Expr::Bitwise {
                sreg,
                dreg,
                mask,
                xor,
            } => {
                a.u32(1, *sreg).u32(2, *dreg).u32(3, mask.len() as u32);
                Data::Value(mask.clone()).encode(a, 4);
                Data::Value(xor.clone()).encode(a, 5);
            }
            Expr::Immediate { dreg, data } => {
                a.u32(1, *dreg);
                data.encode(a, 2);
            }
            Expr::Lookup {
                set,
                sreg,
                dreg,
                inverse,
            } => {
                a.str(1, set).u32(2, *sreg);
                if let Some(d) = dreg {
                    a.u32(3, *d);
                }
                if *inverse {
                    a.u32(5, 1);
                }
            }
            Expr::Numgen { dreg, modulus } => {
                // NFT_NG_RANDOM
                a.u32(1, *dreg).u32(2, *modulus).u32(3, 1);
            }
            Expr::Dnat { addr, port } => {
                // NFT_NAT_DNAT, NFPROTO_IPV4, NF_NAT_RANGE_MAP_IPS (| PROTO_SPECIFIED)
                a.u32(1, 1).u32(2, 2).u32(3, *addr);
                let mut flags = 1;
                if let Some(p) = port {
                    a.u32(5, *p);
                    flags |= 2;
                }
                a.u32(7, flags);
            }
            Expr::Snat { addr } => {
                // NFT_NAT_SNAT, NFPROTO_IPV4, NF_NAT_RANGE_MAP_IPS
                a.u32(1, 0).u32(2, 2).u32(3, *addr).u32(7, 1);
            }
            Expr::Masquerade { fully_random } => {
                if *fully_random {
                    // NF_NAT_RANGE_PROTO_RANDOM_FULLY
                    a.u32(1, 16);
                }
            }
            Expr::Reject { tcp_reset: true } => {
                // NFT_REJECT_TCP_RST
                a.u32(1, 1);
            }
            Expr::Reject { tcp_reset: false } => {
                // NFT_REJECT_ICMP_UNREACH, port unreachable
                a.u32(1, 0).bytes(2, &[3]);
            }
            Expr::Dynset {
                op,
                set,
                sreg_key,
                sreg_data,
                timeout_ms,
            } => {
                a.str(1, set).u32(3, *op).u32(4, *sreg_key);
                if let Some(r) = sreg_data {
                    a.u32(5, *r);
                }
                if let Some(t) = timeout_ms {
                    a.u64(6, *t);
                }
            }
            Expr::FibDaddrType { dreg } => {
                // NFT_FIB_RESULT_ADDRTYPE, NFTA_FIB_F_DADDR
                a.u32(1, *dreg).u32(2, 3).u32(3, 2);
            }
            Expr::Counter => {}
        }
        a.end();
        a.end();
    }
}

/// Loads `ip daddr` into `reg`.
pub fn ip_daddr(reg: u32) -> Expr {
    Expr::Payload {
        base: NETWORK,
        offset: 16,
        len: 4,
        dreg: reg,
    }
}

/// Loads `ip saddr` into `reg`.
pub fn ip_saddr(reg: u32) -> Expr {
    Expr::Payload {
        base: NETWORK,
        offset: 12,
        len: 4,
        dreg: reg,
    }
}

/// Loads the transport destination port into `reg`.
pub fn th_dport(reg: u32) -> Expr {
    Expr::Payload {
        base: TRANSPORT,
        offset: 2,
        len: 2,
        dreg: reg,
    }
}

/// Loads the layer-4 protocol into `reg`.
pub fn l4proto(reg: u32) -> Expr {
    Expr::Meta {
        key: META_L4PROTO,
        dreg: reg,
    }
}

/// Matches an IPv4 prefix held in `reg`: `(reg & mask) == net` (or `!=`).
pub fn prefix(reg: u32, net: std::net::Ipv4Addr, len: u8, equal: bool) -> Vec<Expr> {
    let mask = if len == 0 {
        0u32
    } else {
        u32::MAX << (32 - u32::from(len))
    };
    vec![
        Expr::Bitwise {
            sreg: reg,
            dreg: reg,
            mask: mask.to_be_bytes().to_vec(),
            xor: vec![0; 4],
        },
        Expr::Cmp {
            sreg: reg,
            op: if equal { EQ } else { NEQ },
            data: (u32::from(net) & mask).to_be_bytes().to_vec(),
        },
    ]
}

/// Sets bits of the packet mark: `meta mark set meta mark | bits`.
pub fn set_mark_bits(bits: u32) -> Vec<Expr> {
    vec![
        Expr::Meta {
            key: META_MARK,
            dreg: 1,
        },
        Expr::Bitwise {
            sreg: 1,
            dreg: 1,
            mask: (!bits).to_ne_bytes().to_vec(),
            xor: bits.to_ne_bytes().to_vec(),
        },
        Expr::MetaSet {
            key: META_MARK,
            sreg: 1,
        },
    ]
}

/// An IPv4 address, a protocol and a port as one concatenated key (each padded to 4 bytes).
pub fn addr_proto_port(addr: std::net::Ipv4Addr, proto: u8, port: u16) -> Vec<u8> {
    let mut k = Vec::with_capacity(12);
    k.extend_from_slice(&addr.octets());
    k.extend_from_slice(&[proto, 0, 0, 0]);
    k.extend_from_slice(&port.to_be_bytes());
    k.extend_from_slice(&[0, 0]);
    k
}

/// An IPv4 address and a port as concatenated data (as a DNAT map's value).
pub fn addr_port(addr: std::net::Ipv4Addr, port: u16) -> Vec<u8> {
    let mut k = Vec::with_capacity(8);
    k.extend_from_slice(&addr.octets());
    k.extend_from_slice(&port.to_be_bytes());
    k.extend_from_slice(&[0, 0]);
    k
}
