//! The client: a tonic channel with message limits for large batches, batch splitting, retries
//! with exponential backoff on UNAVAILABLE, a pipelined streaming lookup, and Engram n-gram
//! lookups and prefetches (hashed by the server). TLS (a CA, and a client certificate for mutual
//! TLS) and a bearer token are set on the builder.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use engram_store_proto::v1 as pb;
use engram_store_proto::v1::embedding_store_client::EmbeddingStoreClient;
use futures::{Stream, StreamExt};
use tonic::metadata::AsciiMetadataValue;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::channel::{Channel as SidecarChannel, ChannelTarget};
use crate::error::{ClientError, is_retryable};
use crate::rows::Rows;
use crate::security::Security;
use crate::shared_memory::SharedMemoryRegion;

/// Builds a [`Client`].
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    addr: String,
    max_batch_ids: usize,
    retries: u32,
    initial_backoff: Duration,
    connect_timeout: Duration,
    security: Security,
}

/// The generated stub over the client's channel, with its token attached to every call.
pub type Stub = EmbeddingStoreClient<InterceptedService<Channel, BearerToken>>;

/// Adds `authorization: Bearer TOKEN` to every call (nothing without a token).
#[derive(Clone)]
pub struct BearerToken(pub(crate) Option<AsciiMetadataValue>);

impl std::fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token itself.
        f.debug_tuple("BearerToken")
            .field(&self.0.as_ref().map(|_| "***"))
            .finish()
    }
}

impl Interceptor for BearerToken {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

impl ClientBuilder {
    /// A builder for `addr` (`http://host:port` or `host:port`).
    pub fn new(addr: impl Into<String>) -> Self {
        Self {
            addr: addr.into(),
            max_batch_ids: 1 << 20,
            retries: 4,
            initial_backoff: Duration::from_millis(50),
            connect_timeout: Duration::from_secs(5),
            security: Security::default(),
        }
    }

    /// TLS and token settings, all at once (what the `tls_*` and `token` setters set one by
    /// one).
    pub fn security(mut self, security: Security) -> Self {
        self.security = security;
        self
    }

    /// Connects over TLS, trusting the CA certificate(s) in `pem`. An address without a scheme
    /// then means `https://`. Default: plaintext.
    pub fn tls_ca_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.security.tls_ca_pem = Some(pem.into());
        self
    }

    /// The client certificate chain and key (PEM) shown to a server that requires one (mutual
    /// TLS). Default: none.
    pub fn tls_identity_pem(mut self, cert: impl Into<Vec<u8>>, key: impl Into<Vec<u8>>) -> Self {
        self.security.tls_identity_pem = Some((cert.into(), key.into()));
        self
    }

    /// The name the server's certificate must carry. Default: the address's host.
    pub fn tls_domain(mut self, name: impl Into<String>) -> Self {
        self.security.tls_domain = Some(name.into());
        self
    }

    /// Sends `authorization: Bearer TOKEN` with every call. Default: no token.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.security.token = Some(token.into());
        self
    }

    /// Most ids per request; larger lookups are split. Default 1,048,576 (the server default).
    pub fn max_batch_ids(mut self, n: usize) -> Self {
        self.max_batch_ids = n.max(1);
        self
    }

    /// Retries after UNAVAILABLE. Default 4.
    pub fn retries(mut self, n: u32) -> Self {
        self.retries = n;
        self
    }

    /// First backoff, doubled after each retry. Default 50 ms.
    pub fn initial_backoff(mut self, d: Duration) -> Self {
        self.initial_backoff = d;
        self
    }

    /// Connection timeout. Default 5 s.
    pub fn connect_timeout(mut self, d: Duration) -> Self {
        self.connect_timeout = d;
        self
    }

    /// Connects.
    pub async fn connect(self) -> Result<Client, ClientError> {
        let token = self.security.bearer(&self.addr)?;
        let connect_err = |e: tonic::transport::Error| ClientError::Connect {
            addr: self.addr.clone(),
            message: format!(
                "{e}: {}",
                std::error::Error::source(&e)
                    .map(|s| s.to_string())
                    .unwrap_or_default()
            ),
        };
        let endpoint = self
            .security
            .endpoint(&self.addr)?
            .connect_timeout(self.connect_timeout)
            .tcp_nodelay(true)
            .initial_stream_window_size(Some(8 << 20))
            .initial_connection_window_size(Some(32 << 20));
        let channel = endpoint.connect().await.map_err(connect_err)?;
        Ok(Client {
            inner: EmbeddingStoreClient::with_interceptor(channel, token)
                .max_decoding_message_size(usize::MAX)
                .max_encoding_message_size(usize::MAX),
            config: self,
        })
    }
}

