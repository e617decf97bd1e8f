from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ReloadOutcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RELOAD_OUTCOME_UNSPECIFIED: _ClassVar[ReloadOutcome]
    RELOAD_OUTCOME_UNCHANGED: _ClassVar[ReloadOutcome]
    RELOAD_OUTCOME_SWAPPED: _ClassVar[ReloadOutcome]
    RELOAD_OUTCOME_ADDED: _ClassVar[ReloadOutcome]
    RELOAD_OUTCOME_REFUSED: _ClassVar[ReloadOutcome]

class DType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DTYPE_UNSPECIFIED: _ClassVar[DType]
    DTYPE_F32: _ClassVar[DType]
    DTYPE_F16: _ClassVar[DType]
    DTYPE_BF16: _ClassVar[DType]
    DTYPE_I8: _ClassVar[DType]
    DTYPE_U8: _ClassVar[DType]
    DTYPE_F8_E4M3: _ClassVar[DType]

class RowFormatKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ROW_FORMAT_KIND_UNSPECIFIED: _ClassVar[RowFormatKind]
    ROW_FORMAT_KIND_PLAIN: _ClassVar[RowFormatKind]
    ROW_FORMAT_KIND_FP8_BLOCK_SCALED: _ClassVar[RowFormatKind]
    ROW_FORMAT_KIND_FP8_TABLE_SCALED: _ClassVar[RowFormatKind]

class ScaleDType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SCALE_DTYPE_UNSPECIFIED: _ClassVar[ScaleDType]
    SCALE_DTYPE_UE8M0: _ClassVar[ScaleDType]
RELOAD_OUTCOME_UNSPECIFIED: ReloadOutcome
RELOAD_OUTCOME_UNCHANGED: ReloadOutcome
RELOAD_OUTCOME_SWAPPED: ReloadOutcome
RELOAD_OUTCOME_ADDED: ReloadOutcome
RELOAD_OUTCOME_REFUSED: ReloadOutcome
DTYPE_UNSPECIFIED: DType
DTYPE_F32: DType
DTYPE_F16: DType
DTYPE_BF16: DType
DTYPE_I8: DType
DTYPE_U8: DType
DTYPE_F8_E4M3: DType
ROW_FORMAT_KIND_UNSPECIFIED: RowFormatKind
ROW_FORMAT_KIND_PLAIN: RowFormatKind
ROW_FORMAT_KIND_FP8_BLOCK_SCALED: RowFormatKind
ROW_FORMAT_KIND_FP8_TABLE_SCALED: RowFormatKind
SCALE_DTYPE_UNSPECIFIED: ScaleDType
SCALE_DTYPE_UE8M0: ScaleDType

class ShareTableRequest(_message.Message):
    __slots__ = ("table", "device")
    TABLE_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    table: str
    device: int
    def __init__(self, table: _Optional[str] = ..., device: _Optional[int] = ...) -> None: ...

class ShareTableResponse(_message.Message):
    __slots__ = ("table", "version", "rows", "row_bytes", "host_path", "host_bytes", "vram")
    TABLE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    ROW_BYTES_FIELD_NUMBER: _ClassVar[int]
    HOST_PATH_FIELD_NUMBER: _ClassVar[int]
    HOST_BYTES_FIELD_NUMBER: _ClassVar[int]
    VRAM_FIELD_NUMBER: _ClassVar[int]
    table: str
    version: int
    rows: int
    row_bytes: int
    host_path: str
    host_bytes: int
    vram: SharedVramTier
    def __init__(self, table: _Optional[str] = ..., version: _Optional[int] = ..., rows: _Optional[int] = ..., row_bytes: _Optional[int] = ..., host_path: _Optional[str] = ..., host_bytes: _Optional[int] = ..., vram: _Optional[_Union[SharedVramTier, _Mapping]] = ...) -> None: ...

