//! nf_tables over netlink: the objects Skiff creates (one table, its chains, sets, maps,
//! elements and rules) and the batch that carries them to the kernel.

pub mod expr;
pub mod netlink;

use expr::{Data, Expr};
use netlink::{Attrs, Batch, Msg, NLM_F_APPEND, NLM_F_CREATE};

/// `NFPROTO_IPV4`: the family of Skiff's table.
pub const IPV4: u8 = 2;

/// Set key and data types as `nft` names them (so `nft list` prints them readably); a
/// concatenation is each type shifted in 6 bits at a time.
pub mod types {
    /// `verdict`.
    pub const VERDICT: u32 = 1;
    /// `integer`.
    pub const INTEGER: u32 = 4;
    /// `ipv4_addr`.
    pub const IPV4_ADDR: u32 = 7;
    /// `inet_proto`.
    pub const INET_PROTO: u32 = 12;
    /// `inet_service`.
    pub const INET_SERVICE: u32 = 13;
    /// `mark`: a 32-bit number in host byte order (what `numgen` produces); `nft` can list
    /// it inside a concatenation, which it cannot do for a plain `integer`.
    pub const MARK: u32 = 19;
    /// The kernel's data type of a verdict map.
    pub const KERNEL_VERDICT: u32 = 0xffff_ff00;

    /// A concatenation of types.
    pub fn concat(parts: &[u32]) -> u32 {
        parts.iter().fold(0, |acc, t| (acc << 6) | t)
    }
}

/// A base chain's hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hook {
    /// `NF_INET_PRE_ROUTING` 0, `LOCAL_IN` 1, `FORWARD` 2, `LOCAL_OUT` 3, `POST_ROUTING` 4.
    pub hook: u32,
    /// Priority (lower runs first): dstnat is -100, srcnat 100, filter 0.
    pub priority: i32,
    /// `"nat"` or `"filter"`.
    pub kind: &'static str,
}

/// A set or map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Set {
    /// Its name.
    pub name: String,
    /// Key type (see [`types`]) and length in bytes.
    pub key_type: u32,
    /// Key length in bytes (each concatenated field padded to 4).
    pub key_len: u32,
    /// For a map: its data type and length (a verdict map: [`types::KERNEL_VERDICT`], 0).
    pub data: Option<(u32, u32)>,
    /// Elements expire after this many milliseconds (and packets may add them).
    pub timeout_ms: Option<u64>,
}

/// One element of a set or map.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Element {
    /// The key's bytes.
    pub key: Vec<u8>,
    /// For a map: the value.
    pub data: Option<Data>,
}

/// Adds Skiff's messages to a batch.
pub struct Writer {
    batch: Batch,
    table: String,
    /// Sets need an ID unique within the batch.
    set_ids: u32,
    rules: usize,
}

impl Writer {
    /// A batch for the IPv4 table `table`.
    pub fn new(table: &str) -> Writer {
        Writer {
            batch: Batch::new(IPV4),
            table: table.to_string(),
            set_ids: 0,
            rules: 0,
        }
    }

    fn base(&self, table_attr: u16) -> Attrs {
        let mut a = Attrs::default();
        a.str(table_attr, &self.table);
        a
    }

    /// Creates the table if it does not exist.
    pub fn add_table(&mut self) {
        let a = self.base(1);
        self.batch.push(Msg::NewTable, NLM_F_CREATE, &a);
    }

    /// Deletes the table and everything in it.
    pub fn delete_table(&mut self) {
        let a = self.base(1);
        self.batch.push(Msg::DelTable, 0, &a);
    }

    /// Creates a chain (a base chain when `hook` is given) if it does not exist.
    pub fn add_chain(&mut self, name: &str, hook: Option<Hook>) {
        let mut a = self.base(1);
        a.str(3, name);
        if let Some(h) = hook {
            a.nest(4).u32(1, h.hook).u32(2, h.priority as u32).end();
            a.str(7, h.kind);
        }
        self.batch.push(Msg::NewChain, NLM_F_CREATE, &a);
    }

