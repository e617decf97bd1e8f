//! The header of every table file: block 0 of a data file, and the start of a checksum file.
//! Both begin with a magic number and the format version, and end with a crc32c of the header,
//! so a truncated, foreign or damaged file is refused before any row is served from it.

use super::ChecksumKind;
use super::error::FormatError;

/// Magic of a data file.
pub const DATA_MAGIC: [u8; 8] = *b"ENGRMDAT";
/// Magic of a checksum file.
pub const SUMS_MAGIC: [u8; 8] = *b"ENGRMSUM";
/// Current format version of both files.
pub const FORMAT_VERSION: u32 = 1;
/// Encoded header length (the rest of block 0 is zero).
pub const HEADER_LEN: usize = 64;

/// What a data or checksum file says about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileHeader {
    /// [`DATA_MAGIC`] or [`SUMS_MAGIC`].
    pub magic: [u8; 8],
    /// Format version.
    pub format_version: u32,
    /// Bytes per row.
    pub row_bytes: u32,
    /// I/O block size.
    pub block_size: u32,
    /// Checksum algorithm.
    pub checksum: ChecksumKind,
    /// Index of this file among the table's files.
    pub file_index: u32,
    /// Table version.
    pub table_version: u64,
    /// First table row held by this file.
    pub first_row: u64,
    /// Rows held by this file.
    pub rows: u64,
    /// Data blocks after the header block (data file) or checksums (checksum file).
    pub blocks: u64,
}

impl FileHeader {
    /// Encodes into `HEADER_LEN` bytes.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..8].copy_from_slice(&self.magic);
        b[8..12].copy_from_slice(&self.format_version.to_le_bytes());
        b[12..16].copy_from_slice(&self.row_bytes.to_le_bytes());
        b[16..20].copy_from_slice(&self.block_size.to_le_bytes());
        b[20] = self.checksum.code();
        b[24..28].copy_from_slice(&self.file_index.to_le_bytes());
        b[28..36].copy_from_slice(&self.table_version.to_le_bytes());
        b[36..44].copy_from_slice(&self.first_row.to_le_bytes());
        b[44..52].copy_from_slice(&self.rows.to_le_bytes());
        b[52..60].copy_from_slice(&self.blocks.to_le_bytes());
        let crc = crc32c::crc32c(&b[..60]);
        b[60..64].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decodes and checks a header; `expected_magic` tells data from checksum files.
    pub fn decode(bytes: &[u8], expected_magic: [u8; 8]) -> Result<Self, FormatError> {
        if bytes.len() < HEADER_LEN {
            return Err(FormatError::Truncated {
                needed: HEADER_LEN,
                found: bytes.len(),
            });
        }
        let le32 = |at: usize| {
            u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
        };
        let le64 = |at: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&bytes[at..at + 8]);
            u64::from_le_bytes(a)
        };
        let mut magic = [0u8; 8];
        magic.copy_from_slice(&bytes[0..8]);
        if magic != expected_magic {
            return Err(FormatError::BadMagic {
                expected: expected_magic,
                found: magic,
            });
        }
        let stored_crc = le32(60);
        let crc = crc32c::crc32c(&bytes[..60]);
        if stored_crc != crc {
            return Err(FormatError::HeaderChecksum {
                stored: stored_crc,
                computed: crc,
            });
        }
        let format_version = le32(8);
        if format_version != FORMAT_VERSION {
            return Err(FormatError::UnsupportedVersion {
                found: format_version,
                supported: FORMAT_VERSION,
            });
        }
        let checksum = ChecksumKind::from_code(bytes[20]).ok_or(FormatError::Invalid(format!(
            "unknown checksum code {}",
            bytes[20]
        )))?;
        let h = FileHeader {
            magic,
            format_version,
            row_bytes: le32(12),
            block_size: le32(16),
            checksum,
            file_index: le32(24),
            table_version: le64(28),
            first_row: le64(36),
            rows: le64(44),
            blocks: le64(52),
        };
        if h.row_bytes == 0 || h.block_size == 0 || !h.block_size.is_multiple_of(512) {
            return Err(FormatError::Invalid(format!(
                "row_bytes {} and block_size {} (must be > 0, block a multiple of 512)",
                h.row_bytes, h.block_size
            )));
        }
        Ok(h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> FileHeader {
        FileHeader {
            magic: DATA_MAGIC,
            format_version: FORMAT_VERSION,
            row_bytes: 160,
            block_size: 4096,
            checksum: ChecksumKind::Xxh3,
            file_index: 2,
            table_version: 9,
            first_row: 1000,
            rows: 77,
            blocks: 4,
        }
    }

    #[test]
    fn round_trips() {
        let h = sample();
        assert_eq!(
            FileHeader::decode(&h.encode(), DATA_MAGIC).expect("decode"),
            h
        );
    }

    #[test]
    fn rejects_damage() {
        let mut b = sample().encode();
        assert!(matches!(
            FileHeader::decode(&b, SUMS_MAGIC),
            Err(FormatError::BadMagic { .. })
        ));
        b[40] ^= 1;
        assert!(matches!(
            FileHeader::decode(&b, DATA_MAGIC),
            Err(FormatError::HeaderChecksum { .. })
        ));
        assert!(matches!(
            FileHeader::decode(&b[..10], DATA_MAGIC),
            Err(FormatError::Truncated { .. })
        ));
    }
}
