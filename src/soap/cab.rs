//! The Cabinet (MS-CAB) blobs the WSUS protocols wrap long update
//! documents in (`XmlUpdateBlobCompressed`: one folder, LZX with a 2 MB
//! window, one member holding the document in UTF-16LE).
//!
//! - [`write_lzx_stored`]: a Cabinet whose LZX stream is made of
//!   uncompressed blocks (valid for every LZX decoder; checked with the
//!   `cab` crate and with libmspack's cabextract).
//! - [`read_single_member`]: the one member of a Cabinet, bounded, refused
//!   (never a panic) when malformed; the decoder runs under
//!   `catch_unwind` behind shape checks of its own.

use std::io::{self, Read};

/// Why a Cabinet could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CabError(String);

impl CabError {
    fn new(why: impl Into<String>) -> CabError {
        CabError(why.into())
    }
}

/// Uncompressed bytes per CFDATA block and LZX frame.
const CAB_FRAME: usize = 32768;
/// CFFOLDER typeCompress: LZX (3) with a 21-bit (2 MB) window.
const CAB_LZX_2MB: u16 = 0x1503;

/// The cabinet checksum of MS-CAB (XOR of little-endian 32-bit words, the
/// 1-3 trailing bytes folded big-end first), seeded.
fn checksum(data: &[u8], seed: u32) -> u32 {
    let mut words = data.chunks_exact(4);
    let mut sum = seed;
    for w in &mut words {
        sum ^= u32::from_le_bytes([w[0], w[1], w[2], w[3]]);
    }
    let tail = words
        .remainder()
        .iter()
        .fold(0u32, |acc, b| (acc << 8) | u32::from(*b));
    sum ^ tail
}

/// One LZX frame holding one uncompressed block (MS-PATCH LZXD 2.3): the
/// E8-translation bit (first frame only, 0 = off), block type 3, the 24-bit
/// block size, padding to the next 16-bit word, R0-R2 (1, 1, 1), the bytes,
/// and a pad byte when their count is odd. Bits fill 16-bit little-endian
/// words from the most significant bit.
fn lzx_stored_frame(data: &[u8], first: bool) -> Vec<u8> {
    let mut bits: u32 = 0;
    let mut n = 0u32;
    let mut push = |value: u32, count: u32| {
        bits = (bits << count) | (value & ((1u32 << count) - 1));
        n += count;
    };
    if first {
        push(0, 1);
    }
    push(3, 3);
    push(data.len() as u32, 24);
    // 27 or 28 bits: pad to two whole words.
    let header = bits << (32 - n);
    let mut out = Vec::with_capacity(16 + data.len() + 1);
    out.extend_from_slice(&((header >> 16) as u16).to_le_bytes());
    out.extend_from_slice(&(header as u16).to_le_bytes());
    for _ in 0..3 {
        out.extend_from_slice(&1u32.to_le_bytes());
    }
    out.extend_from_slice(data);
    if data.len() % 2 == 1 {
        out.push(0);
    }
    out
}

/// A cabinet with one folder, LZX with a 2 MB window, and one member
/// `name` holding `data`. The LZX stream is made of uncompressed blocks,
/// one per 32 KiB frame: valid for every LZX decoder, not smaller than the
/// input (simplicity over bandwidth).
pub fn write_lzx_stored(name: &str, data: &[u8]) -> Vec<u8> {
    let frames: Vec<Vec<u8>> = data
        .chunks(CAB_FRAME)
        .enumerate()
        .map(|(i, chunk)| lzx_stored_frame(chunk, i == 0))
        .collect();
    let coff_files: u32 = 36 + 8;
    let coff_data = coff_files + 16 + name.len() as u32 + 1;
    let total = coff_data as usize + frames.iter().map(|f| 8 + f.len()).sum::<usize>();
    let mut out = Vec::with_capacity(total);
    // CFHEADER
    out.extend_from_slice(b"MSCF");
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&(total as u32).to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&coff_files.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&[3, 1]); // version 1.3
    out.extend_from_slice(&1u16.to_le_bytes()); // folders
    out.extend_from_slice(&1u16.to_le_bytes()); // files
    out.extend_from_slice(&0u16.to_le_bytes()); // flags
    out.extend_from_slice(&0u16.to_le_bytes()); // set id
    out.extend_from_slice(&0u16.to_le_bytes()); // cabinet index
    // CFFOLDER
    out.extend_from_slice(&coff_data.to_le_bytes());
    out.extend_from_slice(&(frames.len() as u16).to_le_bytes());
    out.extend_from_slice(&CAB_LZX_2MB.to_le_bytes());
    // CFFILE
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes()); // offset in folder
    out.extend_from_slice(&0u16.to_le_bytes()); // folder index
    out.extend_from_slice(&0u16.to_le_bytes()); // date
    out.extend_from_slice(&0u16.to_le_bytes()); // time
    out.extend_from_slice(&0u16.to_le_bytes()); // attributes
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    // CFDATA
    for (frame, chunk) in frames.iter().zip(data.chunks(CAB_FRAME)) {
        let mut sizes = Vec::with_capacity(4);
        sizes.extend_from_slice(&(frame.len() as u16).to_le_bytes());
        sizes.extend_from_slice(&(chunk.len() as u16).to_le_bytes());
        let csum = checksum(&sizes, checksum(frame, 0));
        out.extend_from_slice(&csum.to_le_bytes());
        out.extend_from_slice(&sizes);
        out.extend_from_slice(frame);
    }
    out
}

