//! Reading netfilter netlink messages: the messages in a received buffer and the attributes
//! in a payload (what the NFLOG and conntrack-event readers share).

/// The netfilter messages in a buffer: each one's type and what follows its `nfgenmsg`.
pub fn messages(buf: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    let mut at = 0;
    std::iter::from_fn(move || {
        while at + 16 <= buf.len() {
            let len = u32::from_ne_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]]) as usize;
            let kind = u16::from_ne_bytes([buf[at + 4], buf[at + 5]]);
            if len < 16 || at + len > buf.len() {
                return None;
            }
            let start = at;
            at += len.next_multiple_of(4);
            if len >= 20 {
                return Some((kind, &buf[start + 20..start + len]));
            }
        }
        None
    })
}

/// The attributes of a payload: `(type, value)`, the nested flag masked off.
pub fn attributes(mut b: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    while b.len() >= 4 {
        let len = usize::from(u16::from_ne_bytes([b[0], b[1]]));
        let kind = u16::from_ne_bytes([b[2], b[3]]) & 0x3fff;
        if len < 4 || len > b.len() {
            break;
        }
        out.push((kind, &b[4..len]));
        b = &b[len.next_multiple_of(4).min(b.len())..];
    }
    out
}
