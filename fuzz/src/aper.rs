//! Just enough of an aligned-PER reader (X.691) to walk the SBc-AP PDUs that `encoders::cell_broadcast::sbcap`
//! writes: bits, alignment, and open-type length determinants including 16K fragments. Every read returns `None`
//! past the end, so a PDU whose lengths disagree with its content is a `None`, which the target turns into a failure
//! naming the step.

/// A bit cursor over a complete encoding.
pub struct BitReader<'a> {
    bytes: &'a [u8],
    /// Position in bits from the start.
    bit: usize,
}

impl<'a> BitReader<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        BitReader { bytes, bit: 0 }
    }

    /// The next `n` bits (n ≤ 64), most significant first.
    pub fn bits(&mut self, n: u32) -> Option<u64> {
        let mut v = 0u64;
        for _ in 0..n {
            let byte = *self.bytes.get(self.bit / 8)?;
            let b = (byte >> (7 - self.bit % 8)) & 1;
            v = v << 1 | u64::from(b);
            self.bit += 1;
        }
        Some(v)
    }

    /// Skips to the next octet boundary; the skipped padding bits must be zero.
    pub fn align(&mut self) -> Option<()> {
        while !self.bit.is_multiple_of(8) {
            if self.bits(1)? != 0 {
                return None;
            }
        }
        Some(())
    }

    /// `n` whole octets, after aligning.
    pub fn octets(&mut self, n: usize) -> Option<&'a [u8]> {
        self.align()?;
        let start = self.bit / 8;
        let out = self.bytes.get(start..start.checked_add(n)?)?;
        self.bit += n * 8;
        Some(out)
    }

    /// An open type: aligned length determinant(s), then the contents (reassembled when fragmented).
    pub fn open_type(&mut self) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        loop {
            self.align()?;
            let first = self.bits(8)?;
            if first < 0x80 {
                out.extend_from_slice(self.octets(first as usize)?);
                return Some(out);
            }
            if first & 0xC0 == 0x80 {
                let n = ((first & 0x3F) << 8 | self.bits(8)?) as usize;
                // X.691 §11.9.3.7: 128..16383 only; a shorter length must use the one-octet form.
                if n < 128 {
                    return None;
                }
                out.extend_from_slice(self.octets(n)?);
                return Some(out);
            }
            let m = (first & 0x3F) as usize;
            if !(1..=4).contains(&m) {
                return None;
            }
            out.extend_from_slice(self.octets(m * 16384)?);
        }
    }

    /// True when only zero padding (< 8 bits) is left.
    pub fn at_end(&mut self) -> bool {
        self.align().is_some() && self.bit / 8 == self.bytes.len()
    }
}