class SharedVramTier(_message.Message):
    __slots__ = ("device", "capacity", "buckets", "arena", "index_keys", "index_slots", "tags", "control", "grace_ms", "retire_ms", "fd_socket", "fd_token", "fd_bytes")
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_FIELD_NUMBER: _ClassVar[int]
    BUCKETS_FIELD_NUMBER: _ClassVar[int]
    ARENA_FIELD_NUMBER: _ClassVar[int]
    INDEX_KEYS_FIELD_NUMBER: _ClassVar[int]
    INDEX_SLOTS_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    CONTROL_FIELD_NUMBER: _ClassVar[int]
    GRACE_MS_FIELD_NUMBER: _ClassVar[int]
    RETIRE_MS_FIELD_NUMBER: _ClassVar[int]
    FD_SOCKET_FIELD_NUMBER: _ClassVar[int]
    FD_TOKEN_FIELD_NUMBER: _ClassVar[int]
    FD_BYTES_FIELD_NUMBER: _ClassVar[int]
    device: int
    capacity: int
    buckets: int
    arena: bytes
    index_keys: bytes
    index_slots: bytes
    tags: bytes
    control: bytes
    grace_ms: int
    retire_ms: int
    fd_socket: str
    fd_token: bytes
    fd_bytes: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, device: _Optional[int] = ..., capacity: _Optional[int] = ..., buckets: _Optional[int] = ..., arena: _Optional[bytes] = ..., index_keys: _Optional[bytes] = ..., index_slots: _Optional[bytes] = ..., tags: _Optional[bytes] = ..., control: _Optional[bytes] = ..., grace_ms: _Optional[int] = ..., retire_ms: _Optional[int] = ..., fd_socket: _Optional[str] = ..., fd_token: _Optional[bytes] = ..., fd_bytes: _Optional[_Iterable[int]] = ...) -> None: ...

class ReadTableFileRequest(_message.Message):
    __slots__ = ("table", "version", "file", "offset", "length", "group")
    TABLE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    FILE_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    LENGTH_FIELD_NUMBER: _ClassVar[int]
    GROUP_FIELD_NUMBER: _ClassVar[int]
    table: str
    version: int
    file: str
    offset: int
    length: int
    group: str
    def __init__(self, table: _Optional[str] = ..., version: _Optional[int] = ..., file: _Optional[str] = ..., offset: _Optional[int] = ..., length: _Optional[int] = ..., group: _Optional[str] = ...) -> None: ...

class FileChunk(_message.Message):
    __slots__ = ("offset", "data", "file_length")
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    FILE_LENGTH_FIELD_NUMBER: _ClassVar[int]
    offset: int
    data: bytes
    file_length: int
    def __init__(self, offset: _Optional[int] = ..., data: _Optional[bytes] = ..., file_length: _Optional[int] = ...) -> None: ...

class ReloadRequest(_message.Message):
    __slots__ = ("tables",)
    TABLES_FIELD_NUMBER: _ClassVar[int]
    tables: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, tables: _Optional[_Iterable[str]] = ...) -> None: ...

class ReloadResponse(_message.Message):
    __slots__ = ("tables",)
    TABLES_FIELD_NUMBER: _ClassVar[int]
    tables: _containers.RepeatedCompositeFieldContainer[TableReload]
    def __init__(self, tables: _Optional[_Iterable[_Union[TableReload, _Mapping]]] = ...) -> None: ...

class TableReload(_message.Message):
    __slots__ = ("table", "previous_version", "version", "outcome", "message")
    TABLE_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_VERSION_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    table: str
    previous_version: int
    version: int
    outcome: ReloadOutcome
    message: str
    def __init__(self, table: _Optional[str] = ..., previous_version: _Optional[int] = ..., version: _Optional[int] = ..., outcome: _Optional[_Union[ReloadOutcome, str]] = ..., message: _Optional[str] = ...) -> None: ...

class ServerInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ServerInfoResponse(_message.Message):
    __slots__ = ("local_socket", "max_batch_rows", "max_regions_per_connection", "version")
    LOCAL_SOCKET_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_ROWS_FIELD_NUMBER: _ClassVar[int]
    MAX_REGIONS_PER_CONNECTION_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    local_socket: str
    max_batch_rows: int
    max_regions_per_connection: int
    version: str
    def __init__(self, local_socket: _Optional[str] = ..., max_batch_rows: _Optional[int] = ..., max_regions_per_connection: _Optional[int] = ..., version: _Optional[str] = ...) -> None: ...

class SharedMemoryRegion(_message.Message):
    __slots__ = ("path", "size")
    PATH_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    path: str
    size: int
    def __init__(self, path: _Optional[str] = ..., size: _Optional[int] = ...) -> None: ...

