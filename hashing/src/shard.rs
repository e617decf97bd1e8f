//! Tensor-parallel head shards: which hash columns of a layer one rank serves.
//!
//! vLLM splits a layer's `heads_total` columns (DeepSeek-V4.1: 3 n-gram orders x 8 heads = 24)
//! into contiguous runs of `ceil(heads_total / ranks)` columns, rank `r` taking the run starting
//! at `r * ceil(heads_total / ranks)` (the last run may be shorter), and refuses a geometry that
//! leaves a rank without columns (`engram_head_shard` in vLLM's `engram_mooncake.py`). A rank
//! needs only its columns, and the rows of those columns form one contiguous range of the layer's
//! table ([`crate::LayerLayout::column_rows`]).

use std::ops::Range;

use crate::error::ShardError;

/// The columns rank `rank` of `ranks` serves out of a layer's `columns`.
///
/// ```
/// use engram_store_hashing::head_shard;
/// assert_eq!(head_shard(24, 8, 7), Ok(21..24));
/// assert_eq!(head_shard(24, 5, 4), Ok(20..24)); // 5 per rank, the last one short
/// assert!(head_shard(24, 7, 6).is_err()); // 4 per rank leave rank 6 nothing
/// ```
pub fn head_shard(columns: usize, ranks: usize, rank: usize) -> Result<Range<usize>, ShardError> {
    if ranks == 0 || rank >= ranks {
        return Err(ShardError::BadRank { rank, ranks });
    }
    if columns == 0 {
        return Err(ShardError::NoColumns);
    }
    let per_rank = columns.div_ceil(ranks);
    let start = rank * per_rank;
    if start >= columns {
        return Err(ShardError::EmptyRank {
            columns,
            ranks,
            rank,
            per_rank,
        });
    }
    Ok(start..(start + per_rank).min(columns))
}

#[cfg(test)]
mod tests {
    use super::head_shard;
    use crate::error::ShardError;

    #[test]
    fn v41_columns_over_1_2_4_8_ranks() {
        for (ranks, per_rank) in [(1, 24), (2, 12), (4, 6), (8, 3)] {
            let mut next = 0;
            for rank in 0..ranks {
                let cols = head_shard(24, ranks, rank).expect("valid geometry");
                assert_eq!(
                    cols.start, next,
                    "{ranks} ranks: rank {rank} starts where the last ended"
                );
                assert_eq!(cols.len(), per_rank, "{ranks} ranks: rank {rank}");
                next = cols.end;
            }
            assert_eq!(next, 24, "{ranks} ranks cover every column");
        }
    }

    #[test]
    fn uneven_and_invalid_geometries() {
        // 24 over 5: 5, 5, 5, 5, 4.
        let sizes: Vec<usize> = (0..5)
            .map(|r| head_shard(24, 5, r).expect("valid").len())
            .collect();
        assert_eq!(sizes, [5, 5, 5, 5, 4]);
        // 24 over 7: 4 per rank, ranks 0..=5 cover 24 columns and rank 6 has none.
        assert_eq!(head_shard(24, 7, 5), Ok(20..24));
        assert_eq!(
            head_shard(24, 7, 6),
            Err(ShardError::EmptyRank {
                columns: 24,
                ranks: 7,
                rank: 6,
                per_rank: 4
            })
        );
        assert_eq!(
            head_shard(24, 0, 0),
            Err(ShardError::BadRank { rank: 0, ranks: 0 })
        );
        assert_eq!(
            head_shard(24, 2, 2),
            Err(ShardError::BadRank { rank: 2, ranks: 2 })
        );
        assert_eq!(head_shard(0, 1, 0), Err(ShardError::NoColumns));
        assert_eq!(head_shard(24, 24, 23), Ok(23..24));
        assert!(head_shard(24, 25, 24).is_err());
    }
}
