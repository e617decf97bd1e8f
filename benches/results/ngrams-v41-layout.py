# A DeepSeek-V4.1-geometry layout (2..4-grams x 8 heads = 24 columns, layers 1 and 14, the V4.1
# prime and multiplier rule) scaled to ~2 GiB per layer, over the DeepSeek-V3 compression map, rows
# stored packed as 264 bytes (256 fp8 values + 8 ue8m0 scales): u8 x 264.
import json, sys
import numpy as np
from engram_store import layout as L
cmap = np.load(sys.argv[1])
keys = {"engram_layer_ids": [1, 14], "engram_max_ngram_size": 4, "engram_n_heads": 8,
        "engram_head_dim": 256, "engram_vocab_size": int(sys.argv[2]),
        "engram_compressed_vocab_size": int(cmap.max()) + 1, "engram_pad_token_id": 2}
keys["engram_num_embeddings"] = [sum(map(sum, p)) for p in L.v41_primes(keys)]
layout = L.layout_from_hf_config({"text_config": keys}, cmap)
layout["row_dim"] = 264
json.dump(layout, open("layout-v41-scaled.json", "w"))
json.dump({"text_config": keys}, open("config.json", "w"), indent=1)
print(keys["engram_num_embeddings"], [n * 264 / 2**30 for n in keys["engram_num_embeddings"]])
