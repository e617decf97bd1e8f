//! Protobuf messages into validated engine queries (`TryFrom`, once, at the edge), and engine
//! answers back into messages. Nothing of `pb` travels past this file into the engine.

use engram_store_cache::{LatencySnapshot, TierStats};
use engram_store_proto::v1 as pb;

use crate::engine::{
    Answer, AnswerReservation, EngineStats, IntoAnswer, IntoQuery, NgramQuery, ProtocolError,
    RegisteredRegion, ReloadOutcome, RowSource, RowsQuery, ServedTable, TableReload, TokenSequence,
};
use crate::regions::{RegionKey, RegionSpec};

/// Row ids sent as `ids` or as `ids_le` (packed little-endian u64s), never both.
fn row_ids(
    ids: Vec<u64>,
    ids_le: &[u8],
    field_ids: &'static str,
    field_le: &'static str,
) -> Result<Vec<u64>, ProtocolError> {
    if ids_le.is_empty() {
        return Ok(ids);
    }
    if !ids.is_empty() {
        return Err(ProtocolError::new(
            field_ids,
            format!("{} ids", ids.len()),
            "the row ids go in ids or in ids_le, not both",
        ));
    }
    if !ids_le.len().is_multiple_of(8) {
        return Err(ProtocolError::new(
            field_le,
            format!("{} bytes", ids_le.len()),
            "not a whole number of 8-byte ids",
        ));
    }
    Ok(ids_le
        .chunks_exact(8)
        .map(|c| {
            let mut id = [0u8; 8];
            id.copy_from_slice(c);
            u64::from_le_bytes(id)
        })
        .collect())
}

impl TryFrom<pb::LookupRequest> for RowsQuery {
    type Error = ProtocolError;
    fn try_from(r: pb::LookupRequest) -> Result<Self, ProtocolError> {
        Ok(RowsQuery {
            ids: row_ids(
                r.ids,
                &r.ids_le,
                "LookupRequest.ids",
                "LookupRequest.ids_le",
            )?,
            table: r.table,
            version: r.version,
        })
    }
}

impl TryFrom<pb::PrefetchRows> for RowsQuery {
    type Error = ProtocolError;
    fn try_from(r: pb::PrefetchRows) -> Result<Self, ProtocolError> {
        Ok(RowsQuery {
            ids: row_ids(r.ids, &r.ids_le, "PrefetchRows.ids", "PrefetchRows.ids_le")?,
            table: r.table,
            version: None,
        })
    }
}

/// Sequence `index` of a request, its dead masks checked: each empty or one byte per token.
fn token_sequence(index: usize, s: pb::TokenSequence) -> Result<TokenSequence, ProtocolError> {
    TokenSequence::with_context(s.tokens, s.context)
        .with_dead(s.dead, s.context_dead)
        .map_err(|e| {
            let (field, ids) = if e.what == "context" {
                ("TokenSequence.context_dead", "context tokens")
            } else {
                ("TokenSequence.dead", "tokens")
            };
            ProtocolError::new(
                field,
                format!(
                    "{} bytes for the {} {ids} of sequence {index}",
                    e.found, e.expected
                ),
                "a dead mask is empty or has one byte per token",
            )
        })
}

impl TryFrom<pb::LookupNgramsRequest> for NgramQuery {
    type Error = ProtocolError;
    fn try_from(r: pb::LookupNgramsRequest) -> Result<Self, ProtocolError> {
        let columns = match r.columns {
            None => None,
            Some(c) if c.start >= c.end => {
                return Err(ProtocolError::new(
                    "LookupNgramsRequest.columns",
                    format!("{}..{}", c.start, c.end),
                    "an empty column range (start must be below end; leave columns unset for \
                     every column)",
                ));
            }
            Some(c) => Some(c.start..c.end),
        };
        Ok(NgramQuery {
            group: r.group,
            layer_id: r.layer_id,
            sequences: r
                .sequences
                .into_iter()
                .enumerate()
                .map(|(i, s)| token_sequence(i, s))
                .collect::<Result<_, _>>()?,
            compressed: r.compressed,
            version: r.version,
            columns,
        })
    }
}

