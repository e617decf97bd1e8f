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
use super::file_stream::{FileStream, STREAM_RESERVATION, read_file_range};
use super::status::in_band_error;
use crate::engine::{
    AnswerReservation, Delivered, Engine, IntoQuery, LookupError, NgramQuery, RowSource, RowsQuery,
};
use crate::regions::{RegionKey, RegionSpec};

/// Pipelined lookups in flight per stream.
const STREAM_PIPELINE: usize = 16;

/// The gRPC service.
#[derive(Debug, Clone)]
pub struct StoreService {
    engine: Arc<Engine>,
    server: Arc<ServerSide>,
}

/// What the service knows of the server around it.
#[derive(Debug, Default)]
pub struct ServerSide {
    /// The local socket's path, if the server has one.
    pub local_socket: Option<std::path::PathBuf>,
    /// The server's open connections, if it tracks them.
    pub(crate) connections: Option<Arc<crate::server::ConnTable>>,
}

/// The connection a request came on (0 when the server does not track connections).
fn owner_of<T>(request: &Request<T>) -> u64 {
    request
        .extensions()
        .get::<crate::server::ConnInfo>()
        .map_or(0, |c| c.id)
}

/// A unary answer with its in-flight reservation attached (the server keeps it until sent).
fn held(
    (message, reservation): (pb::LookupResponse, AnswerReservation),
) -> Response<pb::LookupResponse> {
    let mut response = Response::new(message);
    response.extensions_mut().insert(reservation);
    response
}

impl StoreService {
    /// A service over `engine`, in a server described by `server`.
    pub fn new(engine: Arc<Engine>, server: ServerSide) -> Self {
        Self {
            engine,
            server: Arc::new(server),
        }
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

    async fn lookup_rows(
        &self,
        req: pb::LookupRequest,
    ) -> Result<(pb::LookupResponse, AnswerReservation), LookupError> {
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

fn rows_and_bytes((r, _): &(pb::LookupResponse, AnswerReservation)) -> (u64, u64) {
    (r.row_count, r.rows.len() as u64)
}

/// A stream's answer: the reservation rides in the rows' bytes, released once the message has
/// been encoded (the stream sends one message at a time).
fn streamed(
    (mut message, reservation): (pb::LookupResponse, AnswerReservation),
) -> pb::LookupResponse {
    message.rows = bytes::Bytes::from_owner(ReservedRows {
        rows: message.rows,
        _reservation: reservation,
    });
    message
}

/// Rows and the reservation of their bytes.
struct ReservedRows {
    rows: bytes::Bytes,
    _reservation: AnswerReservation,
}

impl AsRef<[u8]> for ReservedRows {
    fn as_ref(&self) -> &[u8] {
        &self.rows
    }
}

type LookupStreamOut = Pin<Box<dyn Stream<Item = Result<pb::LookupResponse, Status>> + Send>>;

#[tonic::async_trait]
impl EmbeddingStore for StoreService {
    async fn lookup(
        &self,
        request: Request<pb::LookupRequest>,
    ) -> Result<Response<pb::LookupResponse>, Status> {
        Ok(held(self.lookup_rows(request.into_inner()).await?))
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
                        Ok(r) => streamed(r),
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
        let answer = self
            .counted(
                async move {
                    let query = NgramQuery::try_from(request.into_inner())?;
                    Ok(lookup_response(engine.lookup_ngrams(&query).await?))
                },
                rows_and_bytes,
            )
            .await?;
        Ok(held(answer))
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
            tables: self.engine.tables().map(|t| table_info(&t)).collect(),
        }))
    }

    async fn describe_table(
        &self,
        request: Request<pb::DescribeTableRequest>,
    ) -> Result<Response<pb::TableInfo>, Status> {
        let table = self.engine.table(&request.into_inner().table)?;
        Ok(Response::new(table_info(&table)))
    }

    async fn stats(
        &self,
        request: Request<pb::StatsRequest>,
    ) -> Result<Response<pb::StatsResponse>, Status> {
        let stats = self.engine.stats(request.into_inner().reset);
        let mut response = pb::StatsResponse::from(stats);
        if let Some(table) = &self.server.connections {
            response.connections = table.len() as u64;
        }
        Ok(Response::new(response))
    }

    async fn register_region(
        &self,
        request: Request<pb::RegisterRegionRequest>,
    ) -> Result<Response<pb::RegisterRegionResponse>, Status> {
        let owner = owner_of(&request);
        let spec = RegionSpec::try_from(request.into_inner())?;
        Ok(Response::new(
            self.engine.register_region(spec, owner)?.into(),
        ))
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

    async fn server_info(
        &self,
        _: Request<pb::ServerInfoRequest>,
    ) -> Result<Response<pb::ServerInfoResponse>, Status> {
        let c = self.engine.config();
        Ok(Response::new(pb::ServerInfoResponse {
            local_socket: self
                .server
                .local_socket
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            max_batch_rows: c.max_batch_ids as u64,
            max_regions_per_connection: u32::try_from(c.max_regions_per_connection)
                .unwrap_or(u32::MAX),
            version: env!("CARGO_PKG_VERSION").into(),
        }))
    }

    async fn reload(
        &self,
        request: Request<pb::ReloadRequest>,
    ) -> Result<Response<pb::ReloadResponse>, Status> {
        let tables = request.into_inner().tables;
        let report = self.engine.reload(&tables, true).await?;
        Ok(Response::new(pb::ReloadResponse {
            tables: report.into_iter().map(Into::into).collect(),
        }))
    }

    async fn share_table(
        &self,
        request: Request<pb::ShareTableRequest>,
    ) -> Result<Response<pb::ShareTableResponse>, Status> {
        let r = request.into_inner();
        let device = r.device.map(|d| d as usize);
        let shared = self.engine.share_table(&r.table, device).await?;
        Ok(Response::new(shared.into()))
    }

    type ReadTableFileStream = FileStream;

    async fn read_table_file(
        &self,
        request: Request<pb::ReadTableFileRequest>,
    ) -> Result<Response<Self::ReadTableFileStream>, Status> {
        let r = request.into_inner();
        let path = if r.group.is_empty() {
            self.engine.table_file(&r.table, r.version, &r.file)?
        } else {
            self.engine.group_file(&r.group, &r.file)?
        };
        let reservation = self.engine.reserve_answer(STREAM_RESERVATION).await?;
        Ok(Response::new(
            read_file_range(path, r.offset, r.length, reservation).await?,
        ))
    }
}
