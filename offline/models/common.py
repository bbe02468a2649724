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

import contextlib
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

    def step_ring(
        self,
        x: torch.Tensor,  # (B, P, D): the newest bin's tokens
        k_ring: torch.Tensor,  # (B, H, hd, R, P): keys of the last R bins, stored transposed, rotated when written
        v_ring: torch.Tensor,  # (B, H, R, P, hd)
        idx_k: torch.Tensor,  # (B, H, hd, 4) int64: [b, h, i, slot] of the newest bin
        idx_v: torch.Tensor,  # (B, H, 3) int64: [b, h, slot]
        rot: torch.Tensor,  # (hd, hd): rotary rotation at the newest bin's position (x @ rot)
        mask: torch.Tensor,  # (R*P,) additive: -inf on slots not yet written
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One streaming step on a ring cache (see `Encoder.step_ring`); returns
        (x_out (B, P, D), new k ring, new v ring): the rings with the newest bin written."""
        b, p, d = x.shape
        h, r, hd = self.n_heads, v_ring.shape[2], self.head_dim
        qkv = self.qkv(self.norm1(x)).view(b, p, 3 * h, hd).transpose(1, 2)  # (B, 3H, P, hd)
        q, k, v = qkv.split(h, dim=1)  # (B, H, P, hd) each
        q, k = q @ rot, k @ rot  # query and key at the same position; the key is rotated once, here
        if _IN_PLACE[0] and not torch.is_grad_enabled():  # offline evaluation: no copy of the rings
            slot = int(idx_v[0, 0, 2])
            k_ring[:, :, :, slot] = k.transpose(-2, -1)
            v_ring[:, :, slot] = v
        else:  # the exported graph: one ScatterND each
            k_ring = write_slot(k_ring, idx_k, k.transpose(-2, -1))  # (B, H, hd, P) into slot
            v_ring = write_slot(v_ring, idx_v, v)
        att = (q @ k_ring.view(b, h, hd, r * p)) * (1.0 / math.sqrt(hd)) + mask  # (B, H, P, R*P), no transpose
        y = att.softmax(dim=-1) @ v_ring.view(b, h, r * p, hd)  # (B, H, P, hd)
        x = x + self.proj(y.transpose(1, 2).reshape(b, p, d))
        return x + self.mlp(self.norm2(x)), k_ring, v_ring


_IN_PLACE = [False]


@contextlib.contextmanager
def rings_in_place():
    """Within it, `Block.step_ring` under no_grad writes the newest bin into the rings it is
    given (eager, no copy) instead of returning new ones: the same numbers, in less time
    (session 11, one ad-hoc measurement on a 12,000-bin session: 3.3-4.2 s against 5.0-5.5 s;
    the evaluation stages about 13 % shorter) for `offline.train.distill.streaming_latents`. The rings
    passed in are changed, so only a caller that owns them may use it; export and training
    (grad enabled, or outside the context) keep the functional ScatterND."""
    prev = _IN_PLACE[0]
    _IN_PLACE[0] = True
    try:
        yield
    finally:
        _IN_PLACE[0] = prev


class _WriteSlot(torch.autograd.Function):
    """ring with ring[idx[..., 0], ..., idx[..., k-1]] = upd; one ONNX ScatterND (its output
    may alias its input, which is what lets a backend update the ring in place)."""

    @staticmethod
    def forward(ctx, ring, idx, upd):
        out = ring.clone()
        out[tuple(idx[..., i] for i in range(idx.shape[-1]))] = upd
        return out

    @staticmethod
    def symbolic(g, ring, idx, upd):
        return g.op("ScatterND", ring, idx, upd)


def write_slot(ring: torch.Tensor, idx: torch.Tensor, upd: torch.Tensor) -> torch.Tensor:
    """ring (d0, .., dn), idx (..., k) int64, upd (..., d_k, .., dn) -> ring with those slots replaced."""
    return _WriteSlot.apply(ring, idx, upd)


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

    def step_ring(self, tok: torch.Tensor, k_rings: list[torch.Tensor], v_rings: list[torch.Tensor], n: torch.Tensor,
                  phase: torch.Tensor):  # fmt: skip
        """Streaming on a ring cache: the same outputs as `step` (window W = R bins) without
        moving or re-rotating the cache.

        tok (B, P, D): the newest bin's tokens. k_rings: per layer (B, H, hd, R, P), keys
        stored transposed (scores are q @ keys, no transpose); v_rings: (B, H, R, P, hd).
        Bin t sits in slot t mod R, its keys rotated once, when written, at t's position.
        n (1,) float: bins seen, folded into [0, 2R) (t < R: t, then R + t mod R), which
        gives the slot and which slots are written. phase (hd/2,) float: the rotary angle of
        the current lap's first bin (bin R*floor(t/R)), modulo 2 pi; zero state = position 0.
        Returns (out (B, P, D), new k rings, new v rings, new n, new phase).

        Position t's angles are phase + s * inv_freq (s = t mod R): every number stays small,
        so a stream of any length keeps the precision of the first lap. Scores depend on
        angle differences only; the difference between a key of the previous lap and the
        query is (phase - previous phase) + (s - j) * inv_freq, where the phase step is one
        float32 addition of R * inv_freq: exact to rounding, however many laps have passed."""
        b, p, _ = tok.shape
        r, hd = v_rings[0].shape[2], self.head_dim
        h, dev = self.blocks[0].n_heads, tok.device
        n = n.to(torch.float32)
        slot_f = n - torch.floor(n / r) * r  # (1,) the newest bin's slot
        slot = slot_f.to(torch.int64)
        inv = 1.0 / (10000.0 ** (torch.arange(0, hd, 2, dtype=torch.float32, device=dev) / hd))  # as rotary_tables
        ang = phase + slot_f * inv  # (hd/2,)
        c, s = torch.cat([ang.cos(), ang.cos()]), torch.cat([ang.sin(), ang.sin()])  # (hd,)
        # x @ rot == apply_rotary(x, cos, sin): out[:h2] = x1 c - x2 s, out[h2:] = x1 s + x2 c
        eye = torch.eye(hd, device=dev)
        swap = torch.roll(eye, hd // 2, dims=1) * torch.cat([torch.ones(hd // 2, device=dev), -torch.ones(hd // 2, device=dev)]).view(hd, 1)
        rot = eye * c + swap * s  # (hd, hd)
        grid = torch.stack(torch.meshgrid(torch.arange(b), torch.arange(h), torch.arange(hd), indexing="ij"), -1).to(dev)
        idx_k = torch.cat([grid, slot.view(1, 1, 1, 1).expand(b, h, hd, 1)], dim=-1)  # (B, H, hd, 4): [b, h, i, slot]
        idx_v = torch.cat([grid[:, :, 0, :2], slot.view(1, 1, 1).expand(b, h, 1)], dim=-1)  # (B, H, 3): [b, h, slot]
        j = torch.arange(r, device=dev).repeat_interleave(p).to(torch.float32)  # (R*P,) slot of each cached token
        mask = torch.zeros(r * p, device=dev).masked_fill(j > n, float("-inf"))  # written before (or now)
        x = tok
        ks, vs = [], []
        for blk, kr, vr in zip(self.blocks, k_rings, v_rings):
            x, kr, vr = blk.step_ring(x, kr, vr, idx_k, idx_v, rot, mask)
            ks.append(kr)
            vs.append(vr)
        n1 = n + 1
        lap_end = (slot_f == r - 1).to(torch.float32)  # the next bin starts a lap
        step = torch.remainder(r * inv.double(), 2 * math.pi).to(torch.float32)  # a lap's angle, mod 2 pi (constant)
        ph = phase + lap_end * step
        ph = torch.where(ph >= 2 * math.pi, ph - 2 * math.pi, ph)  # stays in [0, 2 pi)
        return self.norm(x), ks, vs, torch.where(n1 >= 2 * r, n1 - r, n1), ph
