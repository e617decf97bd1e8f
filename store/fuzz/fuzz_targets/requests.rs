//! Fuzzes the gRPC edge: arbitrary bytes decoded as each request message, converted into the
//! engine's queries (the edge's `TryFrom`), and the queries that convert run against a small
//! real engine (a table and an Engram group written once into a temporary directory). Nothing
//! may panic; every failure must be a typed error.
//! Run: `cargo fuzz run requests` from `store/` (CI: `scripts/fuzz.sh`).
#![no_main]

use std::sync::{Arc, OnceLock};

use engram_store::engine::{Engine, EngineConfig, IntoQuery, NgramQuery, RowSource, RowsQuery};
use engram_store::regions::RegionSpec;
use engram_store::table::{DType, TableSpec, TableWriter};
use engram_store_proto::v1 as pb;
use libfuzzer_sys::fuzz_target;
use prost::Message;

struct Fixture {
    runtime: tokio::runtime::Runtime,
    engine: Arc<Engine>,
    _dir: tempfile::TempDir,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut w = TableWriter::create(dir.path(), TableSpec::new("t", DType::U8, 16, 1000))
            .expect("table");
        w.push_rows(&vec![7u8; 16 * 1000]).expect("rows");
        w.finish().expect("finish");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let mut c = EngineConfig::new(dir.path());
        c.ram_cache_bytes = 1 << 20;
        c.max_batch_ids = 4096;
        let engine = runtime.block_on(async { Arc::new(Engine::open(c).expect("engine")) });
        Fixture {
            runtime,
            engine,
            _dir: dir,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&kind, bytes)) = data.split_first() else {
        return;
    };
    let f = fixture();
    let engine = &f.engine;
    match kind % 5 {
        0 => {
            if let Ok(m) = pb::LookupRequest::decode(bytes)
                && let Ok(q) = RowsQuery::try_from(m)
            {
                let _ = f.runtime.block_on(engine.lookup(&q));
            }
        }
        1 => {
            if let Ok(m) = pb::LookupNgramsRequest::decode(bytes)
                && let Ok(q) = NgramQuery::try_from(m)
            {
                let _ = engine.resolve_ngrams(&q);
            }
        }
        2 => {
            if let Ok(m) = pb::PrefetchRequest::decode(bytes)
                && let Ok(source) = RowSource::try_from(m)
            {
                // Checked only: prefetching would run in the background past this input.
                if let RowSource::Rows(q) = &source {
                    let _ = engine.table(&q.table).map(|t| t.check_ids(&q.ids));
                }
            }
        }
        3 => {
            if let Ok(m) = pb::LookupIntoRequest::decode(bytes)
                && let Ok(q) = IntoQuery::try_from(m)
            {
                // No region is registered: every one must be refused, by id or token.
                let _ = f.runtime.block_on(engine.lookup_into(&q));
            }
        }
        _ => {
            if let Ok(m) = pb::RegisterRegionRequest::decode(bytes) {
                // Converted only: registering would open files named by the input.
                let _ = RegionSpec::try_from(m);
            }
        }
    }
});