impl TryFrom<pb::PrefetchRequest> for RowSource {
    type Error = ProtocolError;
    fn try_from(r: pb::PrefetchRequest) -> Result<Self, ProtocolError> {
        match r.target {
            Some(pb::prefetch_request::Target::Rows(rows)) => Ok(RowSource::Rows(rows.try_into()?)),
            Some(pb::prefetch_request::Target::Ngrams(q)) => Ok(RowSource::Ngrams(q.try_into()?)),
            None => Err(ProtocolError::missing(
                "PrefetchRequest.target",
                "set rows or ngrams",
            )),
        }
    }
}

impl TryFrom<pb::LookupIntoRequest> for IntoQuery {
    type Error = ProtocolError;
    fn try_from(r: pb::LookupIntoRequest) -> Result<Self, ProtocolError> {
        let source = match r.source {
            Some(pb::lookup_into_request::Source::Rows(rows)) => RowSource::Rows(rows.try_into()?),
            Some(pb::lookup_into_request::Source::Ngrams(q)) => RowSource::Ngrams(q.try_into()?),
            None => {
                return Err(ProtocolError::missing(
                    "LookupIntoRequest.source",
                    "set rows or ngrams",
                ));
            }
        };
        Ok(IntoQuery {
            region: RegionKey {
                id: r.region_id,
                token: r.token,
            },
            offset: r.offset,
            source,
        })
    }
}

impl TryFrom<pb::RegisterRegionRequest> for RegionSpec {
    type Error = ProtocolError;
    fn try_from(r: pb::RegisterRegionRequest) -> Result<Self, ProtocolError> {
        match r.kind {
            Some(pb::register_region_request::Kind::Shm(_)) => Ok(RegionSpec::ShmPath),
            Some(pb::register_region_request::Kind::CudaIpc(ipc)) => Ok(RegionSpec::CudaIpc {
                handle: ipc.ipc_handle.to_vec(),
                offset: ipc.offset,
                size: ipc.size,
                device: ipc.device,
            }),
            None => Err(ProtocolError::missing(
                "RegisterRegionRequest.kind",
                "set shm or cuda_ipc",
            )),
        }
    }
}

impl From<pb::UnregisterRegionRequest> for RegionKey {
    fn from(r: pb::UnregisterRegionRequest) -> Self {
        RegionKey {
            id: r.region_id,
            token: r.token,
        }
    }
}

/// An answer's rows as a LookupResponse, and its reservation in the in-flight budget (held by
/// the caller until the response is sent).
pub(crate) fn lookup_response(answer: Answer) -> (pb::LookupResponse, AnswerReservation) {
    let m = answer.table.manifest();
    let response = pb::LookupResponse {
        rows: answer.rows,
        row_bytes: m.row_bytes,
        row_count: answer.row_count as u64,
        dtype: m.dtype.to_proto() as i32,
        row_dim: m.row_dim,
        version: m.version,
        error_code: 0,
        error_message: String::new(),
        row_format: Some(m.row_format.to_proto()),
    };
    (response, answer.reservation)
}

/// A served table's shape.
pub(crate) fn table_info(table: &ServedTable) -> pb::TableInfo {
    let m = table.manifest();
    pb::TableInfo {
        name: m.name.clone(),
        rows: m.rows,
        row_dim: m.row_dim,
        dtype: m.dtype.to_proto() as i32,
        row_bytes: m.row_bytes,
        version: m.version,
        data_bytes: m.data_bytes(),
        block_size: m.block_size,
        checksum: m.checksum.name().into(),
        row_format: Some(m.row_format.to_proto()),
    }
}

impl From<IntoAnswer> for pb::LookupIntoResponse {
    fn from(a: IntoAnswer) -> Self {
        pb::LookupIntoResponse {
            row_count: a.row_count,
            row_bytes: a.row_bytes,
            bytes_written: a.bytes_written,
            gpu_hits: a.gpu_hits,
            version: a.version,
        }
    }
}

