"""Transformer parts shared by the teacher and the student.

Tokens are laid out (B, T, P, D): T time bins, P spatial patches per bin, D dims.
Attention runs over the flattened T*P tokens; the rotary position of a token is its
time bin (all patches of a bin share it), so patches are told apart by their learned
per-session patch embedding, and time by rotation.

Masks (additive, 0 or -inf, shape (T*P, T*P)) are built from bin indices:
  causal=False, window=0  -> every token sees every token (bidirectional)
  causal=True,  window=0  -> a token sees all tokens of its own and earlier bins
  causal=True,  window=W  -> ... of its own and the W-1 previous bins (sliding window;
                             what a KV cache of W-1 bins reproduces step by step)
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import nn


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rotary_tables(positions: torch.Tensor, head_dim: int, base: float = 10000.0) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin of shape (N, head_dim // 2) for float positions (N,)."""
    inv = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    ang = positions.to(torch.float32)[:, None] * inv[None, :]  # (N, hd/2)
    return ang.cos(), ang.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x (B, H, N, hd) rotated pairwise (first half, second half) by cos/sin (N, hd/2)."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


def bin_mask(n_bins: int, n_patches: int, causal: bool, window: int = 0) -> torch.Tensor | None:
    """Additive attention mask (T*P, T*P) over flattened tokens, or None when all-visible.
    Cached per shape (it is rebuilt on every forward otherwise; treat it as read-only)."""
    return _bin_mask(int(n_bins), int(n_patches), bool(causal), int(window))


@functools.lru_cache(maxsize=32)
def _bin_mask(n_bins: int, n_patches: int, causal: bool, window: int) -> torch.Tensor | None:
    if not causal and window <= 0:
        return None
    t = torch.arange(n_bins).repeat_interleave(n_patches)  # (N,) bin of each token
    d = t[:, None] - t[None, :]  # query bin - key bin
    ok = torch.ones_like(d, dtype=torch.bool)
    if causal:
        ok = ok & (d >= 0)
    if window > 0:
        ok = ok & (d.abs() < window)
    return torch.zeros(ok.shape).masked_fill(~ok, float("-inf"))


