//! `import-hf` on synthetic DeepSeek-V4.1-geometry checkpoints (written by the library's
//! `write_synthetic_checkpoint`): every imported row is the checkpoint's values followed by its
//! scales; the group serves over real gRPC, LookupNgrams equalling local hashing with the
//! V4.1 layout plus plain Lookups; `--layers` imports a subset; and a checkpoint that breaks a
//! promise of its config (a row count, a missing scale tensor, a wrong dtype, a compressed
//! vocabulary) is an error naming both values that leaves no table and no group behind.

mod common;

use std::path::Path;

use engram_store::group::GroupFiles;
use engram_store::group::hf::{
    CONFIG_FILE, ImportError, ImportOptions, SynthCheckpoint, SynthFaults, import_hf,
    synth_scale_byte, synth_value_byte, write_synthetic_checkpoint,
};
use engram_store::table::{DType, OpenTable, RowFormat};
use engram_store_cache::io::IoEngineKind;
use engram_store_client::token_sequence;
use engram_store_hashing::{EngramConfig, LayerHasher};

/// The packed row `row` of layer `layer` as the synthetic checkpoint defines it.
fn expected_row(layer: u32, row: u64) -> Vec<u8> {
    let mut out: Vec<u8> = (0..256).map(|c| synth_value_byte(layer, row, c)).collect();
    out.extend((0..8).map(|b| synth_scale_byte(layer, row, b)));
    out
}

/// Entries of a directory (empty when it does not exist).
fn entries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            let mut v: Vec<String> = d
                .filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            v.sort();
            v
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imports_a_tiny_checkpoint_and_serves_it() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let ckpt = tmp.path().join("ckpt");
    let data = tmp.path().join("data");
    let written = write_synthetic_checkpoint(&ckpt, &SynthCheckpoint::default()).expect("synth");

    // Through the command line, as a user runs it.
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_engram-store"))
        .args([
            "import-hf",
            ckpt.to_str().expect("utf-8"),
            "--name",
            "v41",
            "--data",
            data.to_str().expect("utf-8"),
        ])
        .stdout(std::process::Stdio::null())
        .status()
        .expect("run engram-store import-hf");
    assert!(status.success(), "import-hf: {status}");
    assert_eq!(
        entries(&data),
        ["v41.engram", "v41.layer1", "v41.layer14"],
        "one table per Engram layer and the group"
    );

    let group = GroupFiles::load(&data, "v41").expect("the group loads");
    let config = EngramConfig::load(ckpt.join(CONFIG_FILE)).expect("config");
    assert_eq!(group.layout, config.layout(&group.map).expect("layout"));
    assert_eq!(group.layout.heads_total(), 24);
    assert_eq!(group.map.len(), written.vocab);
    for (&layer, &rows) in config.layer_ids.iter().zip(&config.num_embeddings) {
        let table =
            OpenTable::open_newest(&data, &format!("v41.layer{layer}"), false).expect("open table");
        let m = &table.manifest;
        assert_eq!(
            (m.dtype, m.row_format, m.row_dim, m.row_bytes, m.rows),
            (DType::F8E4M3, RowFormat::V41_ENGRAM, 256, 264, rows)
        );
    }

    // Serve it: Lookup returns the packed rows, LookupNgrams the rows the V4.1 layout hashes to.
    let (_engine, server, client) = common::start(&data, 0, IoEngineKind::Pread).await;
    let info = client
        .describe_table("v41.layer14")
        .await
        .expect("describe");
    let format = info.row_format.expect("row format reported");
    assert_eq!((format.kind, format.scale_block), (2, 32), "{format:?}");
    let ids: Vec<u64> = vec![0, 1, 4000, 5939, 17, 4000];
    let rows = client.lookup("v41.layer14", &ids).await.expect("lookup");
    for (i, &id) in ids.iter().enumerate() {
        assert_eq!(rows.row(i), expected_row(14, id), "row {id}");
    }
    let raw: Vec<u32> = vec![5, 300, 301, 302, 4000, 5470, 7, 7, 7, 2];
    let mut compressed = Vec::new();
    group
        .map
        .compress_into(&raw, &mut compressed)
        .expect("compress");
    for layer in [1u32, 14] {
        let hasher = LayerHasher::new(&group.layout, layer).expect("hasher");
        let mut want_ids = Vec::new();
        hasher
            .row_ids_into(&compressed, &[], &mut want_ids)
            .expect("hash");
        let got = client
            .lookup_ngrams("v41", layer, &[token_sequence(&raw, &[])])
            .await
            .expect("lookup ngrams");
        assert_eq!(got.len(), raw.len() * 24);
        for (i, &id) in want_ids.iter().enumerate() {
            assert_eq!(got.row(i), expected_row(layer, id), "layer {layer} row {i}");
        }
    }
    server.shutdown().await.expect("shutdown");
}

