//! Which role each RPC needs. Health (`grpc.health.v1`) and reflection are open to anyone; the
//! store's lookups, table listing and Stats need a read token; everything else of the store
//! (regions, LookupInto, Prefetch, and any RPC added later, e.g. OpenChannel or Reload) needs an
//! admin token: a new RPC is admin-only until it is listed here as a read one.

use super::tokens::Role;

/// What a request to a path needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Needs {
    /// Nothing: health checks and reflection.
    Open,
    /// A token of at least this role.
    Role(Role),
}

/// Services anyone may call.
const OPEN_SERVICES: &[&str] = &[
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1.ServerReflection/",
    "/grpc.reflection.v1alpha.ServerReflection/",
];

/// The store's RPCs a read token may call.
const READ_RPCS: &[&str] = &[
    "/engram_store.v1.EmbeddingStore/Lookup",
    "/engram_store.v1.EmbeddingStore/LookupStream",
    "/engram_store.v1.EmbeddingStore/LookupNgrams",
    "/engram_store.v1.EmbeddingStore/ListTables",
    "/engram_store.v1.EmbeddingStore/DescribeTable",
    "/engram_store.v1.EmbeddingStore/Stats",
];

/// What a request to `path` needs.
pub(crate) fn needs(path: &str) -> Needs {
    if OPEN_SERVICES.iter().any(|s| path.starts_with(s)) {
        Needs::Open
    } else if READ_RPCS.contains(&path) {
        Needs::Role(Role::Read)
    } else {
        Needs::Role(Role::Admin)
    }
}

/// The RPC's name in a refusal: the last part of the path.
pub(crate) fn rpc_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rpc_of_the_proto_has_the_role_the_issue_gives() {
        let store = "/engram_store.v1.EmbeddingStore/";
        for read in [
            "Lookup",
            "LookupStream",
            "LookupNgrams",
            "ListTables",
            "DescribeTable",
            "Stats",
        ] {
            assert_eq!(needs(&format!("{store}{read}")), Needs::Role(Role::Read));
        }
        for admin in [
            "RegisterRegion",
            "UnregisterRegion",
            "LookupInto",
            "Prefetch",
            "OpenChannel",
            "Reload",
            "ReadTableFile",
            "ShareTable",
        ] {
            assert_eq!(needs(&format!("{store}{admin}")), Needs::Role(Role::Admin));
        }
        assert_eq!(needs("/grpc.health.v1.Health/Check"), Needs::Open);
        assert_eq!(
            needs("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"),
            Needs::Open
        );
        // Prefix tricks do not open anything.
        assert_eq!(
            needs("/engram_store.v1.EmbeddingStore/LookupInto2"),
            Needs::Role(Role::Admin)
        );
        assert_eq!(
            needs("/grpc.health.v1.Healthy/Check"),
            Needs::Role(Role::Admin)
        );
        assert_eq!(rpc_name("/a.B/Prefetch"), "Prefetch");
    }
}
