//! Redis as a peer, used the way a user would store a table in it: each row a binary string
//! value under its decimal row id as key (`SET 12345 <row bytes>`, no prefix, so keys are as
//! short as they get for tables below 10^8 rows), loaded with MSETs of `load_chunk` rows; a batch
//! read as one pipeline of MGETs of at most `mget_chunk` keys, on one multiplexed connection per
//! client task (so Redis sees `concurrency` clients, like engram-store); server memory from
//! `INFO memory`.

use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use bytes::Bytes;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Value};

use super::peer::Connection;
use super::verify::RowCheck;

/// Redis's memory as `INFO memory` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RedisMemory {
    /// `used_memory`: bytes its allocator holds for data and structures.
    pub used: u64,
    /// `used_memory_rss`: resident set size of the process.
    pub rss: u64,
}

/// A Redis server to compare with.
#[derive(Debug, Clone)]
pub struct RedisPeer {
    client: redis::Client,
    addr: String,
    row_bytes: usize,
    mget_chunk: usize,
}

impl RedisPeer {
    /// A peer at `addr` (`host:port`) holding rows of `row_bytes` bytes.
    pub fn new(addr: &str, row_bytes: usize, mget_chunk: usize) -> Result<Self> {
        let client = redis::Client::open(format!("redis://{addr}/"))
            .with_context(|| format!("Redis address {addr:?}"))?;
        Ok(Self {
            client,
            addr: addr.to_owned(),
            row_bytes,
            mget_chunk: mget_chunk.max(1),
        })
    }

    async fn raw(&self) -> Result<MultiplexedConnection> {
        // The default 500 ms response timeout is shorter than a 65536-row MGET under load.
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(5)))
            .set_response_timeout(Some(Duration::from_secs(120)));
        self.client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .with_context(|| format!("connect to Redis at {}", self.addr))
    }

    /// A connection for one client task.
    pub async fn connect(&self) -> Result<RedisConnection> {
        Ok(RedisConnection {
            con: self.raw().await?,
            row_bytes: self.row_bytes,
            mget_chunk: self.mget_chunk,
        })
    }

    /// The server's version string.
    pub async fn version(&self) -> Result<String> {
        let info: String = redis::cmd("INFO")
            .arg("server")
            .query_async(&mut self.raw().await?)
            .await
            .context("INFO server")?;
        Ok(info_field(&info, "redis_version")
            .unwrap_or("unknown")
            .to_owned())
    }

    /// Fails unless the database is empty: the benchmark never overwrites someone's data.
    pub async fn ensure_empty(&self) -> Result<()> {
        let keys: u64 = redis::cmd("DBSIZE")
            .query_async(&mut self.raw().await?)
            .await
            .context("DBSIZE")?;
        ensure!(
            keys == 0,
            "Redis at {} already holds {keys} keys; give the benchmark an empty instance of its \
             own (benches/run-peers.sh starts one)",
            self.addr
        );
        Ok(())
    }

    /// Memory as reported by `INFO memory`.
    pub async fn memory(&self) -> Result<RedisMemory> {
        let info: String = redis::cmd("INFO")
            .arg("memory")
            .query_async(&mut self.raw().await?)
            .await
            .context("INFO memory")?;
        let field = |name: &str| -> Result<u64> {
            info_field(&info, name)
                .and_then(|v| v.parse().ok())
                .with_context(|| format!("INFO memory has no number {name}"))
        };
        Ok(RedisMemory {
            used: field("used_memory")?,
            rss: field("used_memory_rss")?,
        })
    }

    /// CPU seconds the server has used (`used_cpu_user + used_cpu_sys` of `INFO cpu`).
    pub async fn cpu_seconds(&self) -> Result<f64> {
        let info: String = redis::cmd("INFO")
            .arg("cpu")
            .query_async(&mut self.raw().await?)
            .await
            .context("INFO cpu")?;
        let field = |name: &str| -> Result<f64> {
            info_field(&info, name)
                .and_then(|v| v.parse().ok())
                .with_context(|| format!("INFO cpu has no number {name}"))
        };
        Ok(field("used_cpu_user")? + field("used_cpu_sys")?)
    }

    /// Stores rows `0..rows` of the synthetic table `check` describes, `chunk` rows per MSET,
    /// over `concurrency` connections at once.
    pub async fn load(
        &self,
        rows: u64,
        check: RowCheck,
        chunk: usize,
        concurrency: usize,
    ) -> Result<()> {
        let next = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let chunk = chunk.max(1) as u64;
        let mut tasks = Vec::new();
        for _ in 0..concurrency.max(1) {
            let mut con = self.raw().await?;
            let next = next.clone();
            tasks.push(tokio::spawn(async move {
                let rb = check.row_bytes();
                let mut row = vec![0u8; rb];
                loop {
                    let first = next.fetch_add(chunk, std::sync::atomic::Ordering::Relaxed);
                    if first >= rows {
                        return anyhow::Ok(());
                    }
                    let mut mset = redis::cmd("MSET");
                    for id in first..(first + chunk).min(rows) {
                        check.fill(id, &mut row);
                        mset.arg(id).arg(&row[..]);
                    }
                    mset.query_async::<()>(&mut con)
                        .await
                        .with_context(|| format!("MSET rows {first}..{}", first + chunk))?;
                }
            }));
        }
        for t in tasks {
            t.await.context("loading task panicked")??;
        }
        let keys: u64 = redis::cmd("DBSIZE")
            .query_async(&mut self.raw().await?)
            .await
            .context("DBSIZE")?;
        ensure!(
            keys == rows,
            "Redis holds {keys} keys after loading {rows} rows"
        );
        Ok(())
    }
}

