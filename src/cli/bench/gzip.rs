//! Gzip bodies that every send can stamp with fresh trace ids without compressing again.
//!
//! A body is compressed once, before the run, by a small deflate encoder of its own: LZ77 over a
//! 32 KiB window, then one block with the fixed Huffman codes of RFC 1951. In that code every byte
//! below 144 is an 8-bit literal, and every stamp byte is below 144 (hex digits in JSON, nibbles in
//! protobuf, see [`super::payload::Encoding::stamp`]). The encoder writes stamps only as literals
//! and never copies from or into them, so a stamp sits at a known bit offset and a send replaces it
//! in a copy of the body, then writes the new CRC-32 into the trailer: a copy and a checksum
//! instead of a compression.
//!
//! Why not flate2's encoder: a stored block around each stamp would take two flushes per span, and
//! inflating 2,000 small blocks costs the server 17 times what inflating one stream does (measured:
//! 4.0 against 0.23 ms for an export of 1,000 spans), which would bias the benchmark. A single
//! fixed-code block inflates within about 10% of an ordinary one for protobuf (measured 0.21-0.26
//! against 0.22-0.23 ms per export, load 4-6) and 30-70% slower for JSON, where the stamps cut
//! more matches short. It is 31% (protobuf) to 76% (JSON) larger than what gzip level 6 makes of
//! the same body, so `bench` reports both sizes.
//!
//! Invariant: a stamped body inflates to exactly the plain body with the same stamp.

use anyhow::{Context, ensure};
use flate2::Crc;

/// Header of a gzip member: magic, deflate, no flags, no modification time, no extra flags, and
/// "unknown" for the operating system.
const HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];

/// Bytes below this are 8-bit literals in the fixed Huffman code.
const EIGHT_BIT_LITERALS: u8 = 144;

const WINDOW: usize = 32 * 1024;
const MIN_MATCH: usize = 3;
const MAX_MATCH: usize = 258;
/// Candidates looked at per position: enough to find the repeated attribute runs of a span.
const CHAIN: usize = 32;
const HASH_BITS: u32 = 15;
/// Matches at least this long are taken without looking one byte further.
const LAZY_BELOW: usize = 32;

const LENGTH_BASE: [u16; 29] = [
    3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115, 131,
    163, 195, 227, 258,
];
const LENGTH_EXTRA: [u32; 29] = [
    0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0,
];
const DISTANCE_BASE: [u16; 30] = [
    1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025, 1537,
    2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577,
];
const DISTANCE_EXTRA: [u32; 30] = [
    0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13,
    13,
];

/// A gzip body and where its stamps sit in it.
#[derive(Debug, Clone)]
pub(super) struct GzipBody {
    pub(super) bytes: Vec<u8>,
    /// Bit offset of each stamp's first literal, in the same order as in the plain body.
    stamp_bits: Vec<usize>,
}

impl GzipBody {
    /// The body with `stamp` at every stamp; `plain` and `plain_offsets` are what it was
    /// compressed from, for the checksum. Every byte of `stamp` must be below 144.
    pub(super) fn stamped(&self, plain: &[u8], plain_offsets: &[usize], stamp: &[u8]) -> Vec<u8> {
        debug_assert!(stamp.iter().all(|&byte| byte < EIGHT_BIT_LITERALS));
        let mut bytes = self.bytes.clone();
        for &bit in &self.stamp_bits {
            for (idx, &byte) in stamp.iter().enumerate() {
                overwrite_byte_at_bit(&mut bytes, bit + 8 * idx, literal_code(byte));
            }
        }
        let mut crc = Crc::new();
        let mut from = 0;
        for &offset in plain_offsets {
            crc.update(&plain[from..offset]);
            crc.update(stamp);
            from = offset + stamp.len();
        }
        crc.update(&plain[from..]);
        let trailer = bytes.len() - 8;
        bytes[trailer..trailer + 4].copy_from_slice(&crc.sum().to_le_bytes());
        bytes
    }
}

/// The fixed Huffman code of a literal below 144, bit-reversed: Huffman codes are packed most
/// significant bit first into a stream that is otherwise least significant bit first.
fn literal_code(byte: u8) -> u8 {
    (0x30 + byte).reverse_bits()
}

fn overwrite_byte_at_bit(bytes: &mut [u8], bit: usize, value: u8) {
    let (idx, shift) = (bit / 8, bit % 8);
    if shift == 0 {
        bytes[idx] = value;
        return;
    }
    let keep_low = (1u8 << shift) - 1;
    bytes[idx] = (bytes[idx] & keep_low) | (value << shift);
    bytes[idx + 1] = (bytes[idx + 1] & !(0xff >> (8 - shift))) | (value >> (8 - shift));
}

/// Bits packed least significant first, as deflate wants.
#[derive(Default)]
struct BitWriter {
    bytes: Vec<u8>,
    acc: u64,
    n_bits: u32,
}