class CudaIpcRegion(_message.Message):
    __slots__ = ("ipc_handle", "offset", "size", "device")
    IPC_HANDLE_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    ipc_handle: bytes
    offset: int
    size: int
    device: int
    def __init__(self, ipc_handle: _Optional[bytes] = ..., offset: _Optional[int] = ..., size: _Optional[int] = ..., device: _Optional[int] = ...) -> None: ...

class RegisterRegionRequest(_message.Message):
    __slots__ = ("shm", "cuda_ipc")
    SHM_FIELD_NUMBER: _ClassVar[int]
    CUDA_IPC_FIELD_NUMBER: _ClassVar[int]
    shm: SharedMemoryRegion
    cuda_ipc: CudaIpcRegion
    def __init__(self, shm: _Optional[_Union[SharedMemoryRegion, _Mapping]] = ..., cuda_ipc: _Optional[_Union[CudaIpcRegion, _Mapping]] = ...) -> None: ...

class RegisterRegionResponse(_message.Message):
    __slots__ = ("region_id", "token", "size")
    REGION_ID_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    region_id: int
    token: str
    size: int
    def __init__(self, region_id: _Optional[int] = ..., token: _Optional[str] = ..., size: _Optional[int] = ...) -> None: ...

class UnregisterRegionRequest(_message.Message):
    __slots__ = ("region_id", "token")
    REGION_ID_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    region_id: int
    token: str
    def __init__(self, region_id: _Optional[int] = ..., token: _Optional[str] = ...) -> None: ...

class UnregisterRegionResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class LookupIntoRequest(_message.Message):
    __slots__ = ("region_id", "token", "offset", "rows", "ngrams")
    REGION_ID_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    NGRAMS_FIELD_NUMBER: _ClassVar[int]
    region_id: int
    token: str
    offset: int
    rows: LookupRequest
    ngrams: LookupNgramsRequest
    def __init__(self, region_id: _Optional[int] = ..., token: _Optional[str] = ..., offset: _Optional[int] = ..., rows: _Optional[_Union[LookupRequest, _Mapping]] = ..., ngrams: _Optional[_Union[LookupNgramsRequest, _Mapping]] = ...) -> None: ...

class LookupIntoResponse(_message.Message):
    __slots__ = ("row_count", "row_bytes", "bytes_written", "gpu_hits", "version")
    ROW_COUNT_FIELD_NUMBER: _ClassVar[int]
    ROW_BYTES_FIELD_NUMBER: _ClassVar[int]
    BYTES_WRITTEN_FIELD_NUMBER: _ClassVar[int]
    GPU_HITS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    row_count: int
    row_bytes: int
    bytes_written: int
    gpu_hits: int
    version: int
    def __init__(self, row_count: _Optional[int] = ..., row_bytes: _Optional[int] = ..., bytes_written: _Optional[int] = ..., gpu_hits: _Optional[int] = ..., version: _Optional[int] = ...) -> None: ...

class LookupRequest(_message.Message):
    __slots__ = ("table", "ids", "ids_le", "version")
    TABLE_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    IDS_LE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    table: str
    ids: _containers.RepeatedScalarFieldContainer[int]
    ids_le: bytes
    version: int
    def __init__(self, table: _Optional[str] = ..., ids: _Optional[_Iterable[int]] = ..., ids_le: _Optional[bytes] = ..., version: _Optional[int] = ...) -> None: ...

class LookupResponse(_message.Message):
    __slots__ = ("rows", "row_bytes", "row_count", "dtype", "row_dim", "version", "error_code", "error_message", "row_format")
    ROWS_FIELD_NUMBER: _ClassVar[int]
    ROW_BYTES_FIELD_NUMBER: _ClassVar[int]
    ROW_COUNT_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    ROW_DIM_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ERROR_CODE_FIELD_NUMBER: _ClassVar[int]
    ERROR_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    ROW_FORMAT_FIELD_NUMBER: _ClassVar[int]
    rows: bytes
    row_bytes: int
    row_count: int
    dtype: DType
    row_dim: int
    version: int
    error_code: int
    error_message: str
    row_format: RowFormat
    def __init__(self, rows: _Optional[bytes] = ..., row_bytes: _Optional[int] = ..., row_count: _Optional[int] = ..., dtype: _Optional[_Union[DType, str]] = ..., row_dim: _Optional[int] = ..., version: _Optional[int] = ..., error_code: _Optional[int] = ..., error_message: _Optional[str] = ..., row_format: _Optional[_Union[RowFormat, _Mapping]] = ...) -> None: ...

