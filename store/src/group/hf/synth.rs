//! A synthetic DeepSeek-V4.1-geometry checkpoint, for tests and benchmarks (the real one is
//! 511 GB): `config.json` with the `engram_*` keys under `text_config`, a small byte-level BPE
//! `tokenizer.json`, `model.safetensors.index.json`, and shards holding each Engram layer's
//! `layers.{L}.engram.embed.weight` (F8_E4M3, `[rows, head_dim]`) and `.scale` (F8_E8M0,
//! `[rows, head_dim / 32]`) beside unrelated tensors, some also ending in `embed.weight`. A
//! layer's weight and scale go to different shards.
//!
//! Content is a function of (layer, row, column) so a reader can check any row from its id:
//! [`synth_value_byte`] (a finite e4m3 code: the two NaN codes are never written) and
//! [`synth_scale_byte`] (ue8m0 bytes 112..=135, scales 2^-15..2^8). Sizes: `engram_vocab_size`
//! sets the rows (about `24 x vocab_size` per layer), from a few KiB to many GiB; tensors stream
//! out in chunks, so memory stays small.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use engram_store_cache::mix64;
use engram_store_hashing::EngramConfig;
use serde_json::json;

use super::checkpoint::{CONFIG_FILE, INDEX_FILE, TOKENIZER_FILE};
use super::tokenizer_map::compression_map_of;
use super::{SCALE_BLOCK, scale_tensor_name, weight_tensor_name};

/// What synthetic checkpoint to write.
#[derive(Debug, Clone)]
pub struct SynthCheckpoint {
    /// `engram_layer_ids`. Default `[1, 14]`, as DeepSeek-V4.1-Flash.
    pub layer_ids: Vec<u32>,
    /// `engram_vocab_size`: each order's prime search starts above it. Default 60 (tiny: about
    /// 1,500 rows per layer).
    pub vocab_size: u64,
    /// `engram_max_ngram_size`. Default 4.
    pub max_ngram_size: usize,
    /// `engram_n_heads`. Default 8.
    pub n_heads: usize,
    /// `engram_head_dim`. Default 256.
    pub head_dim: usize,
    /// Shards. Default 3.
    pub shards: usize,
    /// Deliberate defects, for tests of the importer's checks.
    pub faults: SynthFaults,
}

/// Defects a test asks for; none by default.
#[derive(Debug, Clone, Default)]
pub struct SynthFaults {
    /// Leave out this layer's scale tensor.
    pub omit_scale_of: Option<u32>,
    /// Write the weight tensors with this safetensors dtype instead of F8_E4M3 (a one-byte
    /// dtype, so the data length still fits the header).
    pub weight_dtype: Option<String>,
    /// Give the tensors of layer `.0` `.1` more rows than the config promises.
    pub extra_rows: Option<(u32, u64)>,
}

impl Default for SynthCheckpoint {
    fn default() -> Self {
        Self {
            layer_ids: vec![1, 14],
            vocab_size: 60,
            max_ngram_size: 4,
            n_heads: 8,
            head_dim: 256,
            shards: 3,
            faults: SynthFaults::default(),
        }
    }
}

impl SynthCheckpoint {
    /// A checkpoint whose Engram tables hold about `bytes` bytes of packed rows in all.
    pub fn scaled(bytes: u64) -> Self {
        let base = Self::default();
        let columns = ((base.max_ngram_size - 1) * base.n_heads) as u64;
        let row_bytes = (base.head_dim + base.head_dim / SCALE_BLOCK as usize) as u64;
        let per_layer = bytes / base.layer_ids.len() as u64;
        Self {
            vocab_size: (per_layer / row_bytes / columns).max(60),
            ..base
        }
    }
}

/// What [`write_synthetic_checkpoint`] wrote.
#[derive(Debug, Clone)]
pub struct WrittenCheckpoint {
    /// The directory.
    pub dir: PathBuf,
    /// The Engram keys written to `config.json` (row counts and compressed vocabulary included).
    pub config: EngramConfig,
    /// Raw token ids of the tokenizer.
    pub vocab: usize,
    /// Bytes of the Engram weight and scale tensors.
    pub engram_bytes: u64,
}

