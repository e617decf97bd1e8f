"""The synthetic decoder of ``engram_offload.py``: real geometry, random bf16 weights.

Backbones (``BACKBONES``): ``dense-4b`` has Qwen3-4B's shape (36 layers, hidden 2560, 32 query and
8 KV heads of 128, MLP 9728, q/k RMSNorm), ``dense-8b`` Llama-3-8B's (32 layers, hidden 4096, 32/8
heads of 128, MLP 14336); both take DeepSeek-V3 token ids (vocabulary 129,280), as the traces are.
``tiny`` is small enough for a CPU.

A layer is pre-norm attention (fused QKV, RoPE, SDPA with GQA) and a SwiGLU MLP. Engram modules sit
at the start of layers 1 and 14 (DeepSeek-V4.1's places) and fuse their rows into the hidden state
as the Engram paper's module does (``deepseek-ai/Engram``, hc_mult 1): the ``24 x 256`` bf16 rows
of a token, flattened, give a key and a value; the gate is
``sigmoid(signed_sqrt(<rmsnorm(key), rmsnorm(h)> / sqrt(hidden)))``; the gated value goes through a
causal depthwise convolution (kernel 4, dilation 4 = the largest n-gram) of its RMSNorm with SiLU,
and ``h += value + conv``.

Two step shapes, each a static set of buffers (``DecodeState``, ``PrefillState``):

- decode: ``batch`` sequences, one token each, attending over a ring-buffer KV cache of the last
  ``window`` positions (a sliding window, so every step has the same shapes and the dense layers
  replay as CUDA graphs); the cache starts filled with random keys and values, standing for a
  context of ``window`` tokens (prefill is measured on its own);
- prefill: one chunk of ``T`` tokens, a prompt of its own (causal SDPA over the chunk), logits of
  its last token only, as engines compute them.

A step runs as segments split at the Engram layers (``segment(i)``): segment 0 is the embedding and
the layers before the first Engram layer; segment ``i`` starts with Engram module ``i - 1`` reading
its rows from the state's staging buffer ``rows[i - 1]``. Whatever fills the staging buffer (and
waits for it) runs between segments, outside any graph.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os

import torch
import torch.nn.functional as F

#: ``ENGRAM_OFFLOAD_SDPA``: pin decode attention to one SDPA backend (``flash``, ``efficient``,
#: ``cudnn`` or ``math``); unset: torch chooses.
_SDPA_BACKENDS = {
    "flash": "FLASH_ATTENTION",
    "efficient": "EFFICIENT_ATTENTION",
    "cudnn": "CUDNN_ATTENTION",
    "math": "MATH",
}


def _decode_attention_backend():
    name = os.environ.get("ENGRAM_OFFLOAD_SDPA", "")
    if not name:
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([getattr(SDPBackend, _SDPA_BACKENDS[name])])

EPS = 1e-6
CONV_EPS = 1e-5


@dataclasses.dataclass(frozen=True)
class Backbone:
    """A decoder's shape."""

    name: str
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    qk_norm: bool
    rope_theta: float


BACKBONES = {
    "dense-4b": Backbone("dense-4b", 36, 2560, 32, 8, 128, 9728, 129280, True, 1e6),
    "dense-8b": Backbone("dense-8b", 32, 4096, 32, 8, 128, 14336, 129280, False, 5e5),
    "tiny": Backbone("tiny", 16, 64, 4, 2, 16, 128, 129280, True, 1e4),
}


@dataclasses.dataclass(frozen=True)
class EngramGeometry:
    """DeepSeek-V4.1's Engram: layers 1 and 14, n-grams 2..4 x 8 heads of 256 values."""

    layer_ids: tuple[int, ...] = (1, 14)
    max_ngram: int = 4
    heads: int = 8
    head_dim: int = 256
    kernel: int = 4

    @property
    def columns(self) -> int:
        """Rows per token per layer."""
        return (self.max_ngram - 1) * self.heads

    @property
    def conv_history(self) -> int:
        """Past positions the convolution reads (``(kernel - 1) * dilation``)."""
        return (self.kernel - 1) * self.max_ngram


