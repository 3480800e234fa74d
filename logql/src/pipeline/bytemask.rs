//! Where a few chosen bytes sit in a line, as bit masks of 64 bytes at a time.
//!
//! The `pattern` parser looks for several short literals one after the other, each a few
//! bytes past the previous one (`" - - ["`, `"] \""`, `" "` … in an access log). One
//! search per literal pays its set-up and its mispredicted exit every time; here each
//! 64-byte block of the line is compared once against every byte the pattern searches
//! for (four SSE2 compares per byte), and each literal search is then a bit scan of the
//! block's mask. No crate offers such multi-byte masks: `memchr` finds one position per
//! call, which is exactly the per-search cost this avoids.

/// Most distinct bytes one [`ByteSet`] holds; patterns with more search the rest the old way.
pub(crate) const MAX_BYTES: usize = 6;

/// The bytes to locate.
#[derive(Debug, Clone, Default)]
pub(crate) struct ByteSet {
    bytes: [u8; MAX_BYTES],
    len: usize,
}

impl ByteSet {
    /// Index of `b` in the set, adding it when there is room.
    pub(crate) fn class_of(&mut self, b: u8) -> Option<usize> {
        if let Some(i) = self.bytes[..self.len].iter().position(|&x| x == b) {
            return Some(i);
        }
        if self.len == MAX_BYTES {
            return None;
        }
        self.bytes[self.len] = b;
        self.len += 1;
        Some(self.len - 1)
    }

    fn bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// The masks of one line, computed block by block as searches move forward.
pub(crate) struct LineMasks<'a> {
    line: &'a [u8],
    set: &'a ByteSet,
    /// Start of the block `masks` describe (`usize::MAX`: none yet).
    block: usize,
    /// Bit `i` of `masks[c]`: byte `block + i` is the set's byte `c`.
    masks: [u64; MAX_BYTES],
}

impl<'a> LineMasks<'a> {
    pub(crate) fn new(line: &'a [u8], set: &'a ByteSet) -> LineMasks<'a> {
        LineMasks {
            line,
            set,
            block: usize::MAX,
            masks: [0; MAX_BYTES],
        }
    }

    #[inline(never)]
    fn load(&mut self, start: usize) {
        let rest = &self.line[start..];
        let mut padded = [0u8; 64];
        let block: &[u8; 64] = match rest.first_chunk::<64>() {
            Some(b) => b,
            None => {
                padded[..rest.len()].copy_from_slice(rest);
                &padded
            }
        };
        block_masks(block, self.set.bytes(), &mut self.masks);
        if rest.len() < 64 {
            // Padding is not part of the line (it would match a searched NUL).
            let valid = (1u64 << rest.len()) - 1;
            for m in &mut self.masks {
                *m &= valid;
            }
        }
        self.block = start;
    }

    /// The first position `p >= from` where the line holds the set's byte `class`.
    #[inline]
    pub(crate) fn next(&mut self, class: usize, from: usize) -> Option<usize> {
        let mut start = from & !63;
        while start < self.line.len() {
            if self.block != start {
                self.load(start);
            }
            let skip = from.saturating_sub(start);
            // `skip` < 64 in the first block and 0 after it.
            let m = self.masks[class] & (u64::MAX << skip);
            if m != 0 {
                return Some(start + m.trailing_zeros() as usize);
            }
            start += 64;
        }
        None
    }
}

/// `out[c]` = mask of the positions of `bytes[c]` in `block`.
#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
fn block_masks(block: &[u8; 64], bytes: &[u8], out: &mut [u64; MAX_BYTES]) {
    use std::arch::x86_64::{
        __m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_set1_epi8,
    };
    // SAFETY: SSE2 is enabled at compile time (the cfg above; it is part of the x86_64
    // baseline), and each unaligned load reads 16 bytes inside the 64 of `block`.
    unsafe {
        let p = block.as_ptr();
        let v: [__m128i; 4] = [
            _mm_loadu_si128(p.cast()),
            _mm_loadu_si128(p.add(16).cast()),
            _mm_loadu_si128(p.add(32).cast()),
            _mm_loadu_si128(p.add(48).cast()),
        ];
        for (o, &b) in out.iter_mut().zip(bytes) {
            let n = _mm_set1_epi8(b as i8);
            let mut m = 0u64;
            for (j, x) in v.iter().enumerate() {
                // The movemask is 16 bits wide: the cast keeps exactly those.
                m |= u64::from(_mm_movemask_epi8(_mm_cmpeq_epi8(*x, n)) as u16) << (16 * j);
            }
            *o = m;
        }
    }
}