impl BitWriter {
    fn put(&mut self, value: u32, n_bits: u32) {
        self.acc |= u64::from(value) << self.n_bits;
        self.n_bits += n_bits;
        while self.n_bits >= 8 {
            self.bytes.push(self.acc as u8);
            self.acc >>= 8;
            self.n_bits -= 8;
        }
    }

    /// A Huffman code of `n_bits` bits, most significant first.
    fn put_code(&mut self, code: u32, n_bits: u32) {
        self.put(code.reverse_bits() >> (32 - n_bits), n_bits);
    }

    fn bit_len(&self) -> usize {
        self.bytes.len() * 8 + self.n_bits as usize
    }

    fn finish(mut self) -> Vec<u8> {
        if self.n_bits > 0 {
            self.bytes.push(self.acc as u8);
        }
        self.bytes
    }
}

fn put_literal(out: &mut BitWriter, byte: u8) {
    if byte < EIGHT_BIT_LITERALS {
        out.put_code(0x30 + u32::from(byte), 8);
    } else {
        out.put_code(0x190 + u32::from(byte - EIGHT_BIT_LITERALS), 9);
    }
}

fn put_match(out: &mut BitWriter, len: usize, distance: usize) {
    let idx = LENGTH_BASE.partition_point(|&base| usize::from(base) <= len) - 1;
    let symbol = 257 + idx as u32;
    if symbol < 280 {
        out.put_code(symbol - 256, 7);
    } else {
        out.put_code(0xc0 + symbol - 280, 8);
    }
    out.put(
        (len - usize::from(LENGTH_BASE[idx])) as u32,
        LENGTH_EXTRA[idx],
    );
    let idx = DISTANCE_BASE.partition_point(|&base| usize::from(base) <= distance) - 1;
    out.put_code(idx as u32, 5);
    out.put(
        (distance - usize::from(DISTANCE_BASE[idx])) as u32,
        DISTANCE_EXTRA[idx],
    );
}

/// LZ77 hash chains over a body: the most recent position of each 3-byte hash, and each
/// position's predecessor with the same hash.
struct Matcher<'a> {
    plain: &'a [u8],
    is_stamp: &'a [bool],
    head: Vec<usize>,
    prev: Vec<usize>,
}

impl Matcher<'_> {
    fn insert(&mut self, pos: usize) {
        if pos + MIN_MATCH <= self.plain.len() {
            let slot = hash(&self.plain[pos..]);
            self.prev[pos % WINDOW] = self.head[slot];
            self.head[slot] = pos;
        }
    }

    /// The longest earlier copy of the bytes at `pos`, as (length, distance), that neither
    /// reads nor writes a stamp byte; (0, 0) when there is none.
    fn longest(&self, pos: usize) -> (usize, usize) {
        let (mut best_len, mut best_distance) = (0, 0);
        if pos + MIN_MATCH > self.plain.len() {
            return (best_len, best_distance);
        }
        let max_len = MAX_MATCH.min(self.plain.len() - pos);
        let mut candidate = self.head[hash(&self.plain[pos..])];
        for _ in 0..CHAIN {
            if candidate == usize::MAX || pos - candidate >= WINDOW {
                break;
            }
            let len = (0..max_len)
                .take_while(|&idx| {
                    self.plain[candidate + idx] == self.plain[pos + idx]
                        && !self.is_stamp[candidate + idx]
                        && !self.is_stamp[pos + idx]
                })
                .count();
            if len > best_len {
                (best_len, best_distance) = (len, pos - candidate);
                if len == max_len {
                    break;
                }
            }
            // A slot of `prev` is reused every WINDOW positions: a link that does not go back
            // is stale.
            let next = self.prev[candidate % WINDOW];
            if next == usize::MAX || next >= candidate {
                break;
            }
            candidate = next;
        }
        (best_len, best_distance)
    }
}

fn hash(bytes: &[u8]) -> usize {
    let word = u32::from(bytes[0]) | u32::from(bytes[1]) << 8 | u32::from(bytes[2]) << 16;
    (word.wrapping_mul(0x9e37_79b1) >> (32 - HASH_BITS)) as usize
}