class RowFormat(_message.Message):
    __slots__ = ("kind", "scale_block", "scale_dtype", "table_scale")
    KIND_FIELD_NUMBER: _ClassVar[int]
    SCALE_BLOCK_FIELD_NUMBER: _ClassVar[int]
    SCALE_DTYPE_FIELD_NUMBER: _ClassVar[int]
    TABLE_SCALE_FIELD_NUMBER: _ClassVar[int]
    kind: RowFormatKind
    scale_block: int
    scale_dtype: ScaleDType
    table_scale: float
    def __init__(self, kind: _Optional[_Union[RowFormatKind, str]] = ..., scale_block: _Optional[int] = ..., scale_dtype: _Optional[_Union[ScaleDType, str]] = ..., table_scale: _Optional[float] = ...) -> None: ...

class TokenSequence(_message.Message):
    __slots__ = ("tokens", "context", "dead", "context_dead")
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    DEAD_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_DEAD_FIELD_NUMBER: _ClassVar[int]
    tokens: _containers.RepeatedScalarFieldContainer[int]
    context: _containers.RepeatedScalarFieldContainer[int]
    dead: bytes
    context_dead: bytes
    def __init__(self, tokens: _Optional[_Iterable[int]] = ..., context: _Optional[_Iterable[int]] = ..., dead: _Optional[bytes] = ..., context_dead: _Optional[bytes] = ...) -> None: ...

class ColumnRange(_message.Message):
    __slots__ = ("start", "end")
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    start: int
    end: int
    def __init__(self, start: _Optional[int] = ..., end: _Optional[int] = ...) -> None: ...

class LookupNgramsRequest(_message.Message):
    __slots__ = ("group", "layer_id", "sequences", "compressed", "columns", "version")
    GROUP_FIELD_NUMBER: _ClassVar[int]
    LAYER_ID_FIELD_NUMBER: _ClassVar[int]
    SEQUENCES_FIELD_NUMBER: _ClassVar[int]
    COMPRESSED_FIELD_NUMBER: _ClassVar[int]
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    group: str
    layer_id: int
    sequences: _containers.RepeatedCompositeFieldContainer[TokenSequence]
    compressed: bool
    columns: ColumnRange
    version: int
    def __init__(self, group: _Optional[str] = ..., layer_id: _Optional[int] = ..., sequences: _Optional[_Iterable[_Union[TokenSequence, _Mapping]]] = ..., compressed: _Optional[bool] = ..., columns: _Optional[_Union[ColumnRange, _Mapping]] = ..., version: _Optional[int] = ...) -> None: ...

class PrefetchRequest(_message.Message):
    __slots__ = ("rows", "ngrams")
    ROWS_FIELD_NUMBER: _ClassVar[int]
    NGRAMS_FIELD_NUMBER: _ClassVar[int]
    rows: PrefetchRows
    ngrams: LookupNgramsRequest
    def __init__(self, rows: _Optional[_Union[PrefetchRows, _Mapping]] = ..., ngrams: _Optional[_Union[LookupNgramsRequest, _Mapping]] = ...) -> None: ...

class PrefetchRows(_message.Message):
    __slots__ = ("table", "ids", "ids_le")
    TABLE_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    IDS_LE_FIELD_NUMBER: _ClassVar[int]
    table: str
    ids: _containers.RepeatedScalarFieldContainer[int]
    ids_le: bytes
    def __init__(self, table: _Optional[str] = ..., ids: _Optional[_Iterable[int]] = ..., ids_le: _Optional[bytes] = ...) -> None: ...

class PrefetchResponse(_message.Message):
    __slots__ = ("accepted_rows",)
    ACCEPTED_ROWS_FIELD_NUMBER: _ClassVar[int]
    accepted_rows: int
    def __init__(self, accepted_rows: _Optional[int] = ...) -> None: ...

class ListTablesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListTablesResponse(_message.Message):
    __slots__ = ("tables",)
    TABLES_FIELD_NUMBER: _ClassVar[int]
    tables: _containers.RepeatedCompositeFieldContainer[TableInfo]
    def __init__(self, tables: _Optional[_Iterable[_Union[TableInfo, _Mapping]]] = ...) -> None: ...