#[test]
fn imports_only_the_layers_asked_for() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let ckpt = tmp.path().join("ckpt");
    let data = tmp.path().join("data");
    write_synthetic_checkpoint(&ckpt, &SynthCheckpoint::default()).expect("synth");
    let options = ImportOptions {
        layers: Some(vec![14]),
        ..Default::default()
    };
    let imported = import_hf(&ckpt, "g", &data, &options, None).expect("import");
    assert_eq!(imported.tables.len(), 1);
    assert_eq!(entries(&data), ["g.engram", "g.layer14"]);
    let group = GroupFiles::load(&data, "g").expect("load");
    let ids: Vec<u32> = group.layout.layers().iter().map(|l| l.layer_id()).collect();
    assert_eq!(ids, [14]);
    // Layer 14 keeps the primes it has in the whole model (they follow layer 1's).
    let full = EngramConfig::load(ckpt.join(CONFIG_FILE)).expect("config");
    assert_eq!(
        group.layout.layer(14).map(|l| l.row_count()),
        Some(full.num_embeddings[1])
    );
    let err = import_hf(
        &ckpt,
        "h",
        &data,
        &ImportOptions {
            layers: Some(vec![2]),
            ..Default::default()
        },
        None,
    )
    .expect_err("layer 2 has no Engram table");
    assert!(
        matches!(err, ImportError::UnknownLayer { layer_id: 2, .. }),
        "{err}"
    );
    // Importing the same group again is refused; the data directory is unchanged.
    let again = import_hf(&ckpt, "g", &data, &ImportOptions::default(), None);
    assert!(again.is_err());
    assert_eq!(entries(&data), ["g.engram", "g.layer14"]);
}

/// Writes a checkpoint with `faults` (and `edit` applied to its config.json), imports it, and
/// returns the error after checking that the data directory holds nothing.
fn failed_import(
    faults: SynthFaults,
    edit: impl FnOnce(&mut serde_json::Value),
) -> (ImportError, String) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let ckpt = tmp.path().join("ckpt");
    let data = tmp.path().join("data");
    let spec = SynthCheckpoint {
        faults,
        ..Default::default()
    };
    write_synthetic_checkpoint(&ckpt, &spec).expect("synth");
    let path = ckpt.join(CONFIG_FILE);
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).expect("read")).expect("json");
    edit(&mut config);
    std::fs::write(&path, config.to_string()).expect("write");
    let err = import_hf(&ckpt, "bad", &data, &ImportOptions::default(), None)
        .expect_err("the import must fail");
    let message = err.to_string();
    assert!(
        entries(&data).is_empty(),
        "{message}: left {:?}",
        entries(&data)
    );
    (err, message)
}

#[test]
fn a_config_row_count_that_is_not_the_sum_of_primes_is_refused() {
    let (err, message) = failed_import(SynthFaults::default(), |c| {
        let n = &mut c["text_config"]["engram_num_embeddings"][1];
        *n = serde_json::json!(n.as_u64().expect("rows") + 7);
    });
    assert!(matches!(err, ImportError::Config(_)), "{err:?}");
    assert!(message.contains("layer 14"), "{message}");
    let primes_sum = EngramConfig {
        layer_ids: vec![1, 14],
        num_embeddings: vec![0, 0],
        max_ngram_size: 4,
        n_heads: 8,
        head_dim: 256,
        vocab_size: 60,
        compressed_vocab_size: 1,
        pad_token_id: 0,
    }
    .primes()[1]
        .iter()
        .flatten()
        .sum::<u64>();
    assert!(message.contains(&primes_sum.to_string()), "{message}");
    assert!(message.contains(&(primes_sum + 7).to_string()), "{message}");
}

#[test]
fn a_tensor_with_more_rows_than_the_config_is_refused() {
    let (err, message) = failed_import(
        SynthFaults {
            extra_rows: Some((14, 3)),
            ..Default::default()
        },
        |_| {},
    );
    assert!(matches!(err, ImportError::Shape { .. }), "{err:?}");
    assert!(
        message.contains("layers.14.engram.embed.weight"),
        "{message}"
    );
    assert!(
        message.contains("5943") && message.contains("5940"),
        "{message}"
    );
}

#[test]
fn a_missing_scale_tensor_is_refused() {
    let (err, message) = failed_import(
        SynthFaults {
            omit_scale_of: Some(14),
            ..Default::default()
        },
        |_| {},
    );
    assert!(matches!(err, ImportError::MissingTensor { .. }), "{err:?}");
    assert!(
        message.contains("layers.14.engram.embed.scale"),
        "{message}"
    );
    assert!(
        message.contains("layers.14.engram.embed.weight"),
        "{message}"
    );
}

#[test]
fn a_wrong_dtype_is_refused() {
    let (err, message) = failed_import(
        SynthFaults {
            weight_dtype: Some("F8_E5M2".into()),
            ..Default::default()
        },
        |_| {},
    );
    assert!(matches!(err, ImportError::Dtype { .. }), "{err:?}");
    assert!(
        message.contains("F8_E5M2") && message.contains("F8_E4M3"),
        "{message}"
    );
}

#[test]
fn a_compressed_vocabulary_other_than_the_tokenizers_is_refused() {
    let (err, message) = failed_import(SynthFaults::default(), |c| {
        c["text_config"]["engram_compressed_vocab_size"] = serde_json::json!(129_280);
    });
    assert!(matches!(err, ImportError::Config(_)), "{err:?}");
    assert!(
        message.contains("129280") && message.contains("1969"),
        "{message}"
    );
    let (_, message) = failed_import(SynthFaults::default(), |c| {
        c["text_config"]
            .as_object_mut()
            .expect("object")
            .remove("engram_n_heads");
    });
    assert!(message.contains("engram_n_heads"), "{message}");
}