impl From<TableReload> for pb::TableReload {
    fn from(r: TableReload) -> Self {
        let outcome = match r.outcome {
            ReloadOutcome::Unchanged => pb::ReloadOutcome::Unchanged,
            ReloadOutcome::Swapped => pb::ReloadOutcome::Swapped,
            ReloadOutcome::Added => pb::ReloadOutcome::Added,
            ReloadOutcome::Refused => pb::ReloadOutcome::Refused,
        };
        pb::TableReload {
            table: r.table,
            previous_version: r.previous.unwrap_or(0),
            version: r.version.unwrap_or(0),
            outcome: outcome as i32,
            message: r.message,
        }
    }
}

impl From<RegisteredRegion> for pb::RegisterRegionResponse {
    fn from(r: RegisteredRegion) -> Self {
        pb::RegisterRegionResponse {
            region_id: r.id,
            token: r.token,
            size: r.size,
        }
    }
}

fn latency(s: LatencySnapshot) -> pb::LatencySummary {
    pb::LatencySummary {
        count: s.count,
        p50_us: s.p50_us,
        p90_us: s.p90_us,
        p99_us: s.p99_us,
        p999_us: s.p999_us,
        max_us: s.max_us,
    }
}

fn tier_stats(name: &str, s: &TierStats) -> pb::TierStats {
    pb::TierStats {
        tier: name.into(),
        hits: s.hits,
        misses: s.misses,
        bytes: s.bytes,
        resident_bytes: s.resident_bytes,
        capacity_bytes: s.capacity_bytes,
        resident_rows: s.resident_rows,
        hit_rate: s.hit_rate(),
        latency: Some(latency(s.latency)),
        prefetch_rows: s.prefetch_rows,
        prefetch_hits: s.prefetch_hits,
        policy: s.policy.clone(),
        checksum_errors: s.checksum_errors,
        reads: s.reads,
        device: s.device,
        rows_entering: s.rows_entering,
    }
}

impl From<EngineStats> for pb::StatsResponse {
    fn from(s: EngineStats) -> Self {
        pb::StatsResponse {
            regions: s.regions,
            channels: s.channels,
            prefetch_queued_rows: s.prefetch_queued_rows,
            prefetch_dropped_rows: s.prefetch_dropped_rows,
            prefetch_dropped_requests: s.prefetch_dropped_requests,
            answer_bytes_in_flight: s.answer_bytes_in_flight,
            answer_budget_bytes: s.answer_budget_bytes,
            rows_in_flight: s.rows_in_flight,
            max_rows_in_flight: s.max_rows_in_flight,
            refused_requests: s.refused_requests,
            unavailable: s
                .unavailable
                .into_iter()
                .map(|(name, reason)| pb::Unavailable { name, reason })
                .collect(),
            connections: 0,
            tiers: s
                .tiers
                .iter()
                .map(|(kind, t)| tier_stats(kind.name(), t))
                .collect(),
            request_latency: Some(latency(s.request_latency)),
            requests: s.requests,
            rows_served: s.rows,
            bytes_served: s.bytes,
            errors: s.errors,
            io_engine: s.io_engine.into(),
            uptime_s: s.uptime_s,
            process_rss_bytes: s.process_rss_bytes,
            fixed_overhead_bytes: s.fixed_overhead_bytes,
        }
    }
}