/// A connection to an engram-store server. Cheap to clone (clones share the connection).
#[derive(Debug, Clone)]
pub struct Client {
    inner: Stub,
    config: ClientBuilder,
}

impl Client {
    /// Connects to `addr` with the defaults of [`ClientBuilder`].
    pub async fn connect(addr: impl Into<String>) -> Result<Self, ClientError> {
        ClientBuilder::new(addr).connect().await
    }

    /// A client of a cluster: follows the shard map in the etcd at `endpoints`
    /// (`http://host:2379`, ...) and routes every lookup to ready replicas of its shards.
    pub async fn connect_cluster<S: AsRef<str>>(
        endpoints: &[S],
    ) -> Result<crate::ClusterClient, ClientError> {
        crate::ClusterClient::connect(endpoints).await
    }

    /// A builder.
    pub fn builder(addr: impl Into<String>) -> ClientBuilder {
        ClientBuilder::new(addr)
    }

    /// Runs `call` and retries it with backoff while it fails with UNAVAILABLE.
    async fn with_retry<T, F, Fut>(&self, mut call: F) -> Result<T, ClientError>
    where
        F: FnMut(Stub) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let mut backoff = self.config.initial_backoff;
        let mut attempt = 0;
        loop {
            match call(self.inner.clone()).await {
                Ok(r) => return Ok(r.into_inner()),
                Err(s) if is_retryable(s.code()) && attempt < self.config.retries => {
                    attempt += 1;
                    tokio::time::sleep(backoff).await;
                    backoff *= 2;
                }
                Err(s) => return Err(s.into()),
            }
        }
    }

    /// Calls `rpc` with (a clone of) `req` on a client, retried as [`Client::with_retry`] does.
    async fn call<Req, T, F, Fut>(&self, req: Req, rpc: F) -> Result<T, ClientError>
    where
        Req: Clone,
        F: Fn(Stub, Req) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        self.with_retry(|c| rpc(c, req.clone())).await
    }

    /// The rows of `ids` in `table`, in order (duplicates repeated), from the version the
    /// server serves. Splits batches larger than the configured limit and reassembles them, all
    /// from one version (the later pieces pin the version that answered the first).
    pub async fn lookup(&self, table: &str, ids: &[u64]) -> Result<Rows, ClientError> {
        self.lookup_at(table, ids, None).await
    }

    /// [`Client::lookup`] from version `version` of the table (`None`: the version served).
    /// The server keeps the last few versions of a table; one it no longer has fails with
    /// FAILED_PRECONDITION naming it.
    pub async fn lookup_at(
        &self,
        table: &str,
        ids: &[u64],
        version: Option<u64>,
    ) -> Result<Rows, ClientError> {
        if ids.len() <= self.config.max_batch_ids {
            return self.lookup_one(table, ids.to_vec(), version).await;
        }
        let mut buf = BytesMut::new();
        let mut meta = None;
        let mut version = version;
        for chunk in ids.chunks(self.config.max_batch_ids) {
            let rows = self.lookup_one(table, chunk.to_vec(), version).await?;
            buf.extend_from_slice(rows.bytes());
            version = Some(rows.version());
            meta.get_or_insert((
                rows.row_bytes(),
                rows.row_dim(),
                rows.dtype(),
                rows.version(),
            ));
        }
        let (rb, dim, dtype, version) = meta.unwrap_or((0, 0, pb::DType::DtypeUnspecified, 0));
        Ok(Rows::new(buf.freeze(), rb, dim, dtype, version))
    }

    async fn lookup_one(
        &self,
        table: &str,
        ids: Vec<u64>,
        version: Option<u64>,
    ) -> Result<Rows, ClientError> {
        let n = ids.len();
        let req = pb::LookupRequest {
            table: table.to_owned(),
            ids,
            version,
            ..Default::default()
        };
        let resp = self
            .call(req, |mut c, r| async move { c.lookup(r).await })
            .await?;
        to_rows(resp, n)
    }

    /// Pipelined lookups over one stream: each batch of ids yields its rows, in order. A failed
    /// batch yields its error and the stream goes on.
    pub async fn lookup_stream<S>(
        &self,
        table: &str,
        batches: S,
    ) -> Result<impl Stream<Item = Result<Rows, ClientError>> + use<S>, ClientError>
    where
        S: Stream<Item = Vec<u64>> + Send + 'static,
    {
        let table = table.to_owned();
        let (tx, rx) = tokio::sync::mpsc::channel::<usize>(1024);
        let requests = batches.then(move |ids| {
            let tx = tx.clone();
            let table = table.clone();
            async move {
                let _ = tx.send(ids.len()).await;
                pb::LookupRequest {
                    table,
                    ids,
                    ..Default::default()
                }
            }
        });
        let mut client = self.inner.clone();
        let responses = client.lookup_stream(requests).await?.into_inner();
        let counts = tokio_stream::wrappers::ReceiverStream::new(rx);
        Ok(responses.zip(counts).map(|(resp, n)| match resp {
            Ok(r) if r.error_code != 0 => Err(ClientError::from_code(
                tonic::Code::from(r.error_code),
                r.error_message,
            )),
            Ok(r) => to_rows(r, n),
            Err(s) => Err(s.into()),
        }))
    }

    /// Asks the server to bring `ids` into its fastest tier; returns without waiting for it.
    pub async fn prefetch(&self, table: &str, ids: &[u64]) -> Result<u64, ClientError> {
        let req = pb::PrefetchRequest {
            target: Some(pb::prefetch_request::Target::Rows(pb::PrefetchRows {
                table: table.to_owned(),
                ids: ids.to_vec(),
                ..Default::default()
            })),
        };
        let r = self
            .call(req, |mut c, r| async move { c.prefetch(r).await })
            .await?;
        Ok(r.accepted_rows)
    }

    /// The rows an Engram layer consumes for `sequences` of raw token ids, hashed by the server:
    /// per position, the rows of every (n-gram order, head) in that order, so the result holds
    /// `positions x heads_total` table rows, `[sequence][position][order, head]`; row `i` of
    /// position `p` is `rows.row(p * heads_total + i)`. Dead tokens ([`token_sequence_dead`])
    /// and a tensor-parallel rank's columns: [`NgramsRequest`].
    pub async fn lookup_ngrams(
        &self,
        group: &str,
        layer_id: u32,
        sequences: &[pb::TokenSequence],
    ) -> Result<Rows, ClientError> {
        self.lookup_ngrams_request(NgramsRequest::new(group, layer_id, sequences.to_vec()))
            .await
    }

    /// [`Client::lookup_ngrams`] for a full request ([`NgramsRequest`]: already compressed ids,
    /// a column range): `positions x columns` rows, `[sequence][position][column]`.
    pub async fn lookup_ngrams_request(
        &self,
        req: impl Into<pb::LookupNgramsRequest>,
    ) -> Result<Rows, ClientError> {
        let resp = self
            .call(
                req.into(),
                |mut c, r| async move { c.lookup_ngrams(r).await },
            )
            .await?;
        let n = usize::try_from(resp.row_count)
            .map_err(|_| ClientError::Protocol(format!("row count {}", resp.row_count)))?;
        to_rows(resp, n)
    }

    /// Asks the server to bring the rows `sequences` read in layer `layer_id` of `group` into its
    /// fastest tier; returns the distinct rows accepted, without waiting for them.
    pub async fn prefetch_ngrams(
        &self,
        group: &str,
        layer_id: u32,
        sequences: &[pb::TokenSequence],
    ) -> Result<u64, ClientError> {
        self.prefetch_ngrams_request(NgramsRequest::new(group, layer_id, sequences.to_vec()))
            .await
    }

    /// [`Client::prefetch_ngrams`] for a full request (dead tokens, columns, compressed ids).
    pub async fn prefetch_ngrams_request(
        &self,
        req: impl Into<pb::LookupNgramsRequest>,
    ) -> Result<u64, ClientError> {
        let req = pb::PrefetchRequest {
            target: Some(pb::prefetch_request::Target::Ngrams(req.into())),
        };
        let r = self
            .call(req, |mut c, r| async move { c.prefetch(r).await })
            .await?;
        Ok(r.accepted_rows)
    }

    /// What the server says of itself: its local socket (for shared-memory regions), limits.
    pub async fn server_info(&self) -> Result<pb::ServerInfoResponse, ClientError> {
        self.with_retry(|mut c| async move { c.server_info(pb::ServerInfoRequest {}).await })
            .await
    }

    /// Creates a host shared-memory region of `size` bytes (a sealed memfd, mapped here) and
    /// registers it with the server through its local socket; the server must run on this
    /// host. Use its id and token with [`Client::lookup_into`]; dropping it unregisters it.
    pub async fn shm_region(&self, size: usize) -> Result<SharedMemoryRegion, ClientError> {
        let path = self.local_socket().await?;
        let token = self.config.security.token.clone();
        tokio::task::spawn_blocking(move || SharedMemoryRegion::create(&path, size, token))
            .await
            .map_err(|e| ClientError::Local(format!("register the region: {e}")))?
    }

    /// Opens a sidecar channel (see [`SidecarChannel`]) serving `target` into `region`: `slots` slots
    /// of at most `capacity` rows each (the slot size follows: 8 bytes per row id; for token
    /// sequences, give a capacity in tokens, context included).
    pub async fn open_channel(
        &self,
        target: ChannelTarget,
        region: &SharedMemoryRegion,
        capacity: usize,
        slots: u32,
    ) -> Result<SidecarChannel, ClientError> {
        let path = self.local_socket().await?;
        let payload = match &target {
            ChannelTarget::Table(_) => capacity * 8,
            ChannelTarget::Layer { .. } => capacity * 12 + 4096,
        };
        let (id, token) = (region.id(), region.token().to_owned());
        let auth = self.config.security.token.clone();
        tokio::task::spawn_blocking(move || {
            SidecarChannel::open_for_region(
                &path,
                auth,
                &target,
                (id, &token),
                capacity,
                slots,
                payload,
            )
        })
        .await
        .map_err(|e| ClientError::Local(format!("open the channel: {e}")))?
    }

    async fn local_socket(&self) -> Result<std::path::PathBuf, ClientError> {
        let info = self.server_info().await?;
        if info.local_socket.is_empty() {
            return Err(ClientError::Status {
                code: tonic::Code::FailedPrecondition,
                message: "the server has no local socket (serve --local-socket PATH, or listen \
                          on unix:PATH)"
                    .into(),
            });
        }
        Ok(std::path::PathBuf::from(info.local_socket))
    }

    /// Forgets a registered region.
    pub async fn unregister_region(&self, region_id: u64, token: &str) -> Result<(), ClientError> {
        let req = pb::UnregisterRegionRequest {
            region_id,
            token: token.to_owned(),
        };
        self.call(req, |mut c, r| async move { c.unregister_region(r).await })
            .await?;
        Ok(())
    }

    /// Writes the rows of `ids` into registered region `region_id` at byte `offset`; returns the
    /// bytes written.
    pub async fn lookup_into(
        &self,
        region_id: u64,
        token: &str,
        offset: u64,
        table: &str,
        ids: &[u64],
    ) -> Result<u64, ClientError> {
        let req = pb::LookupIntoRequest {
            region_id,
            token: token.to_owned(),
            offset,
            source: Some(pb::lookup_into_request::Source::Rows(pb::LookupRequest {
                table: table.to_owned(),
                ids: ids.to_vec(),
                ..Default::default()
            })),
        };
        let r = self
            .call(req, |mut c, r| async move { c.lookup_into(r).await })
            .await?;
        Ok(r.bytes_written)
    }

    /// Writes the rows of [`Client::lookup_ngrams`] into registered region `region_id` at byte
    /// `offset`; returns the bytes written.
    pub async fn lookup_ngrams_into(
        &self,
        region_id: u64,
        token: &str,
        offset: u64,
        group: &str,
        layer_id: u32,
        sequences: &[pb::TokenSequence],
    ) -> Result<u64, ClientError> {
        let req = NgramsRequest::new(group, layer_id, sequences.to_vec());
        self.lookup_ngrams_into_request(region_id, token, offset, req)
            .await
    }

    /// [`Client::lookup_ngrams_into`] for a full request (dead tokens, columns, compressed ids):
    /// the rows of [`Client::lookup_ngrams_request`], packed from byte `offset`.
    pub async fn lookup_ngrams_into_request(
        &self,
        region_id: u64,
        token: &str,
        offset: u64,
        req: impl Into<pb::LookupNgramsRequest>,
    ) -> Result<u64, ClientError> {
        let req = pb::LookupIntoRequest {
            region_id,
            token: token.to_owned(),
            offset,
            source: Some(pb::lookup_into_request::Source::Ngrams(req.into())),
        };
        let r = self
            .call(req, |mut c, r| async move { c.lookup_into(r).await })
            .await?;
        Ok(r.bytes_written)
    }

    /// Asks the server to look for new versions of `tables` (every table when empty) now,
    /// instead of at its next look, and to try again versions it refused; returns what happened
    /// to each table. Needs an admin token when the server checks tokens.
    pub async fn reload(&self, tables: &[&str]) -> Result<Vec<pb::TableReload>, ClientError> {
        let req = pb::ReloadRequest {
            tables: tables.iter().map(|t| (*t).to_owned()).collect(),
        };
        Ok(self
            .call(req, |mut c, r| async move { c.reload(r).await })
            .await?
            .tables)
    }

    /// The tables served.
    pub async fn list_tables(&self) -> Result<Vec<pb::TableInfo>, ClientError> {
        Ok(self
            .with_retry(|mut c| async move { c.list_tables(pb::ListTablesRequest {}).await })
            .await?
            .tables)
    }

    /// One table's shape and version.
    pub async fn describe_table(&self, table: &str) -> Result<pb::TableInfo, ClientError> {
        let table = table.to_owned();
        self.with_retry(|mut c| {
            let table = table.clone();
            async move { c.describe_table(pb::DescribeTableRequest { table }).await }
        })
        .await
    }

    /// Server counters; `reset` zeroes them after reading.
    pub async fn stats(&self, reset: bool) -> Result<pb::StatsResponse, ClientError> {
        self.with_retry(|mut c| async move { c.stats(pb::StatsRequest { reset }).await })
            .await
    }

    /// Bytes `offset..offset + length` of a file of a table version or Engram group the server
    /// holds (`ReadTableFile`; `length` 0: to the end, at most 64 MiB a call), with the file's
    /// whole length: how a cluster node copies a shard from a peer. A chunk that does not
    /// continue where the last ended is an error, not a gap.
    pub async fn read_file(
        &self,
        req: pb::ReadTableFileRequest,
    ) -> Result<(Vec<u8>, u64), ClientError> {
        let mut stream = self
            .call(
                req.clone(),
                |mut c, r| async move { c.read_table_file(r).await },
            )
            .await?;
        let mut out = Vec::new();
        let mut file_length = 0;
        while let Some(chunk) = stream.message().await? {
            if chunk.offset != req.offset + out.len() as u64 {
                return Err(ClientError::InvalidArgument(format!(
                    "a chunk of {} at offset {} does not continue the {} bytes read from {}",
                    req.file,
                    chunk.offset,
                    out.len(),
                    req.offset
                )));
            }
            file_length = chunk.file_length;
            out.extend_from_slice(&chunk.data);
        }
        Ok((out, file_length))
    }

    /// Shares a table version with this process (`ShareTable`, on the server's host): the path
    /// of the server's shared-memory file of every row and, with a VRAM tier on `device` (or on
    /// the first device when `None`), its CUDA IPC handles. The server loads the rows it lacks
    /// first, which can take a while for a large table.
    pub async fn share_table(
        &self,
        table: &str,
        device: Option<u32>,
    ) -> Result<pb::ShareTableResponse, ClientError> {
        let req = pb::ShareTableRequest {
            table: table.to_owned(),
            device,
        };
        self.call(req, |mut c, r| async move { c.share_table(r).await })
            .await
    }

    /// The generated stub, for calls this client does not wrap.
    pub fn raw(&self) -> Stub {
        self.inner.clone()
    }
}

