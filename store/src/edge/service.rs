//! The `engram_store.v1.EmbeddingStore` gRPC service: each RPC converts its message once into a
//! query ([`super::convert`]), calls one engine method, and encodes the answer; every request is
//! counted in one place ([`StoreService::counted`]) and every error becomes a status in
//! [`super::status`].

use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use engram_store_proto::v1 as pb;
use engram_store_proto::v1::embedding_store_server::EmbeddingStore;
use futures::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use super::convert::{lookup_response, table_info};
use super::status::in_band_error;
use crate::engine::{Delivered, Engine, IntoQuery, LookupError, NgramQuery, RowSource, RowsQuery};
use crate::regions::{RegionKey, RegionSpec};

/// Pipelined lookups in flight per stream.
const STREAM_PIPELINE: usize = 16;

/// The gRPC service.
#[derive(Debug, Clone)]
pub struct StoreService {
    engine: Arc<Engine>,
}

impl StoreService {
    /// A service over `engine`.
    pub fn new(engine: Arc<Engine>) -> Self {
        Self { engine }
    }

    /// Runs one request, counting it in the engine's stats by what `delivered` says it
    /// delivered.
    async fn counted<T>(
        &self,
        work: impl Future<Output = Result<T, LookupError>>,
        delivered: impl Fn(&T) -> (u64, u64),
    ) -> Result<T, LookupError> {
        let start = Instant::now();
        let result = work.await;
        let outcome: Delivered = result.as_ref().ok().map(&delivered);
        if let Err(e) = &result {
            tracing::debug!(error = %e, "request failed");
        }
        self.engine.record_request(start.elapsed(), outcome);
        result
    }

    async fn lookup_rows(&self, req: pb::LookupRequest) -> Result<pb::LookupResponse, LookupError> {
        let engine = &self.engine;
        self.counted(
            async move {
                let query = RowsQuery::try_from(req)?;
                Ok(lookup_response(engine.lookup(&query).await?))
            },
            rows_and_bytes,
        )
        .await
    }
}

fn rows_and_bytes(r: &pb::LookupResponse) -> (u64, u64) {
    (r.row_count, r.rows.len() as u64)
}

type LookupStreamOut = Pin<Box<dyn Stream<Item = Result<pb::LookupResponse, Status>> + Send>>;

#[tonic::async_trait]
impl EmbeddingStore for StoreService {
    async fn lookup(
        &self,
        request: Request<pb::LookupRequest>,
    ) -> Result<Response<pb::LookupResponse>, Status> {
        Ok(Response::new(self.lookup_rows(request.into_inner()).await?))
    }

    type LookupStreamStream = LookupStreamOut;

    async fn lookup_stream(
        &self,
        request: Request<Streaming<pb::LookupRequest>>,
    ) -> Result<Response<Self::LookupStreamStream>, Status> {
        let this = self.clone();
        let answers = request
            .into_inner()
            .map(move |msg| {
                let this = this.clone();
                async move {
                    let req = msg?;
                    Ok(match this.lookup_rows(req).await {
                        Ok(r) => r,
                        Err(e) => in_band_error(&e),
                    })
                }
            })
            .buffered(STREAM_PIPELINE);
        Ok(Response::new(Box::pin(answers)))
    }

    async fn lookup_ngrams(
        &self,
        request: Request<pb::LookupNgramsRequest>,
    ) -> Result<Response<pb::LookupResponse>, Status> {
        let engine = &self.engine;
        let response = self
            .counted(
                async move {
                    let query = NgramQuery::try_from(request.into_inner())?;
                    Ok(lookup_response(engine.lookup_ngrams(&query).await?))
                },
                rows_and_bytes,
            )
            .await?;
        Ok(Response::new(response))
    }

    async fn prefetch(
        &self,
        request: Request<pb::PrefetchRequest>,
    ) -> Result<Response<pb::PrefetchResponse>, Status> {
        let source = RowSource::try_from(request.into_inner())?;
        let accepted_rows = self.engine.prefetch(&source)?;
        Ok(Response::new(pb::PrefetchResponse { accepted_rows }))
    }

    async fn list_tables(
        &self,
        _: Request<pb::ListTablesRequest>,
    ) -> Result<Response<pb::ListTablesResponse>, Status> {
        Ok(Response::new(pb::ListTablesResponse {
            tables: self.engine.tables().map(|t| table_info(t)).collect(),
        }))
    }

    async fn describe_table(
        &self,
        request: Request<pb::DescribeTableRequest>,
    ) -> Result<Response<pb::TableInfo>, Status> {
        let table = self.engine.table(&request.into_inner().table)?;
        Ok(Response::new(table_info(table)))
    }

    async fn stats(
        &self,
        request: Request<pb::StatsRequest>,
    ) -> Result<Response<pb::StatsResponse>, Status> {
        let stats = self.engine.stats(request.into_inner().reset);
        Ok(Response::new(stats.into()))
    }

    async fn register_region(
        &self,
        request: Request<pb::RegisterRegionRequest>,
    ) -> Result<Response<pb::RegisterRegionResponse>, Status> {
        let spec = RegionSpec::try_from(request.into_inner())?;
        Ok(Response::new(self.engine.register_region(spec)?.into()))
    }

    async fn unregister_region(
        &self,
        request: Request<pb::UnregisterRegionRequest>,
    ) -> Result<Response<pb::UnregisterRegionResponse>, Status> {
        self.engine
            .unregister_region(&RegionKey::from(request.into_inner()))?;
        Ok(Response::new(pb::UnregisterRegionResponse {}))
    }

    async fn lookup_into(
        &self,
        request: Request<pb::LookupIntoRequest>,
    ) -> Result<Response<pb::LookupIntoResponse>, Status> {
        let engine = &self.engine;
        let answer = self
            .counted(
                async move {
                    let query = IntoQuery::try_from(request.into_inner())?;
                    engine.lookup_into(&query).await
                },
                |a| (a.row_count, a.bytes_written),
            )
            .await?;
        Ok(Response::new(answer.into()))
    }
}