/// The e4m3 value byte of (layer, row, column): finite (never 0x7F or 0xFF).
pub fn synth_value_byte(layer_id: u32, row: u64, col: usize) -> u8 {
    let h = mix64(
        u64::from(layer_id).wrapping_mul(0x9E37_79B9_7F4A_7C15)
            ^ row.wrapping_mul(0xC2B2_AE3D_27D4_EB4F)
            ^ ((col / 8) as u64 + 1).wrapping_mul(0x1656_67B1_9E37_79F9),
    );
    let b = (h >> (8 * (col % 8))) as u8;
    if b & 0x7F == 0x7F { b ^ 1 } else { b }
}

/// Appends row `row` of layer `layer`'s values ([`synth_value_byte`] for every column), one hash
/// per 8 columns.
fn value_row(layer_id: u32, row: u64, cols: usize, out: &mut Vec<u8>) {
    for group in 0..cols.div_ceil(8) {
        let h = mix64(
            u64::from(layer_id).wrapping_mul(0x9E37_79B9_7F4A_7C15)
                ^ row.wrapping_mul(0xC2B2_AE3D_27D4_EB4F)
                ^ (group as u64 + 1).wrapping_mul(0x1656_67B1_9E37_79F9),
        );
        for (i, b) in h.to_le_bytes().into_iter().enumerate() {
            if group * 8 + i < cols {
                out.push(if b & 0x7F == 0x7F { b ^ 1 } else { b });
            }
        }
    }
}

/// The ue8m0 scale byte of (layer, row, block): 112..=135, a scale of 2^-15..2^8.
pub fn synth_scale_byte(layer_id: u32, row: u64, block: usize) -> u8 {
    let h = mix64(
        u64::from(layer_id).wrapping_mul(0xD6E8_FEB8_6659_FD93)
            ^ row.wrapping_mul(0xA076_1D64_78BD_642F)
            ^ (block as u64 + 1).wrapping_mul(0xE703_7ED1_A0B4_28DB),
    );
    112 + (h % 24) as u8
}

/// One tensor of a shard: its header entry and how to produce its bytes.
struct SynthTensor {
    name: String,
    dtype: String,
    shape: Vec<u64>,
    content: Content,
}

#[derive(Clone, Copy)]
enum Content {
    /// Engram values of a layer.
    Values(u32),
    /// Engram scales of a layer.
    Scales(u32),
    /// A constant byte pattern.
    Filler(u8),
}

impl SynthTensor {
    fn bytes(&self) -> u64 {
        self.shape.iter().product::<u64>()
            * if self.dtype == "BF16" {
                2
            } else if self.dtype == "F32" {
                4
            } else {
                1
            }
    }
}