/// A token sequence: `tokens`, continuing after `context` (empty for a sequence's start).
pub fn token_sequence(tokens: &[u32], context: &[u32]) -> pb::TokenSequence {
    pb::TokenSequence {
        tokens: tokens.to_vec(),
        context: context.to_vec(),
        ..Default::default()
    }
}

/// A token sequence with dead tokens (DeepSeek-V4.1: image spans): `dead` and `context_dead` are
/// empty (none dead) or hold one byte per token of `tokens` / `context`, non-zero meaning dead
/// (the masks of the hashing crate's `HashInput`); the server refuses other lengths. A dead
/// token's id is never read, and its position returns the rows of an all-pad window, as vLLM
/// reads them.
pub fn token_sequence_dead(
    tokens: &[u32],
    dead: &[u8],
    context: &[u32],
    context_dead: &[u8],
) -> pb::TokenSequence {
    pb::TokenSequence {
        tokens: tokens.to_vec(),
        context: context.to_vec(),
        dead: Bytes::copy_from_slice(dead),
        context_dead: Bytes::copy_from_slice(context_dead),
    }
}

/// A LookupNgrams request (also the target of an n-gram Prefetch or LookupInto): a group's layer
/// and token sequences, optionally already compressed and for a range of hash columns only.
///
/// ```
/// use engram_store_client::{NgramsRequest, token_sequence_dead};
/// // Tensor-parallel rank 2 of 8 of a DeepSeek-V4.1 layer (24 columns): columns 6..9.
/// let req = NgramsRequest::new("v41", 14, vec![token_sequence_dead(&[5, 9, 7], &[0, 1, 0], &[], &[])])
///     .columns(6..9);
/// let msg: engram_store_client::proto::LookupNgramsRequest = req.into();
/// assert_eq!(msg.columns.map(|c| (c.start, c.end)), Some((6, 9)));
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NgramsRequest(pb::LookupNgramsRequest);

