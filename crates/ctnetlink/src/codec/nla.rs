//! Netlink attributes (struct nlattr, include/uapi/linux/netlink.h): a checked reader over
//! `&[u8]` and a writer that appends to a `Vec<u8>`. Every multi-byte value that ctnetlink
//! carries in network byte order goes through the `be*` helpers here and nowhere else.

use crate::consts::{NLA_ALIGNTO, NLA_F_NESTED, NLA_HDRLEN, NLA_TYPE_MASK};
use crate::error::DecodeError;

/// Rounds `len` up to the netlink attribute alignment (NLA_ALIGN).
pub const fn align(len: usize) -> usize {
    (len + NLA_ALIGNTO - 1) & !(NLA_ALIGNTO - 1)
}

/// One attribute as found on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Nla<'a> {
    /// Type with the NLA_F_NESTED / NLA_F_NET_BYTEORDER bits removed.
    pub kind: u16,
    /// Whether NLA_F_NESTED was set.
    pub nested: bool,
    pub payload: &'a [u8],
}

/// Iterates over the attributes in `buf`; yields an error (and then stops) on a malformed header.
#[derive(Debug, Clone)]
pub struct NlaIter<'a> {
    buf: &'a [u8],
    context: &'static str,
    /// The uapi names of this attribute set, for errors ("CTA_TUPLE_ORIG claims length 52").
    names: fn(u16) -> Option<&'static str>,
}

impl<'a> NlaIter<'a> {
    pub fn new(buf: &'a [u8], context: &'static str) -> Self {
        Self::named(buf, context, |_| None)
    }

    /// [`NlaIter::new`] whose errors name an attribute by `names` (its uapi name) rather than
    /// by its type number.
    pub fn named(
        buf: &'a [u8],
        context: &'static str,
        names: fn(u16) -> Option<&'static str>,
    ) -> Self {
        Self {
            buf,
            context,
            names,
        }
    }
}

impl<'a> Iterator for NlaIter<'a> {
    type Item = Result<Nla<'a>, DecodeError>;

    // Inlined, with the errors built out of line: a dump decodes some 25 attributes per entry,
    // and a call plus a 48-byte `Result` per attribute was most of the decoding time.
    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        // Trailing bytes shorter than a header are padding (the kernel never sends them, but a
        // truncated final attribute is reported below rather than silently dropped).
        if self.buf.is_empty() {
            return None;
        }
        if self.buf.len() < NLA_HDRLEN {
            return Some(Err(self.short_header()));
        }
        let len = u16::from_ne_bytes([self.buf[0], self.buf[1]]) as usize;
        let raw_kind = u16::from_ne_bytes([self.buf[2], self.buf[3]]);
        if len < NLA_HDRLEN || len > self.buf.len() {
            return Some(Err(self.bad_length(len, raw_kind)));
        }
        let payload = &self.buf[NLA_HDRLEN..len];
        let next = align(len).min(self.buf.len());
        self.buf = &self.buf[next..];
        Some(Ok(Nla {
            kind: raw_kind & NLA_TYPE_MASK,
            nested: raw_kind & NLA_F_NESTED != 0,
            payload,
        }))
    }
}

impl NlaIter<'_> {
    #[cold]
    #[inline(never)]
    fn short_header(&mut self) -> DecodeError {
        let len = self.buf.len();
        self.buf = &[];
        DecodeError::new(
            self.context,
            format!("{len} trailing bytes, shorter than an attribute header"),
        )
    }

    #[cold]
    #[inline(never)]
    fn bad_length(&mut self, len: usize, raw_kind: u16) -> DecodeError {
        let have = self.buf.len();
        self.buf = &[];
        let kind = raw_kind & NLA_TYPE_MASK;
        let what = match (self.names)(kind) {
            Some(name) => name.to_string(),
            None => format!("attribute type {kind}"),
        };
        DecodeError::new(
            self.context,
            format!("{what} claims length {len}, {have} bytes left"),
        )
    }
}

#[inline]
fn exact<const N: usize>(
    p: &[u8],
    ctx: &'static str,
    what: &'static str,
) -> Result<[u8; N], DecodeError> {
    match p.try_into() {
        Ok(a) => Ok(a),
        Err(_) => Err(wrong_size(ctx, what, N, p.len())),
    }
}

#[cold]
#[inline(never)]
fn wrong_size(ctx: &'static str, what: &'static str, want: usize, got: usize) -> DecodeError {
    DecodeError::new(ctx, format!("{what}: expected {want} bytes, got {got}"))
}

