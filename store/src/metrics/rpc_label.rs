//! The `rpc` label of a request: the method name for `engram_store.v1.EmbeddingStore` (`Lookup`),
//! `service/Method` for the health and reflection services, and `unknown` for any other path, so
//! a client sending made-up paths cannot grow the number of series. The known methods are read
//! from the services' file descriptor sets, so a new RPC is labelled without a change here.

use std::collections::HashMap;
use std::sync::Arc;

use prost::Message;

/// The store's own service.
const STORE_SERVICE: &str = "engram_store.v1.EmbeddingStore";

/// Label values by request path.
#[derive(Debug, Clone)]
pub(crate) struct RpcLabels {
    by_path: HashMap<String, Arc<str>>,
    unknown: Arc<str>,
}

impl RpcLabels {
    /// Every method of the store, health and reflection services.
    pub(crate) fn new() -> Self {
        let mut by_path = HashMap::new();
        for set in [
            engram_store_proto::FILE_DESCRIPTOR_SET,
            tonic_health::pb::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
        ] {
            // Compiled into the binary: a set that does not decode labels its methods `unknown`.
            let Ok(set) = prost_types::FileDescriptorSet::decode(set) else {
                continue;
            };
            for file in &set.file {
                let package = file.package();
                for service in &file.service {
                    let full = if package.is_empty() {
                        service.name().to_string()
                    } else {
                        format!("{package}.{}", service.name())
                    };
                    for method in &service.method {
                        let label = if full == STORE_SERVICE {
                            method.name().to_string()
                        } else {
                            format!("{full}/{}", method.name())
                        };
                        by_path.insert(format!("/{full}/{}", method.name()), label.into());
                    }
                }
            }
        }
        Self {
            by_path,
            unknown: Arc::from("unknown"),
        }
    }

    /// The label of a request to `path`.
    pub(crate) fn of(&self, path: &str) -> Arc<str> {
        self.by_path
            .get(path)
            .cloned()
            .unwrap_or_else(|| self.unknown.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_known_methods_and_nothing_else() {
        let l = RpcLabels::new();
        assert_eq!(&*l.of("/engram_store.v1.EmbeddingStore/Lookup"), "Lookup");
        assert_eq!(
            &*l.of("/engram_store.v1.EmbeddingStore/RegisterRegion"),
            "RegisterRegion"
        );
        assert_eq!(
            &*l.of("/grpc.health.v1.Health/Check"),
            "grpc.health.v1.Health/Check"
        );
        assert_eq!(&*l.of("/engram_store.v1.EmbeddingStore/Nope"), "unknown");
        assert_eq!(&*l.of("/x/y"), "unknown");
    }
}