class SwiGLU(nn.Module):
    """Gated SiLU MLP: W2(silu(W1 x) * W3 x)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.w1 = nn.Linear(dim, hidden, bias=False)
        self.w3 = nn.Linear(dim, hidden, bias=False)
        self.w2 = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, dim: int, n_heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        if dim % n_heads or (dim // n_heads) % 2:
            raise ValueError(f"dim {dim} must split into {n_heads} heads of an even size")
        self.n_heads, self.head_dim = n_heads, dim // n_heads
        self.norm1 = RMSNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.proj = nn.Linear(dim, dim, bias=False)
        self.norm2 = RMSNorm(dim)
        self.mlp = SwiGLU(dim, int(round(dim * mlp_ratio * 2 / 3 / 8)) * 8 or 8)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:  # (B, N, D) -> (B, H, N, hd)
        b, n, _ = x.shape
        return x.view(b, n, self.n_heads, self.head_dim).transpose(1, 2)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        b, n, d = x.shape  # (B, N=T*P, D)
        q, k, v = self.qkv(self.norm1(x)).split(d, dim=-1)
        q, k, v = self._heads(q), self._heads(k), self._heads(v)  # (B, H, N, hd)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        y = attention(q, k, v, mask)  # (B, H, N, hd)
        x = x + self.proj(y.transpose(1, 2).reshape(b, n, d))
        return x + self.mlp(self.norm2(x))

    def step(
        self,
        x: torch.Tensor,  # (B, P, D): the newest bin's tokens
        k_cache: torch.Tensor,  # (B, C, P, D): un-rotated keys of the C previous bins, oldest first
        v_cache: torch.Tensor,  # (B, C, P, D)
        cos: torch.Tensor,  # (C*P + P, hd/2): positions of cached then new tokens
        sin: torch.Tensor,
        mask: torch.Tensor,  # (1, 1, 1, C*P + P) additive: -inf on cache slots not yet filled
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One streaming step; returns (x_out (B, P, D), k_new (B, P, D), v_new (B, P, D))."""
        b, p, d = x.shape
        c = k_cache.shape[1]
        q, k, v = self.qkv(self.norm1(x)).split(d, dim=-1)  # (B, P, D) each
        keys = torch.cat([k_cache.reshape(b, c * p, d), k], dim=1)  # (B, (C+1)P, D)
        vals = torch.cat([v_cache.reshape(b, c * p, d), v], dim=1)
        q = apply_rotary(self._heads(q), cos[-p:], sin[-p:])  # (B, H, P, hd)
        keys = apply_rotary(self._heads(keys), cos, sin)  # (B, H, (C+1)P, hd)
        y = attention(q, keys, self._heads(vals), mask)  # (B, H, P, hd)
        x = x + self.proj(y.transpose(1, 2).reshape(b, p, d))
        return x + self.mlp(self.norm2(x)), k, v


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Plain softmax attention (exports to ONNX as MatMul/Softmax on every opset)."""
    att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(q.shape[-1]))  # (B, H, Nq, Nk)
    if mask is not None:
        att = att + mask
    return att.softmax(dim=-1) @ v


class Encoder(nn.Module):
    """A stack of blocks over (B, T, P, D) tokens with rotary time positions."""

    def __init__(self, dim: int, n_layers: int, n_heads: int, mlp_ratio: float = 4.0, causal: bool = True, window: int = 0):
        super().__init__()
        self.dim, self.causal, self.window = dim, causal, window
        self.blocks = nn.ModuleList(Block(dim, n_heads, mlp_ratio) for _ in range(n_layers))
        self.norm = RMSNorm(dim)

    @property
    def head_dim(self) -> int:
        return self.blocks[0].head_dim

    def forward(self, tok: torch.Tensor) -> torch.Tensor:
        b, t, p, d = tok.shape  # (B, T, P, D)
        pos = torch.arange(t, device=tok.device).repeat_interleave(p)  # (T*P,) bin index per token
        cos, sin = rotary_tables(pos, self.head_dim)
        mask = bin_mask(t, p, self.causal, self.window)
        x = tok.reshape(b, t * p, d)
        for blk in self.blocks:
            x = blk(x, cos, sin, mask)
        return self.norm(x).view(b, t, p, d)  # (B, T, P, D)

    def step(self, tok: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, n_seen: torch.Tensor):
        """Streaming: tok (B, P, D) of the newest bin; caches (L, B, C, P, D) of the C = window-1
        previous bins (un-rotated keys, values, per layer); n_seen (1,) float: bins seen before
        (saturates at C). Returns (out (B, P, D), new k cache, new v cache, new n_seen)."""
        b, p, d = tok.shape
        c = k_cache.shape[2]
        pos = torch.arange(c + 1, device=tok.device).repeat_interleave(p)  # newest bin at position C
        cos, sin = rotary_tables(pos, self.head_dim)
        # cache slot j (bin j of C) is filled once n_seen >= C - j
        slot = torch.arange(c + 1, device=tok.device).repeat_interleave(p).to(torch.float32)
        valid = slot >= (c - n_seen.to(torch.float32))
        mask = torch.zeros(valid.shape).masked_fill(~valid, float("-inf")).view(1, 1, 1, -1)
        x = tok
        ks, vs = [], []
        for i, blk in enumerate(self.blocks):
            x, k, v = blk.step(x, k_cache[i], v_cache[i], cos, sin, mask)
            ks.append(torch.cat([k_cache[i][:, 1:], k.unsqueeze(1)], dim=1))  # drop oldest, append newest
            vs.append(torch.cat([v_cache[i][:, 1:], v.unsqueeze(1)], dim=1))
        return self.norm(x), torch.stack(ks), torch.stack(vs), torch.clamp(n_seen + 1, max=float(c))
