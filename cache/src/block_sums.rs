//! Per-block checksums: crc32c (hardware-accelerated) or xxh3-64. Every block read from disk is
//! verified against the checksum kept in memory before any of its rows is served.

use serde::{Deserialize, Serialize};

/// Checksum algorithm of a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ChecksumKind {
    /// CRC-32C (Castagnoli), 4 bytes per block.
    #[default]
    Crc32c,
    /// XXH3 64-bit, 8 bytes per block.
    Xxh3,
}

impl ChecksumKind {
    /// Name in manifests and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            ChecksumKind::Crc32c => "crc32c",
            ChecksumKind::Xxh3 => "xxh3",
        }
    }

    /// Stable code used in file headers.
    pub fn code(self) -> u8 {
        match self {
            ChecksumKind::Crc32c => 1,
            ChecksumKind::Xxh3 => 2,
        }
    }

    /// Inverse of [`ChecksumKind::code`].
    pub fn from_code(code: u8) -> Option<Self> {
        match code {
            1 => Some(ChecksumKind::Crc32c),
            2 => Some(ChecksumKind::Xxh3),
            _ => None,
        }
    }

    /// Checksum of `data` (crc32c widened to u64).
    pub fn compute(self, data: &[u8]) -> u64 {
        match self {
            ChecksumKind::Crc32c => u64::from(crc32c::crc32c(data)),
            ChecksumKind::Xxh3 => xxhash_rust::xxh3::xxh3_64(data),
        }
    }
}

impl std::str::FromStr for ChecksumKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "crc32c" => Ok(ChecksumKind::Crc32c),
            "xxh3" => Ok(ChecksumKind::Xxh3),
            other => Err(format!(
                "unknown checksum {other:?}: expected crc32c or xxh3"
            )),
        }
    }
}

/// The checksums of every block of one data file, as kept in memory while serving.
#[derive(Debug, Clone)]
pub enum BlockSums {
    /// crc32c values.
    Crc32c(Vec<u32>),
    /// xxh3 values.
    Xxh3(Vec<u64>),
}

impl BlockSums {
    /// An empty list for `kind`.
    pub fn new(kind: ChecksumKind, capacity: usize) -> Self {
        match kind {
            ChecksumKind::Crc32c => BlockSums::Crc32c(Vec::with_capacity(capacity)),
            ChecksumKind::Xxh3 => BlockSums::Xxh3(Vec::with_capacity(capacity)),
        }
    }

    /// The algorithm.
    pub fn kind(&self) -> ChecksumKind {
        match self {
            BlockSums::Crc32c(_) => ChecksumKind::Crc32c,
            BlockSums::Xxh3(_) => ChecksumKind::Xxh3,
        }
    }

    /// Appends the checksum of `block`.
    pub fn push_block(&mut self, block: &[u8]) {
        match self {
            BlockSums::Crc32c(v) => v.push(crc32c::crc32c(block)),
            BlockSums::Xxh3(v) => v.push(xxhash_rust::xxh3::xxh3_64(block)),
        }
    }

    /// Appends the checksum of the block made of `parts` one after another (rows, then zero
    /// padding), without joining them.
    pub fn push_block_parts(&mut self, parts: &[&[u8]]) {
        match self {
            BlockSums::Crc32c(v) => v.push(
                parts
                    .iter()
                    .fold(0, |crc, part| crc32c::crc32c_append(crc, part)),
            ),
            BlockSums::Xxh3(v) => {
                let mut h = xxhash_rust::xxh3::Xxh3::new();
                for part in parts {
                    h.update(part);
                }
                v.push(h.digest());
            }
        }
    }

    /// Blocks covered.
    pub fn len(&self) -> usize {
        match self {
            BlockSums::Crc32c(v) => v.len(),
            BlockSums::Xxh3(v) => v.len(),
        }
    }

    /// True when no block is covered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Checksum of block `i`, widened.
    pub fn get(&self, i: usize) -> Option<u64> {
        match self {
            BlockSums::Crc32c(v) => v.get(i).map(|&x| u64::from(x)),
            BlockSums::Xxh3(v) => v.get(i).copied(),
        }
    }

    /// True if `block` matches checksum `i`.
    pub fn verify(&self, i: usize, block: &[u8]) -> bool {
        self.get(i) == Some(self.kind().compute(block))
    }

    /// Bytes of memory the values take.
    pub fn memory_bytes(&self) -> usize {
        match self {
            BlockSums::Crc32c(v) => v.capacity() * 4,
            BlockSums::Xxh3(v) => v.capacity() * 8,
        }
    }

    /// Little-endian encoding of the values (4 or 8 bytes each).
    pub fn encode_values(&self) -> Vec<u8> {
        match self {
            BlockSums::Crc32c(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            BlockSums::Xxh3(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        }
    }

    /// Decodes `bytes` (a multiple of the value width) into values of `kind`.
    pub fn decode_values(kind: ChecksumKind, bytes: &[u8]) -> Option<Self> {
        match kind {
            ChecksumKind::Crc32c => bytes.len().is_multiple_of(4).then(|| {
                BlockSums::Crc32c(
                    bytes
                        .chunks_exact(4)
                        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                        .collect(),
                )
            }),
            ChecksumKind::Xxh3 => bytes.len().is_multiple_of(8).then(|| {
                BlockSums::Xxh3(
                    bytes
                        .chunks_exact(8)
                        .map(|c| {
                            u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]])
                        })
                        .collect(),
                )
            }),
        }
    }
}
