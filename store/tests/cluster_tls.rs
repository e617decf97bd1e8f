//! A cluster whose nodes require mutual TLS and bearer tokens, with a real etcd on loopback:
//! the nodes reach each other with their own client certificate and an admin token
//! (`--peer-ca`, `--peer-cert`/`--peer-key`, `--peer-token-file`), so a node that joins empty
//! copies its shards from its peer over TLS; the cluster client, given the CA, a client
//! certificate and a read token, reads every row right; one without a token is refused. Without
//! an etcd binary it prints `SKIP:` and passes.

mod cluster_common;
mod common;

use std::sync::Arc;
use std::time::Duration;

use cluster_common::{
    ROWS, check_rows, etcd_or_skip, place, start_node_with, synth_f32_table_with, wait_ready,
};
use common::pki::{pki, tls_files};
use engram_store::access::TokenSet;
use engram_store::edge::EdgeOptions;
use engram_store::table::HELD_ROWS_FILE;
use engram_store_client::{ClusterClient, ClusterSettings, Security};
use rand::{Rng, SeedableRng};

const READ: &str = "r-0c41d7e2aa";
const ADMIN: &str = "a-9e55f1b033";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cluster_behind_mutual_tls_and_tokens_copies_and_serves_only_its_own() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some((etcd, endpoints)) = etcd_or_skip(dir.path()) else {
        return;
    };
    let pki = pki("cluster-ca");
    let edge = EdgeOptions {
        tls: Some(tls_files(dir.path(), &pki, Some(&pki.ca))),
        tokens: Some(Arc::new(
            TokenSet::parse(&format!("read:{READ}\nadmin:{ADMIN}\n")).expect("tokens"),
        )),
        ..Default::default()
    };
    let security = |token: Option<&str>| Security {
        tls_ca_pem: Some(pki.ca.clone().into_bytes()),
        tls_identity_pem: Some((
            pki.client_cert.clone().into_bytes(),
            pki.client_key.clone().into_bytes(),
        )),
        // The nodes advertise 127.0.0.1; their certificate names localhost too.
        tls_domain: Some("localhost".into()),
        token: token.map(str::to_owned),
    };
    let whole = dir.path().join("holder");
    synth_f32_table_with(
        &whole,
        "t",
        ROWS,
        cluster_common::DIM,
        cluster_common::SEED,
        &Default::default(),
    );
    let empty = dir.path().join("empty");
    std::fs::create_dir_all(&empty).expect("mkdir");
    let mut nodes = Vec::new();
    for (id, data) in [("n0", &whole), ("n1", &empty)] {
        nodes.push(
            start_node_with(
                data,
                &etcd.client_url,
                id,
                false,
                edge.clone(),
                security(Some(ADMIN)),
            )
            .await,
        );
    }
    let settings = |token| ClusterSettings {
        part_timeout: Duration::from_millis(800),
        security: security(token),
        ..Default::default()
    };
    let client = ClusterClient::connect_with(&endpoints, settings(Some(READ)))
        .await
        .expect("cluster client");
    client
        .watcher()
        .wait_for(Duration::from_secs(10), |v| v.nodes.len() == 2)
        .await;
    place(&endpoints, 4, 2, Duration::from_secs(20)).await;
    wait_ready(&client, "t", 2).await;

    // n1 started empty: it serves its shards from a copy made over mutual TLS with the token.
    assert!(
        empty
            .join("t")
            .join("v00000001")
            .join(HELD_ROWS_FILE)
            .exists(),
        "n1 serves without a copy"
    );
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    for _ in 0..10 {
        let ids: Vec<u64> = (0..400).map(|_| rng.random_range(0..ROWS)).collect();
        check_rows(&ids, &client.lookup("t", &ids).await.expect("lookup"));
    }

    // Without a token, or without the client certificate, no node answers.
    let stranger = ClusterClient::connect_with(&endpoints, settings(None))
        .await
        .expect("cluster client");
    let err = stranger
        .lookup("t", &[1, 2, 3])
        .await
        .expect_err("no token");
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err}");
    let mut no_cert = settings(Some(READ));
    no_cert.security.tls_identity_pem = None;
    no_cert.part_timeout = Duration::from_millis(300);
    no_cert.max_rounds = 1;
    let anonymous = ClusterClient::connect_with(&endpoints, no_cert)
        .await
        .expect("cluster client");
    assert!(
        anonymous.lookup("t", &[1]).await.is_err(),
        "a client without a certificate was served"
    );
    for n in nodes {
        if let Some(s) = n.server {
            s.shutdown().await.expect("shutdown");
        }
    }
}
