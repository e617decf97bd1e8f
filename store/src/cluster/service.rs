//! The EmbeddingStore service of a cluster node: the store service with two rules in front of
//! Lookup, LookupNgrams and Prefetch. A request routed by a cluster client carries the map epoch
//! (`engram-epoch`); the node serves it only if it serves every row's shard at the version the
//! map places, and otherwise answers FAILED_PRECONDITION with its own epoch in the same header,
//! so the client refreshes its map and asks another replica. A request without the header
//! (grpcurl, a plain client) is served here when this node serves its rows, and with `--route`
//! forwarded shard by shard to ready replicas otherwise (the forwarded parts carry the epoch, so
//! they are never forwarded again). Without a cluster every call goes straight through.
//! LookupStream, LookupInto and the rest are never routed.

use std::pin::Pin;
use std::sync::Arc;

use engram_store_client::ClientError;
use engram_store_client::cluster::EPOCH_HEADER;
use engram_store_proto::v1 as pb;
use engram_store_proto::v1::embedding_store_server::EmbeddingStore;
use futures::Stream;
use tonic::{Request, Response, Status, Streaming};

use super::ClusterNode;
use crate::edge::StoreService;

/// The store service, with the cluster's rules when the node is in one.
#[derive(Debug, Clone)]
pub struct ClusterService {
    inner: StoreService,
    node: Option<Arc<ClusterNode>>,
}

impl ClusterService {
    /// `inner`, checked and routed by `node` (none: passed through).
    pub fn new(inner: StoreService, node: Option<Arc<ClusterNode>>) -> Self {
        Self { inner, node }
    }

    /// What to do with a request for `ids` of `table`.
    fn decide<T>(&self, request: &Request<T>, table: &str, ids: &[u64]) -> Decision<'_> {
        let Some(node) = &self.node else {
            return Decision::Local;
        };
        let routed = request.metadata().get(EPOCH_HEADER).is_some();
        if node.serves_rows(table, ids) {
            return Decision::Local;
        }
        if routed {
            return Decision::Refuse(not_held(node, table));
        }
        if node.options().route && node.view().map.tables.contains_key(table) {
            return Decision::Forward(node);
        }
        Decision::Local
    }
}

enum Decision<'a> {
    Local,
    Refuse(Status),
    Forward(&'a Arc<ClusterNode>),
}

/// FAILED_PRECONDITION naming the node's epoch (also in the `engram-epoch` header).
fn not_held(node: &ClusterNode, table: &str) -> Status {
    let epoch = node.view().map.epoch;
    let mut status = Status::failed_precondition(format!(
        "node {} does not serve these rows of table {table:?} at map epoch {epoch}",
        node.options().node_id
    ));
    if let Ok(v) = epoch.to_string().parse() {
        status.metadata_mut().insert(EPOCH_HEADER, v);
    }
    status
}

/// Row ids of a request, from `ids` or `ids_le` (a malformed one is left to the store to refuse).
fn ids_of(ids: &[u64], ids_le: &[u8]) -> Vec<u64> {
    if ids_le.is_empty() {
        return ids.to_vec();
    }
    ids_le
        .chunks_exact(8)
        .map(|c| {
            let mut b = [0u8; 8];
            b.copy_from_slice(c);
            u64::from_le_bytes(b)
        })
        .collect()
}

fn client_status(e: ClientError) -> Status {
    Status::new(e.code(), e.to_string())
}

/// A LookupResponse of routed rows.
fn routed_response(rows: engram_store_client::Rows) -> pb::LookupResponse {
    pb::LookupResponse {
        row_count: rows.len() as u64,
        row_bytes: rows.row_bytes() as u32,
        dtype: rows.dtype() as i32,
        row_dim: rows.row_dim(),
        version: rows.version(),
        rows: rows.bytes().clone(),
        ..Default::default()
    }
}

type LookupStreamOut = Pin<Box<dyn Stream<Item = Result<pb::LookupResponse, Status>> + Send>>;

#[tonic::async_trait]
impl EmbeddingStore for ClusterService {
    async fn lookup(
        &self,
        request: Request<pb::LookupRequest>,
    ) -> Result<Response<pb::LookupResponse>, Status> {
        let (table, ids) = {
            let r = request.get_ref();
            (r.table.clone(), ids_of(&r.ids, &r.ids_le))
        };
        match self.decide(&request, &table, &ids) {
            Decision::Local => self.inner.lookup(request).await,
            Decision::Refuse(s) => Err(s),
            Decision::Forward(node) => {
                let rows = node
                    .router()
                    .lookup(&table, &ids)
                    .await
                    .map_err(client_status)?;
                let mut answer = routed_response(rows);
                if let Ok(t) = node.engine().table(&table) {
                    answer.row_format = Some(t.manifest().row_format.to_proto());
                }
                Ok(Response::new(answer))
            }
        }
    }

