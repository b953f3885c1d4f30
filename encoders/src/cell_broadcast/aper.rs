//! The few ASN.1 aligned PER (ITU-T X.691) building blocks SBc-AP needs, written by hand:
//! a dozen rules are less to trust than a code generator, and every PDU they build is checked
//! against Wireshark's generated dissector in the tests.

/// Bits written most significant first, as PER lays them out.
#[derive(Debug, Default)]
pub struct BitWriter {
    buf: Vec<u8>,
    /// Bits used in the last octet of `buf` (0 = octet-aligned).
    used: u32,
}

impl BitWriter {
    pub fn new() -> Self {
        BitWriter::default()
    }

    /// Append the low `n` bits of `value` (n ≤ 64).
    pub fn bits(&mut self, value: u64, n: u32) {
        for i in (0..n).rev() {
            let bit = (value >> i) & 1 == 1;
            if self.used == 0 {
                self.buf.push(0);
            }
            if bit {
                if let Some(last) = self.buf.last_mut() {
                    *last |= 0x80 >> self.used;
                }
            }
            self.used = (self.used + 1) % 8;
        }
    }

    /// Pad with zero bits to the next octet boundary.
    pub fn align(&mut self) {
        self.used = 0;
    }

    /// Append whole octets, first aligning.
    pub fn octets(&mut self, bytes: &[u8]) {
        self.align();
        self.buf.extend_from_slice(bytes);
    }

    /// Constrained whole number in `lb..=ub` (X.691 §10.5.7.2–3): a minimal bit-field for
    /// ranges up to 255, one aligned octet for 256, two aligned octets up to 64K. Callers pass
    /// in-range values (they come from checked types); ranges above 64K are not used by SBc-AP
    /// fields we send.
    pub fn constrained(&mut self, value: u64, lb: u64, ub: u64) {
        let range = ub - lb + 1;
        let v = value.saturating_sub(lb);
        match range {
            1 => {}
            2..=255 => self.bits(v, 64 - (range - 1).leading_zeros()),
            256 => {
                self.align();
                self.bits(v, 8);
            }
            _ => {
                self.align();
                self.bits(v, 16);
            }
        }
    }

    /// Finish: a complete encoding. An empty one becomes a single zero octet (X.691 §11.1),
    /// which is what an `ENUMERATED {true}` IE value looks like on the wire.
    pub fn finish(mut self) -> Vec<u8> {
        if self.buf.is_empty() {
            self.buf.push(0);
        }
        self.buf
    }
}

/// An open type (X.691 §11.2): octet-aligned length determinant then the complete encoding.
/// Lengths of 16K and more are fragmented (§11.9.3.8): chunks of 16K × m (m ≤ 4) each behind
/// a `0xC0 | m` octet, then the remainder with an ordinary determinant, possibly 0. An IE
/// holding a few thousand cells reaches that size.
pub fn open_type(w: &mut BitWriter, content: &[u8]) {
    const K16: usize = 16384;
    w.align();
    let mut rest = content;
    loop {
        let n = rest.len();
        if n < 128 {
            w.bits(n as u64, 8);
            w.octets(rest);
            return;
        }
        if n < K16 {
            w.bits(0x8000 | n as u64, 16);
            w.octets(rest);
            return;
        }
        let m = (n / K16).min(4);
        w.bits(0xC0 | m as u64, 8);
        w.octets(&rest[..m * K16]);
        rest = &rest[m * K16..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_and_alignment() {
        let mut w = BitWriter::new();
        w.bits(0b101, 3);
        w.align();
        w.bits(0xAB, 8);
        w.bits(1, 1);
        assert_eq!(w.finish(), vec![0b1010_0000, 0xAB, 0x80]);
    }

    #[test]
    fn constrained_whole_numbers() {
        let mut w = BitWriter::new();
        w.constrained(2, 0, 2); // 2 bits
        w.constrained(5, 0, 255); // aligned octet
        w.constrained(4095, 0, 4096); // two aligned octets
        w.constrained(0, 0, 0); // nothing
        assert_eq!(w.finish(), vec![0b1000_0000, 5, 0x0F, 0xFF]);
        assert_eq!(BitWriter::new().finish(), vec![0]);
    }

    #[test]
    fn open_type_lengths() {
        let mut w = BitWriter::new();
        open_type(&mut w, &[7; 3]);
        assert_eq!(w.finish(), vec![3, 7, 7, 7]);
        let mut w = BitWriter::new();
        open_type(&mut w, &[0; 200]);
        let v = w.finish();
        assert_eq!(&v[..2], &[0x80, 200]);
        assert_eq!(v.len(), 202);
        let mut w = BitWriter::new();
        open_type(&mut w, &vec![1; 16384 + 5]);
        let v = w.finish();
        assert_eq!(v[0], 0xC1);
        assert_eq!(v[16385], 5);
        assert_eq!(v.len(), 1 + 16384 + 1 + 5);
        let mut w = BitWriter::new();
        open_type(&mut w, &vec![1; 16384]);
        let v = w.finish();
        assert_eq!((v[0], v[16385], v.len()), (0xC1, 0, 16386), "a zero-length tail ends the fragments");
    }
}