/// The value of `name` in the text of an `INFO` reply (`name:value` lines).
pub fn info_field<'a>(info: &'a str, name: &str) -> Option<&'a str> {
    info.lines().find_map(|line| {
        let (k, v) = line.split_once(':')?;
        (k == name).then(|| v.trim())
    })
}

/// One client task's connection to Redis.
#[derive(Debug)]
pub struct RedisConnection {
    con: MultiplexedConnection,
    row_bytes: usize,
    mget_chunk: usize,
}

impl Connection for RedisConnection {
    async fn fetch(&mut self, ids: &[u64]) -> Result<Bytes> {
        let mut pipe = redis::pipe();
        for chunk in ids.chunks(self.mget_chunk) {
            let mget = pipe.cmd("MGET");
            for &id in chunk {
                mget.arg(id);
            }
        }
        let replies: Vec<Value> = pipe
            .query_async(&mut self.con)
            .await
            .with_context(|| format!("MGET {} keys", ids.len()))?;
        let mut out = Vec::with_capacity(ids.len() * self.row_bytes);
        let mut n = 0;
        for reply in replies {
            let Value::Array(values) = reply else {
                bail!("MGET answered {reply:?}, not an array");
            };
            for v in values {
                match v {
                    Value::BulkString(b) if b.len() == self.row_bytes => {
                        out.extend_from_slice(&b);
                    }
                    Value::BulkString(b) => bail!(
                        "key {} holds {} bytes, not {}",
                        ids.get(n).copied().unwrap_or(u64::MAX),
                        b.len(),
                        self.row_bytes
                    ),
                    Value::Nil => {
                        bail!("key {} is missing", ids.get(n).copied().unwrap_or(u64::MAX))
                    }
                    other => bail!("MGET answered {other:?} for a key"),
                }
                n += 1;
            }
        }
        ensure!(n == ids.len(), "MGET of {} keys gave {n} values", ids.len());
        Ok(Bytes::from(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_info_fields() {
        let info = "# Memory\r\nused_memory:1048576\r\nused_memory_human:1.00M\r\n\
                    used_memory_rss:4194304\r\nused_memory_rss_human:4.00M\r\n";
        assert_eq!(info_field(info, "used_memory"), Some("1048576"));
        assert_eq!(info_field(info, "used_memory_rss"), Some("4194304"));
        assert_eq!(info_field(info, "used_memory_peak"), None);
        assert_eq!(
            info_field("redis_version:7.0.15\n", "redis_version"),
            Some("7.0.15")
        );
    }
}