class DescribeTableRequest(_message.Message):
    __slots__ = ("table",)
    TABLE_FIELD_NUMBER: _ClassVar[int]
    table: str
    def __init__(self, table: _Optional[str] = ...) -> None: ...

class TableInfo(_message.Message):
    __slots__ = ("name", "rows", "row_dim", "dtype", "row_bytes", "version", "data_bytes", "block_size", "checksum", "row_format")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    ROW_DIM_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    ROW_BYTES_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    DATA_BYTES_FIELD_NUMBER: _ClassVar[int]
    BLOCK_SIZE_FIELD_NUMBER: _ClassVar[int]
    CHECKSUM_FIELD_NUMBER: _ClassVar[int]
    ROW_FORMAT_FIELD_NUMBER: _ClassVar[int]
    name: str
    rows: int
    row_dim: int
    dtype: DType
    row_bytes: int
    version: int
    data_bytes: int
    block_size: int
    checksum: str
    row_format: RowFormat
    def __init__(self, name: _Optional[str] = ..., rows: _Optional[int] = ..., row_dim: _Optional[int] = ..., dtype: _Optional[_Union[DType, str]] = ..., row_bytes: _Optional[int] = ..., version: _Optional[int] = ..., data_bytes: _Optional[int] = ..., block_size: _Optional[int] = ..., checksum: _Optional[str] = ..., row_format: _Optional[_Union[RowFormat, _Mapping]] = ...) -> None: ...

class StatsRequest(_message.Message):
    __slots__ = ("reset",)
    RESET_FIELD_NUMBER: _ClassVar[int]
    reset: bool
    def __init__(self, reset: _Optional[bool] = ...) -> None: ...

class LatencySummary(_message.Message):
    __slots__ = ("count", "p50_us", "p90_us", "p99_us", "p999_us", "max_us")
    COUNT_FIELD_NUMBER: _ClassVar[int]
    P50_US_FIELD_NUMBER: _ClassVar[int]
    P90_US_FIELD_NUMBER: _ClassVar[int]
    P99_US_FIELD_NUMBER: _ClassVar[int]
    P999_US_FIELD_NUMBER: _ClassVar[int]
    MAX_US_FIELD_NUMBER: _ClassVar[int]
    count: int
    p50_us: float
    p90_us: float
    p99_us: float
    p999_us: float
    max_us: float
    def __init__(self, count: _Optional[int] = ..., p50_us: _Optional[float] = ..., p90_us: _Optional[float] = ..., p99_us: _Optional[float] = ..., p999_us: _Optional[float] = ..., max_us: _Optional[float] = ...) -> None: ...

class TierStats(_message.Message):
    __slots__ = ("tier", "hits", "misses", "bytes", "resident_bytes", "capacity_bytes", "resident_rows", "hit_rate", "latency", "prefetch_rows", "prefetch_hits", "policy", "checksum_errors", "reads", "device", "rows_entering")
    TIER_FIELD_NUMBER: _ClassVar[int]
    HITS_FIELD_NUMBER: _ClassVar[int]
    MISSES_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    RESIDENT_BYTES_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_BYTES_FIELD_NUMBER: _ClassVar[int]
    RESIDENT_ROWS_FIELD_NUMBER: _ClassVar[int]
    HIT_RATE_FIELD_NUMBER: _ClassVar[int]
    LATENCY_FIELD_NUMBER: _ClassVar[int]
    PREFETCH_ROWS_FIELD_NUMBER: _ClassVar[int]
    PREFETCH_HITS_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    CHECKSUM_ERRORS_FIELD_NUMBER: _ClassVar[int]
    READS_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    ROWS_ENTERING_FIELD_NUMBER: _ClassVar[int]
    tier: str
    hits: int
    misses: int
    bytes: int
    resident_bytes: int
    capacity_bytes: int
    resident_rows: int
    hit_rate: float
    latency: LatencySummary
    prefetch_rows: int
    prefetch_hits: int
    policy: str
    checksum_errors: int
    reads: int
    device: int
    rows_entering: int
    def __init__(self, tier: _Optional[str] = ..., hits: _Optional[int] = ..., misses: _Optional[int] = ..., bytes: _Optional[int] = ..., resident_bytes: _Optional[int] = ..., capacity_bytes: _Optional[int] = ..., resident_rows: _Optional[int] = ..., hit_rate: _Optional[float] = ..., latency: _Optional[_Union[LatencySummary, _Mapping]] = ..., prefetch_rows: _Optional[int] = ..., prefetch_hits: _Optional[int] = ..., policy: _Optional[str] = ..., checksum_errors: _Optional[int] = ..., reads: _Optional[int] = ..., device: _Optional[int] = ..., rows_entering: _Optional[int] = ...) -> None: ...