/// Compresses `plain`, whose stamps of `stamp_len` bytes start at `stamp_offsets` (increasing,
/// not overlapping), into a body that [`GzipBody::stamped`] can stamp.
pub(super) fn compress(
    plain: &[u8],
    stamp_offsets: &[usize],
    stamp_len: usize,
) -> anyhow::Result<GzipBody> {
    let mut is_stamp = vec![false; plain.len()];
    for &offset in stamp_offsets {
        let stamp = is_stamp
            .get_mut(offset..offset + stamp_len)
            .context("a stamp inside the body")?;
        ensure!(!stamp.iter().any(|&taken| taken), "stamps must not overlap");
        stamp.fill(true);
    }
    let mut out = BitWriter::default();
    for byte in HEADER {
        out.put(u32::from(byte), 8);
    }
    // The only block: final, fixed Huffman codes.
    out.put(1, 1);
    out.put(1, 2);
    let mut matcher = Matcher {
        plain,
        is_stamp: &is_stamp,
        head: vec![usize::MAX; 1 << HASH_BITS],
        prev: vec![usize::MAX; WINDOW],
    };
    // Every position before `pos` is in the matcher's chains.
    let mut stamp_bits = Vec::with_capacity(stamp_offsets.len());
    let mut pos = 0;
    while pos < plain.len() {
        if stamp_offsets.get(stamp_bits.len()) == Some(&pos) {
            stamp_bits.push(out.bit_len());
        }
        let (len, distance) = matcher.longest(pos);
        matcher.insert(pos);
        if is_stamp[pos] {
            // Any 8-bit literal keeps the place; every send overwrites it.
            put_literal(&mut out, 0);
            pos += 1;
        } else if len < MIN_MATCH
            // One step of lazy matching, as zlib does: a longer match one byte on is worth a
            // literal.
            || (len < LAZY_BELOW && matcher.longest(pos + 1).0 > len)
        {
            put_literal(&mut out, plain[pos]);
            pos += 1;
        } else {
            put_match(&mut out, len, distance);
            for covered in pos + 1..pos + len {
                matcher.insert(covered);
            }
            pos += len;
        }
    }
    ensure!(
        stamp_bits.len() == stamp_offsets.len(),
        "every stamp found its place"
    );
    // End of block.
    out.put_code(0, 7);
    let mut bytes = out.finish();
    // The CRC is written by every stamp; the size never changes.
    bytes.extend_from_slice(&[0; 4]);
    let size = u32::try_from(plain.len()).context("a body under 4 GiB")?;
    bytes.extend_from_slice(&size.to_le_bytes());
    Ok(GzipBody { bytes, stamp_bits })
}

/// The size of `plain` compressed by gzip at its default level, for comparison.
pub(super) fn default_gzip_len(plain: &[u8]) -> usize {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut encoder, plain)
        .ok()
        .and_then(|()| encoder.finish().ok())
        .map_or(0, |bytes| bytes.len())
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use rand::rngs::SmallRng;
    use rand::{Rng, SeedableRng};

    use super::*;
    use crate::cli::bench::payload::{Body, payload};

    fn inflate(gzip: &[u8]) -> Vec<u8> {
        let mut plain = Vec::new();
        flate2::read::GzDecoder::new(gzip)
            .read_to_end(&mut plain)
            .expect("inflates with a valid checksum");
        plain
    }

    fn check(body: &Body) {
        let gzip = compress(&body.bytes, &body.stamp_offsets, body.encoding.stamp_len())
            .expect("compresses");
        for sequence in [0, 1, 0xdead_beef, u64::MAX] {
            let stamp = body.encoding.stamp(sequence);
            let sent = gzip.stamped(&body.bytes, &body.stamp_offsets, &stamp);
            assert_eq!(
                inflate(&sent),
                body.stamped(sequence),
                "sequence {sequence}"
            );
        }
        assert!(
            gzip.bytes.len() < 2 * default_gzip_len(&body.bytes),
            "compresses nearly as well as gzip: {} against {} bytes",
            gzip.bytes.len(),
            default_gzip_len(&body.bytes)
        );
    }

    #[test]
    fn stamped_protobuf_inflates_to_the_stamped_plain_body() {
        let request = payload(
            &mut SmallRng::seed_from_u64(3),
            1000,
            1_700_000_000_000_000_000,
        );
        check(&Body::protobuf(&request));
    }

    #[test]
    fn stamped_json_inflates_to_the_stamped_plain_body() {
        let request = payload(
            &mut SmallRng::seed_from_u64(4),
            300,
            1_700_000_000_000_000_000,
        );
        check(&Body::json(&request));
    }

    #[test]
    fn stamps_at_the_edges_side_by_side_and_inside_repeats() {
        // Repetitive text, so matches would run through the stamps if the encoder let them.
        let plain: Vec<u8> = b"abcdefgh".iter().copied().cycle().take(70_000).collect();
        let offsets = [0, 8, 16, 100, 40_000, 69_992];
        let gzip = compress(&plain, &offsets, 8).expect("compresses");
        for stamp in [*b"01234567", [0, 1, 2, 3, 4, 5, 6, 143]] {
            let mut expected = plain.clone();
            for offset in offsets {
                expected[offset..offset + 8].copy_from_slice(&stamp);
            }
            assert_eq!(inflate(&gzip.stamped(&plain, &offsets, &stamp)), expected);
        }
        assert!(gzip.bytes.len() < 2_000, "{} bytes", gzip.bytes.len());
    }

    #[test]
    fn random_bytes_round_trip() {
        let mut rng = SmallRng::seed_from_u64(9);
        let plain: Vec<u8> = (0..50_000)
            .map(|_| rng.random_range(0..=255u8) % 40 + 200)
            .collect();
        let gzip = compress(&plain, &[], 8).expect("compresses");
        assert_eq!(inflate(&gzip.stamped(&plain, &[], b"")), plain);
    }

    #[test]
    fn overlapping_stamps_are_refused() {
        assert!(compress(&[0; 64], &[0, 4], 8).is_err());
        assert!(compress(&[0; 64], &[60], 8).is_err());
    }
}