    type LookupStreamStream = LookupStreamOut;

    async fn lookup_stream(
        &self,
        request: Request<Streaming<pb::LookupRequest>>,
    ) -> Result<Response<Self::LookupStreamStream>, Status> {
        self.inner.lookup_stream(request).await
    }

    async fn lookup_ngrams(
        &self,
        request: Request<pb::LookupNgramsRequest>,
    ) -> Result<Response<pb::LookupResponse>, Status> {
        let Some(node) = &self.node else {
            return self.inner.lookup_ngrams(request).await;
        };
        let table = node
            .engine()
            .group(&request.get_ref().group)
            .ok()
            .and_then(|g| g.layer(request.get_ref().layer_id).ok().cloned())
            .map(|l| l.table().manifest().name.clone());
        let held = table.as_deref().is_some_and(|t| node.serves_whole(t));
        let routed = request.metadata().get(EPOCH_HEADER).is_some();
        let mapped = table
            .as_deref()
            .is_some_and(|t| node.view().map.tables.contains_key(t));
        if held || !mapped {
            return self.inner.lookup_ngrams(request).await;
        }
        if routed || !node.options().route {
            if routed {
                return Err(not_held(node, table.as_deref().unwrap_or_default()));
            }
            return self.inner.lookup_ngrams(request).await;
        }
        let rows = node
            .router()
            .lookup_ngrams_request(request.get_ref())
            .await
            .map_err(client_status)?;
        Ok(Response::new(routed_response(rows)))
    }

    async fn prefetch(
        &self,
        request: Request<pb::PrefetchRequest>,
    ) -> Result<Response<pb::PrefetchResponse>, Status> {
        let rows = match &request.get_ref().target {
            Some(pb::prefetch_request::Target::Rows(r)) => {
                Some((r.table.clone(), ids_of(&r.ids, &r.ids_le)))
            }
            _ => None,
        };
        let Some((table, ids)) = rows else {
            return self.inner.prefetch(request).await;
        };
        match self.decide(&request, &table, &ids) {
            Decision::Local => self.inner.prefetch(request).await,
            Decision::Refuse(s) => Err(s),
            Decision::Forward(node) => {
                let accepted_rows = node
                    .router()
                    .prefetch(&table, &ids)
                    .await
                    .map_err(client_status)?;
                Ok(Response::new(pb::PrefetchResponse { accepted_rows }))
            }
        }
    }

    async fn list_tables(
        &self,
        request: Request<pb::ListTablesRequest>,
    ) -> Result<Response<pb::ListTablesResponse>, Status> {
        self.inner.list_tables(request).await
    }

    async fn describe_table(
        &self,
        request: Request<pb::DescribeTableRequest>,
    ) -> Result<Response<pb::TableInfo>, Status> {
        self.inner.describe_table(request).await
    }

    async fn stats(
        &self,
        request: Request<pb::StatsRequest>,
    ) -> Result<Response<pb::StatsResponse>, Status> {
        self.inner.stats(request).await
    }

    async fn register_region(
        &self,
        request: Request<pb::RegisterRegionRequest>,
    ) -> Result<Response<pb::RegisterRegionResponse>, Status> {
        self.inner.register_region(request).await
    }

    async fn unregister_region(
        &self,
        request: Request<pb::UnregisterRegionRequest>,
    ) -> Result<Response<pb::UnregisterRegionResponse>, Status> {
        self.inner.unregister_region(request).await
    }

    async fn lookup_into(
        &self,
        request: Request<pb::LookupIntoRequest>,
    ) -> Result<Response<pb::LookupIntoResponse>, Status> {
        self.inner.lookup_into(request).await
    }

    async fn server_info(
        &self,
        request: Request<pb::ServerInfoRequest>,
    ) -> Result<Response<pb::ServerInfoResponse>, Status> {
        self.inner.server_info(request).await
    }

    async fn reload(
        &self,
        request: Request<pb::ReloadRequest>,
    ) -> Result<Response<pb::ReloadResponse>, Status> {
        self.inner.reload(request).await
    }

    async fn share_table(
        &self,
        request: Request<pb::ShareTableRequest>,
    ) -> Result<Response<pb::ShareTableResponse>, Status> {
        self.inner.share_table(request).await
    }

    type ReadTableFileStream = crate::edge::FileStream;

    async fn read_table_file(
        &self,
        request: Request<pb::ReadTableFileRequest>,
    ) -> Result<Response<Self::ReadTableFileStream>, Status> {
        self.inner.read_table_file(request).await
    }
}