class StatsResponse(_message.Message):
    __slots__ = ("tiers", "request_latency", "requests", "rows_served", "bytes_served", "errors", "io_engine", "uptime_s", "process_rss_bytes", "fixed_overhead_bytes", "regions", "prefetch_queued_rows", "prefetch_dropped_rows", "prefetch_dropped_requests", "answer_bytes_in_flight", "answer_budget_bytes", "unavailable", "connections", "channels", "rows_in_flight", "max_rows_in_flight", "refused_requests")
    TIERS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_LATENCY_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    ROWS_SERVED_FIELD_NUMBER: _ClassVar[int]
    BYTES_SERVED_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    IO_ENGINE_FIELD_NUMBER: _ClassVar[int]
    UPTIME_S_FIELD_NUMBER: _ClassVar[int]
    PROCESS_RSS_BYTES_FIELD_NUMBER: _ClassVar[int]
    FIXED_OVERHEAD_BYTES_FIELD_NUMBER: _ClassVar[int]
    REGIONS_FIELD_NUMBER: _ClassVar[int]
    PREFETCH_QUEUED_ROWS_FIELD_NUMBER: _ClassVar[int]
    PREFETCH_DROPPED_ROWS_FIELD_NUMBER: _ClassVar[int]
    PREFETCH_DROPPED_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    ANSWER_BYTES_IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    ANSWER_BUDGET_BYTES_FIELD_NUMBER: _ClassVar[int]
    UNAVAILABLE_FIELD_NUMBER: _ClassVar[int]
    CONNECTIONS_FIELD_NUMBER: _ClassVar[int]
    CHANNELS_FIELD_NUMBER: _ClassVar[int]
    ROWS_IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    MAX_ROWS_IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    REFUSED_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    tiers: _containers.RepeatedCompositeFieldContainer[TierStats]
    request_latency: LatencySummary
    requests: int
    rows_served: int
    bytes_served: int
    errors: int
    io_engine: str
    uptime_s: int
    process_rss_bytes: int
    fixed_overhead_bytes: int
    regions: int
    prefetch_queued_rows: int
    prefetch_dropped_rows: int
    prefetch_dropped_requests: int
    answer_bytes_in_flight: int
    answer_budget_bytes: int
    unavailable: _containers.RepeatedCompositeFieldContainer[Unavailable]
    connections: int
    channels: int
    rows_in_flight: int
    max_rows_in_flight: int
    refused_requests: int
    def __init__(self, tiers: _Optional[_Iterable[_Union[TierStats, _Mapping]]] = ..., request_latency: _Optional[_Union[LatencySummary, _Mapping]] = ..., requests: _Optional[int] = ..., rows_served: _Optional[int] = ..., bytes_served: _Optional[int] = ..., errors: _Optional[int] = ..., io_engine: _Optional[str] = ..., uptime_s: _Optional[int] = ..., process_rss_bytes: _Optional[int] = ..., fixed_overhead_bytes: _Optional[int] = ..., regions: _Optional[int] = ..., prefetch_queued_rows: _Optional[int] = ..., prefetch_dropped_rows: _Optional[int] = ..., prefetch_dropped_requests: _Optional[int] = ..., answer_bytes_in_flight: _Optional[int] = ..., answer_budget_bytes: _Optional[int] = ..., unavailable: _Optional[_Iterable[_Union[Unavailable, _Mapping]]] = ..., connections: _Optional[int] = ..., channels: _Optional[int] = ..., rows_in_flight: _Optional[int] = ..., max_rows_in_flight: _Optional[int] = ..., refused_requests: _Optional[int] = ...) -> None: ...

class Unavailable(_message.Message):
    __slots__ = ("name", "reason")
    NAME_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    name: str
    reason: str
    def __init__(self, name: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...