def _normal(shape, std, gen, device) -> torch.Tensor:
    return (torch.randn(shape, generator=gen, device=device, dtype=torch.float32) * std).to(
        torch.bfloat16
    )


class _Layer:
    def __init__(self, b: Backbone, gen: torch.Generator, device: torch.device):
        q, kv = b.heads * b.head_dim, b.kv_heads * b.head_dim
        ones = torch.ones(b.hidden, dtype=torch.bfloat16, device=device)
        self.attn_norm = ones
        self.mlp_norm = ones
        self.wqkv = _normal((q + 2 * kv, b.hidden), b.hidden**-0.5, gen, device)
        self.wo = _normal((b.hidden, q), q**-0.5, gen, device)
        self.w_gate_up = _normal((2 * b.intermediate, b.hidden), b.hidden**-0.5, gen, device)
        self.w_down = _normal((b.hidden, b.intermediate), b.intermediate**-0.5, gen, device)
        head_ones = torch.ones(b.head_dim, dtype=torch.bfloat16, device=device)
        self.q_norm = head_ones if b.qk_norm else None
        self.k_norm = head_ones if b.qk_norm else None


class _Engram:
    def __init__(self, b: Backbone, g: EngramGeometry, gen: torch.Generator, device):
        width = g.columns * g.head_dim
        self.w_kv = _normal((2 * b.hidden, width), width**-0.5, gen, device)
        self.key_norm = torch.ones(b.hidden, dtype=torch.bfloat16, device=device)
        self.query_norm = torch.ones(b.hidden, dtype=torch.bfloat16, device=device)
        self.conv_norm = torch.ones(b.hidden, dtype=torch.bfloat16, device=device)
        self.conv_w = _normal((g.kernel, b.hidden), g.kernel**-0.5, gen, device)


@dataclasses.dataclass
class DecodeState:
    """Static buffers of a decode step of ``batch`` sequences (one token each)."""

    tokens: torch.Tensor  # [B] raw token ids
    position: torch.Tensor  # [1] absolute position of this step's tokens
    k: list[torch.Tensor]  # per layer [B, kv_heads, window, head_dim]
    v: list[torch.Tensor]
    conv: list[torch.Tensor]  # per Engram layer [B, conv_history, hidden]
    rows: list[torch.Tensor]  # per Engram layer [B, columns, head_dim] bf16 staging
    window: int
    x: torch.Tensor | None = None  # hidden state between segments
    logits: torch.Tensor | None = None  # [B, vocab] after the last segment
    argmax: torch.Tensor | None = None  # [B]


@dataclasses.dataclass
class PrefillState:
    """Static buffers of a prefill chunk (one sequence of ``T`` tokens)."""

    tokens: torch.Tensor  # [T]
    positions: torch.Tensor  # [T]
    k: list[torch.Tensor]  # per layer [1, kv_heads, T, head_dim]
    v: list[torch.Tensor]
    rows: list[torch.Tensor]  # per Engram layer [T, columns, head_dim]
    x: torch.Tensor | None = None
    logits: torch.Tensor | None = None  # [1, vocab], the last token's
    argmax: torch.Tensor | None = None


