//! Byte searches for the short distances of log parsers, eight bytes at a time in a
//! machine word (SWAR).
//!
//! Parsers look for the next delimiter many times per line, and it is usually a few
//! dozen bytes away. `memchr`'s SIMD loops pay a call and a set-up each time that cost
//! more than such a search; these functions look at the first [`NEAR`] bytes inline and
//! hand longer searches to `memchr`.

/// Bytes searched inline before handing over to `memchr`.
const NEAR: usize = 32;

const LO7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
const ONES: u64 = 0x0101_0101_0101_0101;

/// The high bit of each byte of `x` that is zero, and only of those: `(x & 0x7f) + 0x7f`
/// is at most `0xfe`, so no carry crosses into the next byte.
#[inline]
fn zero_bytes(x: u64) -> u64 {
    !(((x & LO7).wrapping_add(LO7)) | x | LO7)
}

#[inline]
fn word_at(data: &[u8], i: usize) -> Option<u64> {
    let chunk = data.get(i..i + 8)?;
    let mut word = [0u8; 8];
    word.copy_from_slice(chunk);
    Some(u64::from_le_bytes(word))
}

/// Offset of the first `a` in `data`.
#[inline]
pub(crate) fn find_byte(data: &[u8], a: u8) -> Option<usize> {
    let pa = ONES.wrapping_mul(u64::from(a));
    let mut i = 0;
    while i < NEAR {
        let Some(w) = word_at(data, i) else { break };
        let hits = zero_bytes(w ^ pa);
        if hits != 0 {
            return Some(i + (hits.trailing_zeros() / 8) as usize);
        }
        i += 8;
    }
    memchr::memchr(a, &data[i..]).map(|p| i + p)
}

/// Offset of the first `a` or `b` in `data`.
#[inline]
pub(crate) fn find_either(data: &[u8], a: u8, b: u8) -> Option<usize> {
    let (pa, pb) = (
        ONES.wrapping_mul(u64::from(a)),
        ONES.wrapping_mul(u64::from(b)),
    );
    let mut i = 0;
    while i < NEAR {
        let Some(w) = word_at(data, i) else { break };
        let hits = zero_bytes(w ^ pa) | zero_bytes(w ^ pb);
        if hits != 0 {
            return Some(i + (hits.trailing_zeros() / 8) as usize);
        }
        i += 8;
    }
    memchr::memchr2(a, b, &data[i..]).map(|p| i + p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_first_byte_at_every_distance() {
        // Bytes one bit away from the searched ones (and with the high bit set) must not
        // match; lengths cross the inline part and the hand-over to memchr.
        let fillers = [b'a', 0xa2, 0xdc, 0x23, 0x5d, 0x02, 0x00, 0xff];
        for len in 0..90 {
            for filler in fillers {
                let base = vec![filler; len];
                assert_eq!(find_byte(&base, b'"'), None, "len {len} filler {filler}");
                assert_eq!(find_either(&base, b'"', b'\\'), None);
                for at in 0..len {
                    for hit in [b'"', b'\\'] {
                        let mut data = base.clone();
                        data[at] = hit;
                        // A second hit after the first never changes the answer.
                        if at + 3 < len {
                            data[at + 3] = b'"';
                        }
                        assert_eq!(
                            find_either(&data, b'"', b'\\'),
                            Some(at),
                            "len {len} at {at}"
                        );
                        let want = if hit == b'"' {
                            Some(at)
                        } else if at + 3 < len {
                            Some(at + 3)
                        } else {
                            None
                        };
                        assert_eq!(find_byte(&data, b'"'), want, "len {len} at {at}");
                    }
                }
            }
        }
    }
}