/// Writes the checkpoint into `dir` (created; files in it are overwritten).
pub fn write_synthetic_checkpoint(
    dir: &Path,
    spec: &SynthCheckpoint,
) -> Result<WrittenCheckpoint, String> {
    let err = |what: String| move |e: std::io::Error| format!("{what}: {e}");
    std::fs::create_dir_all(dir).map_err(err(format!("create {}", dir.display())))?;
    let (tokenizer_json, pad_token_id) = tokenizer_json();
    let tokenizer_path = dir.join(TOKENIZER_FILE);
    std::fs::write(&tokenizer_path, tokenizer_json.to_string())
        .map_err(err(format!("write {}", tokenizer_path.display())))?;
    let tokenizer = tokenizers::Tokenizer::from_file(&tokenizer_path)
        .map_err(|e| format!("reload {}: {e}", tokenizer_path.display()))?;
    let map = compression_map_of(&tokenizer)?;
    let mut config = EngramConfig {
        layer_ids: spec.layer_ids.clone(),
        num_embeddings: Vec::new(),
        max_ngram_size: spec.max_ngram_size,
        n_heads: spec.n_heads,
        head_dim: spec.head_dim,
        vocab_size: spec.vocab_size,
        compressed_vocab_size: map.compressed_vocab_size(),
        pad_token_id,
    };
    config.num_embeddings = config
        .primes()
        .iter()
        .map(|layer| layer.iter().flatten().sum())
        .collect();
    write_config(dir, &config, map.len())?;

    // Shard contents: unrelated tensors first, then each layer's weight and scale in different
    // shards.
    let shards = spec.shards.max(2);
    let mut plan: Vec<Vec<SynthTensor>> = (0..shards).map(|_| Vec::new()).collect();
    let hidden = 64u64;
    let vocab = map.len() as u64;
    let filler = |name: &str, dtype: &str, shape: Vec<u64>, byte: u8| SynthTensor {
        name: name.to_owned(),
        dtype: dtype.to_owned(),
        shape,
        content: Content::Filler(byte),
    };
    plan[0].push(filler("embed.weight", "BF16", vec![vocab, hidden], 0x3f));
    plan[0].push(filler(
        "layers.0.attn.wq.weight",
        "BF16",
        vec![hidden, hidden],
        1,
    ));
    plan[1 % shards].push(filler(
        "layers.13.ffn.experts.0.w1.weight",
        "F8_E4M3",
        vec![hidden, hidden],
        0x38,
    ));
    plan[1 % shards].push(filler(
        "layers.13.ffn.experts.0.w1.scale",
        "F8_E8M0",
        vec![hidden, 2],
        127,
    ));
    plan[2 % shards].push(filler(
        "mtp.0.embed.weight",
        "BF16",
        vec![vocab, hidden],
        0x40,
    ));
    plan[2 % shards].push(filler("vision.patch.embed.weight", "F32", vec![16, 48], 0));
    let columns = (spec.max_ngram_size - 1) * spec.n_heads;
    let mut engram_bytes = 0;
    for (i, (&layer_id, &rows)) in spec
        .layer_ids
        .iter()
        .zip(&config.num_embeddings)
        .enumerate()
    {
        let rows = rows
            + match spec.faults.extra_rows {
                Some((l, extra)) if l == layer_id => extra,
                _ => 0,
            };
        plan[(2 * i) % shards].push(filler(
            &format!("layers.{layer_id}.engram.wkv.weight"),
            "BF16",
            vec![hidden * 2, (columns * 4) as u64],
            2,
        ));
        let weight = SynthTensor {
            name: weight_tensor_name(layer_id),
            dtype: spec
                .faults
                .weight_dtype
                .clone()
                .unwrap_or_else(|| "F8_E4M3".into()),
            shape: vec![rows, spec.head_dim as u64],
            content: Content::Values(layer_id),
        };
        engram_bytes += weight.bytes();
        plan[(2 * i) % shards].push(weight);
        if spec.faults.omit_scale_of != Some(layer_id) {
            let scale = SynthTensor {
                name: scale_tensor_name(layer_id),
                dtype: "F8_E8M0".into(),
                shape: vec![rows, (spec.head_dim / SCALE_BLOCK as usize) as u64],
                content: Content::Scales(layer_id),
            };
            engram_bytes += scale.bytes();
            plan[(2 * i + 1) % shards].push(scale);
        }
    }
    let mut weight_map = BTreeMap::new();
    let mut total = 0u64;
    for (s, tensors) in plan.iter().enumerate() {
        let file = format!("model-{:05}-of-{:05}.safetensors", s + 1, shards);
        for t in tensors {
            weight_map.insert(t.name.clone(), file.clone());
            total += t.bytes();
        }
        write_shard(&dir.join(&file), tensors, spec.head_dim)?;
    }
    let index = json!({"metadata": {"total_size": total}, "weight_map": weight_map});
    let index_path = dir.join(INDEX_FILE);
    std::fs::write(
        &index_path,
        serde_json::to_vec_pretty(&index).unwrap_or_default(),
    )
    .map_err(err(format!("write {}", index_path.display())))?;
    Ok(WrittenCheckpoint {
        dir: dir.to_path_buf(),
        config,
        vocab: map.len(),
        engram_bytes,
    })
}