class Decoder:
    """Random bf16 weights of ``backbone`` and its Engram modules on ``device``, drawn from
    ``seed``; RoPE tables up to ``max_position``."""

    def __init__(
        self,
        backbone: Backbone,
        device: torch.device,
        seed: int,
        max_position: int,
        engram: EngramGeometry = EngramGeometry(),  # noqa: B008 (frozen dataclass)
    ):
        self.b = backbone
        self.g = engram
        self.device = device
        gen = torch.Generator(device=device).manual_seed(seed)
        b = backbone
        self.embed = _normal((b.vocab, b.hidden), 1.0, gen, device)
        self.layers = [_Layer(b, gen, device) for _ in range(b.layers)]
        self.final_norm = torch.ones(b.hidden, dtype=torch.bfloat16, device=device)
        self.lm_head = _normal((b.vocab, b.hidden), b.hidden**-0.5, gen, device)
        self.engrams = [_Engram(b, self.g, gen, device) for _ in self.g.layer_ids]
        if self.g.layer_ids[-1] >= b.layers:
            raise ValueError(f"{b.name} has {b.layers} layers, fewer than the Engram layers")
        inv = 1.0 / (b.rope_theta ** (torch.arange(0, b.head_dim, 2, device=device) / b.head_dim))
        angles = torch.outer(torch.arange(max_position, device=device, dtype=torch.float32), inv)
        angles = torch.cat([angles, angles], dim=-1)
        self.cos = angles.cos().to(torch.bfloat16)
        self.sin = angles.sin().to(torch.bfloat16)

    # -- states ------------------------------------------------------------------------------

    def decode_state(self, kv: tuple[torch.Tensor, torch.Tensor], batch: int) -> DecodeState:
        """Decode buffers of ``batch`` sequences over the first ``batch`` rows of the shared
        cache ``kv`` (two ``[layers, max_batch, kv_heads, window, head_dim]`` tensors)."""
        b, g, dev = self.b, self.g, self.device
        return DecodeState(
            tokens=torch.zeros(batch, dtype=torch.int64, device=dev),
            position=torch.zeros(1, dtype=torch.int64, device=dev),
            k=[kv[0][i, :batch] for i in range(b.layers)],
            v=[kv[1][i, :batch] for i in range(b.layers)],
            conv=[
                torch.zeros(batch, g.conv_history, b.hidden, dtype=torch.bfloat16, device=dev)
                for _ in g.layer_ids
            ],
            rows=[
                torch.zeros(batch, g.columns, g.head_dim, dtype=torch.bfloat16, device=dev)
                for _ in g.layer_ids
            ],
            window=kv[0].shape[3],
        )

    def prefill_state(self, tokens: int) -> PrefillState:
        b, g, dev = self.b, self.g, self.device
        kv_shape = (1, b.kv_heads, tokens, b.head_dim)
        return PrefillState(
            tokens=torch.zeros(tokens, dtype=torch.int64, device=dev),
            positions=torch.arange(tokens, device=dev),
            k=[torch.zeros(kv_shape, dtype=torch.bfloat16, device=dev) for _ in range(b.layers)],
            v=[torch.zeros(kv_shape, dtype=torch.bfloat16, device=dev) for _ in range(b.layers)],
            rows=[
                torch.zeros(tokens, g.columns, g.head_dim, dtype=torch.bfloat16, device=dev)
                for _ in g.layer_ids
            ],
        )

    # -- segments ----------------------------------------------------------------------------

    @property
    def segments(self) -> int:
        """Pieces of a step: one more than the Engram layers."""
        return len(self.g.layer_ids) + 1

    def segment(self, i: int, st: DecodeState | PrefillState, with_engram: bool) -> None:
        """Runs piece ``i`` of a step on ``st``'s buffers (see the module doc)."""
        bounds = (0, *self.g.layer_ids, self.b.layers)
        if i == 0:
            x = F.embedding(st.tokens, self.embed)
        else:
            x = st.x
            if with_engram:
                x = self.engram(i - 1, x, st)
        for layer in range(bounds[i], bounds[i + 1]):
            x = self.layer(layer, x, st)
        if i == self.segments - 1:
            last = x if isinstance(st, DecodeState) else x[-1:]
            st.logits = F.linear(
                F.rms_norm(last, (self.b.hidden,), self.final_norm, EPS), self.lm_head
            )
            st.argmax = st.logits.argmax(dim=-1)
            if isinstance(st, DecodeState):
                st.position.add_(1)
        else:
            st.x = x

    def layer(self, i: int, x: torch.Tensor, st: DecodeState | PrefillState) -> torch.Tensor:
        """Decoder layer ``i`` (attention, then MLP) on hidden states ``x [N, hidden]``."""
        p = self.layers[i]
        x = x + self._attention(i, F.rms_norm(x, (self.b.hidden,), p.attn_norm, EPS), st)
        h = F.rms_norm(x, (self.b.hidden,), p.mlp_norm, EPS)
        gate, up = F.linear(h, p.w_gate_up).chunk(2, dim=-1)
        return x + F.linear(F.silu(gate) * up, p.w_down)

    def _rope(self, t: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        half = t.shape[-1] // 2
        rotated = torch.cat([-t[..., half:], t[..., :half]], dim=-1)
        return t * cos + rotated * sin

    def _attention(self, i: int, h: torch.Tensor, st: DecodeState | PrefillState) -> torch.Tensor:
        b, p = self.b, self.layers[i]
        n = h.shape[0]
        q, k, v = F.linear(h, p.wqkv).split(
            [b.heads * b.head_dim, b.kv_heads * b.head_dim, b.kv_heads * b.head_dim], dim=-1
        )
        q = q.view(n, b.heads, b.head_dim)
        k = k.view(n, b.kv_heads, b.head_dim)
        v = v.view(n, b.kv_heads, b.head_dim)
        if p.q_norm is not None:
            q = F.rms_norm(q, (b.head_dim,), p.q_norm, EPS)
            k = F.rms_norm(k, (b.head_dim,), p.k_norm, EPS)
        if isinstance(st, DecodeState):
            cos = self.cos.index_select(0, st.position).unsqueeze(1)  # [1, 1, D]
            sin = self.sin.index_select(0, st.position).unsqueeze(1)
            q, k = self._rope(q, cos, sin), self._rope(k, cos, sin)
            slot = torch.remainder(st.position, st.window)
            st.k[i].index_copy_(2, slot, k.unsqueeze(2))
            st.v[i].index_copy_(2, slot, v.unsqueeze(2))
            with _decode_attention_backend():
                out = F.scaled_dot_product_attention(
                    q.unsqueeze(2), st.k[i], st.v[i], enable_gqa=True
                )  # [B, heads, 1, D]
        else:
            cos = self.cos[:n].unsqueeze(1)
            sin = self.sin[:n].unsqueeze(1)
            q, k = self._rope(q, cos, sin), self._rope(k, cos, sin)
            q, k, v = (t.transpose(0, 1).unsqueeze(0) for t in (q, k, v))  # [1, heads, T, D]
            st.k[i].copy_(k)
            st.v[i].copy_(v)
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
            out = out.squeeze(0).transpose(0, 1)  # [T, heads, D]
        return F.linear(out.reshape(n, b.heads * b.head_dim), p.wo)

    def engram(self, j: int, x: torch.Tensor, st: DecodeState | PrefillState) -> torch.Tensor:
        """Engram module ``j``: fuses ``st.rows[j]`` into ``x [N, hidden]`` (the paper's gated
        value plus its short convolution)."""
        e, hidden = self.engrams[j], self.b.hidden
        key, value = F.linear(st.rows[j].flatten(1), e.w_kv).chunk(2, dim=-1)
        dot = (
            F.rms_norm(key, (hidden,), e.key_norm, EPS).float()
            * F.rms_norm(x, (hidden,), e.query_norm, EPS).float()
        ).sum(-1, keepdim=True)
        dot = dot / math.sqrt(hidden)
        gate = torch.sigmoid(dot.sign() * dot.abs().clamp_min(1e-6).sqrt()).to(torch.bfloat16)
        value = gate * value
        normed = F.rms_norm(value, (hidden,), e.conv_norm, CONV_EPS)
        dilation = self.g.max_ngram
        if isinstance(st, DecodeState):
            seq = torch.cat([st.conv[j], normed.unsqueeze(1)], dim=1)  # [B, history + 1, H]
            conv = sum(e.conv_w[k] * seq[:, k * dilation] for k in range(self.g.kernel))
            st.conv[j].copy_(seq[:, 1:])
        else:
            n = normed.shape[0]
            history = normed.new_zeros(self.g.conv_history, hidden)
            seq = torch.cat([history, normed], dim=0)  # [history + T, H]
            conv = sum(
                e.conv_w[k] * seq[k * dilation : k * dilation + n] for k in range(self.g.kernel)
            )
        return x + value + F.silu(conv)