impl From<crate::engine::SharedTable> for pb::ShareTableResponse {
    fn from(s: crate::engine::SharedTable) -> Self {
        #[cfg(feature = "cuda")]
        let offered = s.offered;
        #[cfg(feature = "cuda")]
        let vram = s.gpu.map(|g| pb::SharedVramTier {
            device: g.device as u32,
            capacity: g.capacity as u64,
            buckets: g.buckets as u64,
            grace_ms: engram_store_cache::gpu::SHARED_GRACE.as_millis() as u32,
            retire_ms: engram_store_cache::gpu::SHARED_RETIRE.as_millis() as u32,
            fd_socket: offered
                .as_ref()
                .map(|o| o.socket.display().to_string())
                .unwrap_or_default(),
            fd_token: offered
                .as_ref()
                .map(|o| o.token.to_vec())
                .unwrap_or_default()
                .into(),
            fd_bytes: g.parts.iter().map(|p| p.bytes).collect(),
            ..Default::default()
        });
        #[cfg(not(feature = "cuda"))]
        let vram = None;
        pb::ShareTableResponse {
            table: s.table,
            version: s.version,
            rows: s.rows,
            row_bytes: s.row_bytes,
            host_path: s.host_path.display().to_string(),
            host_bytes: s.host_bytes,
            vram,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sequence(
        tokens: &[u32],
        dead: &[u8],
        context: &[u32],
        context_dead: &[u8],
    ) -> pb::TokenSequence {
        pb::TokenSequence {
            tokens: tokens.to_vec(),
            context: context.to_vec(),
            dead: dead.to_vec().into(),
            context_dead: context_dead.to_vec().into(),
        }
    }

    fn request(
        sequences: Vec<pb::TokenSequence>,
        columns: Option<(u32, u32)>,
    ) -> pb::LookupNgramsRequest {
        pb::LookupNgramsRequest {
            group: "g".into(),
            layer_id: 1,
            sequences,
            compressed: false,
            version: None,
            columns: columns.map(|(start, end)| pb::ColumnRange { start, end }),
        }
    }

    #[test]
    fn dead_masks_and_columns_become_the_query() {
        let q = NgramQuery::try_from(request(
            vec![
                sequence(&[1, 2, 3], &[0, 1, 0], &[9], &[1]),
                sequence(&[4], &[], &[], &[]),
            ],
            Some((3, 6)),
        ))
        .expect("valid");
        assert_eq!(q.columns, Some(3..6));
        assert_eq!(q.sequences[0].dead(), [0, 1, 0]);
        assert_eq!(q.sequences[0].context_dead(), [1]);
        assert_eq!(q.sequences[1].dead(), [] as [u8; 0]);
        let all = NgramQuery::try_from(request(vec![], None)).expect("valid");
        assert_eq!(all.columns, None);
    }

    #[test]
    fn bad_masks_and_empty_ranges_name_field_sequence_and_lengths() {
        let e = NgramQuery::try_from(request(
            vec![
                sequence(&[1], &[], &[], &[]),
                sequence(&[1, 2, 3, 4, 5], &[0, 0, 1], &[], &[]),
            ],
            None,
        ))
        .expect_err("short mask");
        assert_eq!(
            e.to_string(),
            "TokenSequence.dead = 3 bytes for the 5 tokens of sequence 1: a dead mask is empty \
             or has one byte per token"
        );
        let e = NgramQuery::try_from(request(
            vec![sequence(&[1], &[1], &[7, 8], &[0, 0, 0])],
            None,
        ))
        .expect_err("long context mask");
        assert_eq!(
            e.to_string(),
            "TokenSequence.context_dead = 3 bytes for the 2 context tokens of sequence 0: a dead \
             mask is empty or has one byte per token"
        );
        for (start, end) in [(5, 5), (7, 3)] {
            let e =
                NgramQuery::try_from(request(vec![], Some((start, end)))).expect_err("empty range");
            assert_eq!(e.field, "LookupNgramsRequest.columns");
            assert_eq!(e.value, format!("{start}..{end}"));
        }
        // Through Prefetch and LookupInto too.
        let bad = request(vec![sequence(&[1, 2], &[1], &[], &[])], None);
        let e = RowSource::try_from(pb::PrefetchRequest {
            target: Some(pb::prefetch_request::Target::Ngrams(bad.clone())),
        })
        .expect_err("prefetch");
        assert_eq!(e.field, "TokenSequence.dead");
        let e = IntoQuery::try_from(pb::LookupIntoRequest {
            source: Some(pb::lookup_into_request::Source::Ngrams(bad)),
            ..Default::default()
        })
        .expect_err("lookup into");
        assert_eq!(e.field, "TokenSequence.dead");
    }
}