    /// Removes every rule of a chain.
    pub fn flush_chain(&mut self, name: &str) {
        let mut a = self.base(1);
        a.str(2, name);
        self.batch.push(Msg::DelRule, 0, &a);
    }

    /// Deletes an (empty, unreferenced) chain.
    pub fn delete_chain(&mut self, name: &str) {
        let mut a = self.base(1);
        a.str(3, name);
        self.batch.push(Msg::DelChain, 0, &a);
    }

    /// Appends a rule to a chain.
    pub fn add_rule(&mut self, chain: &str, exprs: &[Expr]) {
        let mut a = self.base(1);
        a.str(2, chain);
        a.nest(4);
        for e in exprs {
            e.encode(&mut a);
        }
        a.end();
        self.batch
            .push(Msg::NewRule, NLM_F_CREATE | NLM_F_APPEND, &a);
        self.rules += 1;
    }

    /// Rules added so far.
    pub fn rules(&self) -> usize {
        self.rules
    }

    /// Creates a set or map if it does not exist.
    pub fn add_set(&mut self, s: &Set) {
        let mut a = self.base(1);
        a.str(2, &s.name);
        let mut flags = 0u32;
        if s.data.is_some() {
            flags |= 0x8; // NFT_SET_MAP
        }
        if s.timeout_ms.is_some() {
            flags |= 0x10 | 0x20; // NFT_SET_TIMEOUT | NFT_SET_EVAL
        }
        a.u32(3, flags).u32(4, s.key_type).u32(5, s.key_len);
        if let Some((ty, len)) = s.data {
            a.u32(6, ty);
            if ty != types::KERNEL_VERDICT {
                a.u32(7, len);
            }
        }
        if let Some(t) = s.timeout_ms {
            a.u64(11, t);
        }
        self.set_ids += 1;
        a.u32(10, self.set_ids);
        self.batch.push(Msg::NewSet, NLM_F_CREATE, &a);
    }

    /// Deletes a set or map.
    pub fn delete_set(&mut self, name: &str) {
        let mut a = self.base(1);
        a.str(2, name);
        self.batch.push(Msg::DelSet, 0, &a);
    }

    fn elements(&mut self, msg: Msg, flags: u16, set: &str, elems: &[Element]) {
        // Several messages for a large set, so that no attribute outgrows its 16-bit length.
        for chunk in elems.chunks(512) {
            let mut a = self.base(1);
            a.str(2, set);
            a.nest(3);
            for e in chunk {
                a.nest(1);
                Data::Value(e.key.clone()).encode(&mut a, 1);
                if let Some(d) = &e.data {
                    d.encode(&mut a, 2);
                }
                a.end();
            }
            a.end();
            self.batch.push(msg, flags, &a);
        }
    }

    /// Adds elements to a set or map (an existing key keeps its value).
    pub fn add_elements(&mut self, set: &str, elems: &[Element]) {
        if !elems.is_empty() {
            self.elements(Msg::NewSetElem, NLM_F_CREATE, set, elems);
        }
    }

    /// Deletes elements (by key) from a set or map.
    pub fn delete_elements(&mut self, set: &str, elems: &[Element]) {
        if !elems.is_empty() {
            self.elements(Msg::DelSetElem, 0, set, elems);
        }
    }

    /// Removes every element of a set or map.
    pub fn flush_set(&mut self, set: &str) {
        let mut a = self.base(1);
        a.str(2, set);
        self.batch.push(Msg::DelSetElem, 0, &a);
    }

    /// Messages so far.
    pub fn len(&self) -> usize {
        self.batch.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.batch.is_empty()
    }

    /// The batch's size in bytes.
    pub fn bytes(&self) -> usize {
        self.batch.bytes()
    }

    /// Sends it: the kernel applies all of it or none of it.
    pub fn commit(self, sock: &netlink::Socket) -> Result<(), netlink::Error> {
        self.batch.send(sock)
    }
}