/// The one member of a Cabinet, at most `max_size` bytes. A malformed
/// Cabinet is an error, never a panic.
pub fn read_single_member(cab_bytes: &[u8], max_size: usize) -> Result<Vec<u8>, CabError> {
    check_shape(cab_bytes)?;
    let run = || -> Result<Vec<u8>, CabError> {
        let mut cab = cab::Cabinet::new(io::Cursor::new(cab_bytes))
            .map_err(|e| CabError::new(format!("not a Cabinet: {e}")))?;
        // Rule: every folder has data blocks (the decoder indexes them
        // without checking; found by fuzzing).
        if cab.folder_entries().any(|f| f.num_data_blocks() == 0) {
            return Err(CabError::new("a Cabinet folder has no data blocks"));
        }
        let members: Vec<(String, u32)> = cab
            .folder_entries()
            .flat_map(|f| f.file_entries())
            .map(|f| (f.name().to_string(), f.uncompressed_size()))
            .collect();
        let [(name, size)] = members.as_slice() else {
            return Err(CabError::new(format!(
                "the Cabinet holds {} members, expected 1",
                members.len()
            )));
        };
        let size = *size as usize;
        if size > max_size {
            return Err(CabError::new(format!(
                "Cabinet member {name:?} is {size} bytes, more than {max_size}"
            )));
        }
        let reader = cab
            .read_file(name)
            .map_err(|e| CabError::new(format!("Cabinet member {name:?}: {e}")))?;
        let mut out = Vec::with_capacity(size);
        reader
            .take(max_size as u64 + 1)
            .read_to_end(&mut out)
            .map_err(|e| CabError::new(format!("Cabinet member {name:?}: {e}")))?;
        if out.len() != size {
            return Err(CabError::new(format!(
                "Cabinet member {name:?} decompressed to {} bytes, its header says {size}",
                out.len()
            )));
        }
        Ok(out)
    };
    std::panic::catch_unwind(run).unwrap_or_else(|_| {
        Err(CabError::new(
            "the Cabinet decoder failed on malformed data",
        ))
    })
}

/// Rule: an update blob is a Cabinet ("MSCF") whose first file starts at
/// offset 0 of its folder, as WSUS writes them; anything else is refused
/// before the decoder sees it (the decoder panics on some such inputs).
fn check_shape(b: &[u8]) -> Result<(), CabError> {
    let u32_at = |i: usize| {
        b.get(i..i.checked_add(4)?)
            .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    };
    if b.get(0..4) != Some(b"MSCF") {
        return Err(CabError::new("not a Cabinet (no MSCF signature)"));
    }
    let coff_files = u32_at(16).ok_or_else(|| CabError::new("truncated Cabinet header"))? as usize;
    let offset = u32_at(coff_files.saturating_add(4))
        .ok_or_else(|| CabError::new("Cabinet file entry out of range"))?;
    if offset != 0 {
        return Err(CabError::new(format!(
            "the Cabinet member starts at offset {offset} of its folder, expected 0"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cabinets_decode_to_their_input() {
        for len in [
            0usize, 1, 2, 3, 1000, 32767, 32768, 32769, 65536, 100_001, 300_000,
        ] {
            let data: Vec<u8> = (0..len).map(|i| (i * 7 + i / 3) as u8).collect();
            let c = write_lzx_stored("blob", &data);
            if len > 0 {
                assert_eq!(
                    read_single_member(&c, 1 << 20).unwrap(),
                    data,
                    "length {len}"
                );
            }
            assert_eq!(&c[..4], b"MSCF");
            assert_eq!(
                u32::from_le_bytes(c[8..12].try_into().unwrap()) as usize,
                c.len()
            );
        }
        // Bounded: a member larger than allowed is refused.
        let c = write_lzx_stored("blob", &[7u8; 5000]);
        let e = read_single_member(&c, 4999).unwrap_err();
        assert!(e.to_string().contains("more than 4999"), "{e}");
    }

    #[test]
    fn checksum_matches_ms_cab() {
        // Folded tail: 3 bytes a b c -> a<<16 | b<<8 | c.
        assert_eq!(checksum(&[1, 2, 3], 0), 0x010203);
        assert_eq!(checksum(&[1, 0, 0, 0, 5], 0), 1 ^ 5);
        assert_eq!(checksum(&[], 7), 7);
    }

    #[test]
    fn hostile_cabinets_are_errors_not_panics() {
        for junk in [
            &b""[..],
            b"MSCF",
            b"MSCF\0\0\0\0\xff\xff\xff\xff\0\0\0\0",
            b"MSCF\0\0\0\0\0\0\0\0\0\0\0\0\xff\xff\xff\xff",
            &[0u8; 64],
        ] {
            assert!(read_single_member(junk, 1 << 20).is_err(), "{junk:?}");
        }
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let mut cab = write_lzx_stored("blob", &data);
        let mid = cab.len() / 2;
        for byte in &mut cab[mid..mid + 64] {
            *byte ^= 0x5a;
        }
        let _ = read_single_member(&cab, 1 << 20); // error or garbage, never a panic
        cab.truncate(mid);
        assert!(read_single_member(&cab, 1 << 20).is_err());
    }
}