impl NgramsRequest {
    /// The rows of layer `layer_id` of `group` for `sequences` of raw token ids, every column.
    pub fn new(group: &str, layer_id: u32, sequences: Vec<pb::TokenSequence>) -> Self {
        Self(pb::LookupNgramsRequest {
            group: group.to_owned(),
            layer_id,
            sequences,
            ..Default::default()
        })
    }

    /// Only the hash columns `columns` (`[start, end)` within the layer's `heads_total`, e.g. a
    /// tensor-parallel rank's: `engram_store_hashing::head_shard`); rows then come back
    /// `[sequence][position][column]`. Default: every column.
    pub fn columns(mut self, columns: std::ops::Range<u32>) -> Self {
        self.0.columns = Some(pb::ColumnRange {
            start: columns.start,
            end: columns.end,
        });
        self
    }

    /// Whether the token ids are already compressed ids [default: false, raw tokenizer ids].
    pub fn compressed(mut self, compressed: bool) -> Self {
        self.0.compressed = compressed;
        self
    }
}

impl From<NgramsRequest> for pb::LookupNgramsRequest {
    fn from(r: NgramsRequest) -> Self {
        r.0
    }
}

/// Checks a response against the request and wraps it.
pub(crate) fn to_rows(r: pb::LookupResponse, n: usize) -> Result<Rows, ClientError> {
    let rb = r.row_bytes as usize;
    if r.rows.len() != n * rb {
        return Err(ClientError::Protocol(format!(
            "asked for {n} rows of {rb} bytes, got {} bytes",
            r.rows.len()
        )));
    }
    let dtype = pb::DType::try_from(r.dtype).unwrap_or(pb::DType::DtypeUnspecified);
    Ok(Rows::new(
        Bytes::clone(&r.rows),
        rb,
        r.row_dim,
        dtype,
        r.version,
    ))
}