#[inline]
pub fn be16(p: &[u8], ctx: &'static str, what: &'static str) -> Result<u16, DecodeError> {
    exact::<2>(p, ctx, what).map(u16::from_be_bytes)
}
#[inline]
pub fn be32(p: &[u8], ctx: &'static str, what: &'static str) -> Result<u32, DecodeError> {
    exact::<4>(p, ctx, what).map(u32::from_be_bytes)
}
#[inline]
pub fn be64(p: &[u8], ctx: &'static str, what: &'static str) -> Result<u64, DecodeError> {
    exact::<8>(p, ctx, what).map(u64::from_be_bytes)
}
#[inline]
pub fn u8_(p: &[u8], ctx: &'static str, what: &'static str) -> Result<u8, DecodeError> {
    exact::<1>(p, ctx, what).map(|b| b[0])
}
/// Host-order u32 (NLA_U32 attributes that the kernel reads with nla_get_u32).
#[inline]
pub fn ne32(p: &[u8], ctx: &'static str, what: &'static str) -> Result<u32, DecodeError> {
    exact::<4>(p, ctx, what).map(u32::from_ne_bytes)
}
#[inline]
pub fn array<const N: usize>(
    p: &[u8],
    ctx: &'static str,
    what: &'static str,
) -> Result<[u8; N], DecodeError> {
    exact::<N>(p, ctx, what)
}

/// Appends attributes to a message buffer. Nested attributes always carry NLA_F_NESTED: the
/// kernel's strict parsers answer EINVAL without it.
#[derive(Debug)]
pub struct NlaWriter<'a> {
    buf: &'a mut Vec<u8>,
}

impl<'a> NlaWriter<'a> {
    pub fn new(buf: &'a mut Vec<u8>) -> Self {
        Self { buf }
    }

    pub fn put(&mut self, kind: u16, payload: &[u8]) {
        let len = NLA_HDRLEN + payload.len();
        self.buf.extend_from_slice(&(len as u16).to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(payload);
        self.pad();
    }
    pub fn put_u8(&mut self, kind: u16, v: u8) {
        self.put(kind, &[v]);
    }
    pub fn put_be16(&mut self, kind: u16, v: u16) {
        self.put(kind, &v.to_be_bytes());
    }
    pub fn put_be32(&mut self, kind: u16, v: u32) {
        self.put(kind, &v.to_be_bytes());
    }
    pub fn put_be64(&mut self, kind: u16, v: u64) {
        self.put(kind, &v.to_be_bytes());
    }
    pub fn put_ne32(&mut self, kind: u16, v: u32) {
        self.put(kind, &v.to_ne_bytes());
    }

    /// Writes a nested attribute whose contents `f` appends.
    pub fn nested(&mut self, kind: u16, f: impl FnOnce(&mut NlaWriter<'_>)) {
        let start = self.buf.len();
        self.buf.extend_from_slice(&[0, 0]);
        self.buf
            .extend_from_slice(&(kind | NLA_F_NESTED).to_ne_bytes());
        f(&mut NlaWriter { buf: self.buf });
        let len = (self.buf.len() - start) as u16;
        self.buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
        self.pad();
    }

    /// Appends already-encoded attributes (the payload of a nest kept as raw bytes).
    /// The enclosing [`NlaWriter::nested`] pads after its length, so the nest's length covers
    /// exactly these bytes.
    pub fn raw(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    fn pad(&mut self) {
        let aligned = align(self.buf.len());
        self.buf.resize(aligned, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writer_pads_and_nests() {
        let mut buf = Vec::new();
        let mut w = NlaWriter::new(&mut buf);
        w.nested(1, |w| w.put_u8(1, 6));
        assert_eq!(buf, [12, 0, 1, 0x80, 5, 0, 1, 0, 6, 0, 0, 0]);
        let nla: Vec<_> = NlaIter::new(&buf, "t")
            .collect::<Result<_, _>>()
            .expect("parses");
        assert_eq!(nla.len(), 1);
        assert!(nla[0].nested);
        assert_eq!(nla[0].kind, 1);
        assert_eq!(nla[0].payload, &[5, 0, 1, 0, 6, 0, 0, 0]);
    }

    #[test]
    fn truncated_attribute_is_an_error_not_a_panic() {
        let buf = [8u8, 0, 1, 0, 1];
        let got: Vec<_> = NlaIter::new(&buf, "CTA_TUPLE_ORIG").collect();
        assert_eq!(got.len(), 1);
        let err = got[0].clone().expect_err("must fail");
        assert!(err.to_string().contains("CTA_TUPLE_ORIG"), "{err}");
    }
}