/// `config.json`: the Engram keys under `text_config`, beside the usual others.
fn write_config(dir: &Path, config: &EngramConfig, vocab: usize) -> Result<(), String> {
    let mut text = serde_json::to_value(config).map_err(|e| e.to_string())?;
    if let Some(obj) = text.as_object_mut() {
        for (k, v) in [
            ("hidden_size", json!(64)),
            ("num_hidden_layers", json!(16)),
            ("vocab_size", json!(vocab)),
            ("hc_mult", json!(4)),
            ("model_type", json!("deepseek_v41_text")),
        ] {
            obj.insert(k.to_owned(), v);
        }
    }
    let root = json!({
        "architectures": ["DeepseekV41ForConditionalGeneration"],
        "model_type": "deepseek_v41",
        "torch_dtype": "bfloat16",
        "text_config": text,
        "vision_config": {"hidden_size": 48, "patch_size": 4},
    });
    let path = dir.join(CONFIG_FILE);
    std::fs::write(&path, serde_json::to_vec_pretty(&root).unwrap_or_default())
        .map_err(|e| format!("write {}: {e}", path.display()))
}

/// Writes one safetensors shard, streaming each tensor's bytes.
fn write_shard(path: &Path, tensors: &[SynthTensor], head_dim: usize) -> Result<(), String> {
    let io = |e: std::io::Error| format!("write {}: {e}", path.display());
    let mut header = serde_json::Map::new();
    header.insert("__metadata__".into(), json!({"format": "pt"}));
    let mut offset = 0u64;
    for t in tensors {
        header.insert(
            t.name.clone(),
            json!({"dtype": t.dtype, "shape": t.shape, "data_offsets": [offset, offset + t.bytes()]}),
        );
        offset += t.bytes();
    }
    let mut json = serde_json::to_vec(&header).map_err(|e| e.to_string())?;
    json.resize(json.len().next_multiple_of(8), b' ');
    let mut out = BufWriter::with_capacity(8 << 20, File::create(path).map_err(io)?);
    out.write_all(&(json.len() as u64).to_le_bytes())
        .map_err(io)?;
    out.write_all(&json).map_err(io)?;
    let mut buf = Vec::with_capacity(4 << 20);
    for t in tensors {
        let cols = *t.shape.last().unwrap_or(&1) as usize;
        let rows = t.shape.first().copied().unwrap_or(1);
        match t.content {
            Content::Filler(byte) => {
                let mut left = t.bytes();
                let chunk = vec![byte; 1 << 20];
                while left > 0 {
                    let n = left.min(chunk.len() as u64) as usize;
                    out.write_all(&chunk[..n]).map_err(io)?;
                    left -= n as u64;
                }
            }
            Content::Values(layer) | Content::Scales(layer) => {
                let scales = matches!(t.content, Content::Scales(_));
                debug_assert_eq!(cols, if scales { head_dim / 32 } else { head_dim });
                for row in 0..rows {
                    if scales {
                        buf.extend((0..cols).map(|block| synth_scale_byte(layer, row, block)));
                    } else {
                        value_row(layer, row, cols, &mut buf);
                    }
                    if buf.len() >= 4 << 20 {
                        out.write_all(&buf).map_err(io)?;
                        buf.clear();
                    }
                }
                out.write_all(&buf).map_err(io)?;
                buf.clear();
            }
        }
    }
    out.flush().map_err(io)?;
    Ok(())
}

/// GPT-2's byte -> printable character map of byte-level BPE.
fn byte_chars() -> Vec<char> {
    let printable = |b: u32| (33..=126).contains(&b) || (161..=172).contains(&b) || b >= 174;
    let mut next = 256;
    (0..256u32)
        .map(|b| {
            let code = if printable(b) {
                b
            } else {
                next += 1;
                next - 1
            };
            char::from_u32(code).unwrap_or('?')
        })
        .collect()
}