/// `out[c]` = mask of the positions of `bytes[c]` in `block`.
#[cfg(not(all(target_arch = "x86_64", target_feature = "sse2")))]
fn block_masks(block: &[u8; 64], bytes: &[u8], out: &mut [u64; MAX_BYTES]) {
    portable_block_masks(block, bytes, out);
}

/// [`block_masks`] without SIMD: eight bytes per word (see `swar`), their hit bits
/// gathered by a multiplication into one byte of the mask.
#[cfg_attr(all(target_arch = "x86_64", target_feature = "sse2"), allow(dead_code))]
fn portable_block_masks(block: &[u8; 64], bytes: &[u8], out: &mut [u64; MAX_BYTES]) {
    const LO7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    const ONES: u64 = 0x0101_0101_0101_0101;
    for (o, &b) in out.iter_mut().zip(bytes) {
        let pb = ONES.wrapping_mul(u64::from(b));
        let mut m = 0u64;
        for (j, w) in block.as_chunks::<8>().0.iter().enumerate() {
            let x = u64::from_le_bytes(*w) ^ pb;
            // High bit of each zero byte of `x`, exactly (no carry crosses bytes).
            let hits = !(((x & LO7).wrapping_add(LO7)) | x | LO7) >> 7;
            // Bits 0, 8, …, 56 → bits 56..64 in byte order, then down to 0..8.
            let byte_mask = hits.wrapping_mul(0x0102_0408_1020_4080) >> 56;
            m |= byte_mask << (8 * j);
        }
        *o = m;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        /// Every position of every searched byte is found, in order, from any start, on
        /// lines shorter and longer than a block (NUL included: padding must not match).
        #[test]
        fn next_finds_each_position(
            line in proptest::collection::vec(proptest::sample::select(b" -[]\"a\0\xff".to_vec()), 0..200),
            from in 0usize..210,
        ) {
            let mut set = ByteSet::default();
            let classes: Vec<(u8, usize)> = b" [\"\0\xff]"
                .iter()
                .filter_map(|&b| set.class_of(b).map(|c| (b, c)))
                .collect();
            let mut masks = LineMasks::new(&line, &set);
            for (b, c) in classes {
                let want = line.iter().skip(from).position(|&x| x == b).map(|i| i + from);
                prop_assert_eq!(masks.next(c, from), want);
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        /// The SIMD and the portable masks agree (the portable one only runs elsewhere).
        #[test]
        fn portable_masks_agree(
            block in proptest::collection::vec(proptest::sample::select(b" -[]\"a\0\x7f\x80\xff\xdc".to_vec()), 64),
        ) {
            let mut block64 = [0u8; 64];
            block64.copy_from_slice(&block);
            let bytes = b" [\"\0\xff\x80";
            let (mut a, mut b) = ([0u64; MAX_BYTES], [0u64; MAX_BYTES]);
            block_masks(&block64, bytes, &mut a);
            portable_block_masks(&block64, bytes, &mut b);
            prop_assert_eq!(a, b);
            for (c, &x) in bytes.iter().enumerate() {
                let want = block.iter().enumerate().filter(|(_, &y)| y == x).fold(0u64, |m, (i, _)| m | 1 << i);
                prop_assert_eq!(a[c], want);
            }
        }
    }

    #[test]
    fn set_is_bounded_and_deduplicated() {
        let mut set = ByteSet::default();
        assert_eq!(set.class_of(b' '), Some(0));
        assert_eq!(set.class_of(b'"'), Some(1));
        assert_eq!(set.class_of(b' '), Some(0));
        for b in b"abcd" {
            assert!(set.class_of(*b).is_some());
        }
        assert_eq!(set.class_of(b'z'), None);
        assert_eq!(set.bytes(), b" \"abcd");
    }

    #[test]
    fn positions_across_blocks() {
        let mut line = vec![b'a'; 300];
        for p in [0, 63, 64, 127, 200, 299] {
            line[p] = b'[';
        }
        let mut set = ByteSet::default();
        let c = set.class_of(b'[').unwrap_or(0);
        let mut masks = LineMasks::new(&line, &set);
        let mut got = Vec::new();
        let mut from = 0;
        while let Some(p) = masks.next(c, from) {
            got.push(p);
            from = p + 1;
        }
        assert_eq!(got, vec![0, 63, 64, 127, 200, 299]);
    }
}