/// A byte-level BPE `tokenizer.json`: the 256 byte tokens (those of bytes >= 0x80 decode to a
/// replacement character alone), words whose forms normalize alike (case, accents, full-width,
/// ligatures, leading space), whitespace tokens, generated syllable words, and added special
/// tokens. Returns it with the raw id of its pad token.
fn tokenizer_json() -> (serde_json::Value, u32) {
    let chars = byte_chars();
    let encode = |s: &str| s.bytes().map(|b| chars[b as usize]).collect::<String>();
    let mut vocab: Vec<String> = chars.iter().map(|c| c.to_string()).collect();
    let words = [
        " The",
        "the",
        "THE",
        " the",
        "The",
        "café",
        "cafe",
        "CAFÉ",
        " café",
        "naïve",
        "naive",
        "ﬁne",
        "fine",
        "Ｔｈｅ",
        "ｔｈｅ",
        "\n",
        "\n\n",
        "  ",
        " ",
        "\t",
        " \n ",
        "Ωmega",
        "ωmega",
        "straße",
        "STRASSE",
        "é",
        "e\u{301}",
        "½",
        "1/2",
        "İstanbul",
        "istanbul",
    ];
    for w in words {
        let token = encode(w);
        if !vocab.contains(&token) {
            vocab.push(token);
        }
    }
    // Generated words, in several forms, so the compressed vocabulary is in the thousands.
    let syllables = [
        "ka", "lo", "mi", "ne", "ru", "sa", "te", "vo", "zu", "pi", "do", "ge",
    ];
    for a in syllables {
        for b in syllables {
            for c in syllables {
                let w = format!("{a}{b}{c}");
                for form in [w.clone(), format!(" {w}"), w.to_uppercase()] {
                    let token = encode(&form);
                    if !vocab.contains(&token) {
                        vocab.push(token);
                    }
                }
            }
        }
    }
    let first_added = vocab.len() as u32;
    let specials = [
        "<｜begin▁of▁sentence｜>",
        "<｜end▁of▁sentence｜>",
        "<｜▁pad▁｜>",
        "<｜image｜>",
    ];
    let added: Vec<serde_json::Value> = specials
        .iter()
        .enumerate()
        .map(|(i, s)| {
            json!({"id": first_added + i as u32, "content": s, "single_word": false,
                   "lstrip": false, "rstrip": false, "normalized": false, "special": true})
        })
        .collect();
    let vocab_map: serde_json::Map<String, serde_json::Value> = vocab
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), json!(i)))
        .collect();
    let tokenizer = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true,
                          "use_regex": true},
        "post_processor": null,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true,
                    "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null,
                  "continuing_subword_prefix": null, "end_of_word_suffix": null,
                  "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                  "vocab": vocab_map, "merges": []},
    });
    (tokenizer, first_added + 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_finite_e4m3_and_scales_in_range() {
        for row in 0..2000 {
            for col in 0..256 {
                assert_ne!(synth_value_byte(14, row, col) & 0x7F, 0x7F);
            }
            for block in 0..8 {
                assert!((112..=135).contains(&synth_scale_byte(1, row, block)));
            }
            let mut fast = Vec::new();
            value_row(14, row, 256, &mut fast);
            let slow: Vec<u8> = (0..256).map(|c| synth_value_byte(14, row, c)).collect();
            assert_eq!(fast, slow);
        }
        assert_ne!(synth_value_byte(1, 5, 3), synth_value_byte(14, 5, 3));
    }

    #[test]
    fn tiny_checkpoint_is_consistent() {
        let dir = tempfile::tempdir().expect("tempdir");
        let written =
            write_synthetic_checkpoint(dir.path(), &SynthCheckpoint::default()).expect("write");
        let config = EngramConfig::load(dir.path().join(CONFIG_FILE)).expect("config");
        assert_eq!(config, written.config);
        assert_eq!(config.layer_ids, [1, 14]);
        // Byte tokens, words, syllable words in three forms, 4 specials.
        assert!(written.vocab > 5000, "{}", written.vocab);
        // Forms that normalize alike share compressed ids.
        assert!(config.compressed_vocab_size < written.vocab as u64);
        let index = std::fs::read_to_string(dir.path().join(INDEX_FILE)).expect("index");
        assert!(index.contains("layers.14.engram.embed.scale"));
        assert!(index.contains("mtp.0.embed.weight"));
    }
}
