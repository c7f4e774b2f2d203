"""The Galileo encoder network (Tseng et al. 2025), written from its published description.

Galileo is a ViT over tokens of four input families. Every channel group of every patch (and timestep) is one
128-d token: a per-group projection plus four additive 32-d encodings (channel group, time position, month,
spatial position). Masked tokens (mask value >= 1) are removed; the visible tokens of a sample form one
sequence for pre-norm transformer blocks; a final LayerNorm is applied to every token (masked positions come
back as zero vectors, hence hold the LayerNorm bias).

Families and tensors (``B`` samples, ``H x W`` pixels, ``T`` timesteps; masks: 1 = masked, 0 = visible):

* space-time ``s_t_x (B, H, W, T, 13)``, ``s_t_m (B, H, W, T, 7)``: VV VH | B2 B3 B4 | B5 B6 B7 | B8 | B8A | B11 B12 | NDVI
* space ``sp_x (B, H, W, 16)``, ``sp_m (B, H, W, 3)``: SRTM (2) | Dynamic World (9) | WorldCereal (5)
* time ``t_x (B, T, 6)``, ``t_m (B, T, 3)``: ERA5 (2) | TerraClimate (3) | VIIRS (1)
* static ``st_x (B, 18)``, ``st_m (B, 4)``: LandScan (1) | location (3) | DW static (9) | WC static (5)

The state-dict layout is that of the published ``encoder.pt`` (``load_state_dict(strict=True)``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError

#: Channel groups per family, in model order: (name, channel indices).
S_T_GROUPS = (("S1", (0, 1)), ("S2_RGB", (2, 3, 4)), ("S2_Red_Edge", (5, 6, 7)), ("S2_NIR_10m", (8,)),
              ("S2_NIR_20m", (9,)), ("S2_SWIR", (10, 11)), ("NDVI", (12,)))
SP_GROUPS = (("SRTM", (0, 1)), ("DW", tuple(range(2, 11))), ("WC", tuple(range(11, 16))))
T_GROUPS = (("ERA5", (0, 1)), ("TC", (2, 3, 4)), ("VIIRS", (5,)))
ST_GROUPS = (("LS", (0,)), ("location", (1, 2, 3)), ("DW_static", tuple(range(4, 13))),
             ("WC_static", tuple(range(13, 18))))
S_T_CHANNELS = ("VV", "VH", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B11", "B12", "NDVI")
BASE_PATCH = 8  # side of the stored patch kernels
MAX_TIMESTEPS = 24


# -- fixed encodings ---------------------------------------------------------------------------------
def time_position_table(n: int = MAX_TIMESTEPS, dim: int = 32) -> torch.Tensor:
    """``(n, dim)``: [sin(t w_k), cos(t w_k)], w_k = 10000^(-k / (2 dim)), k < dim/2 (the stored ``pos_embed``)."""
    k = torch.arange(dim // 2, dtype=torch.float64)
    angle = torch.arange(n, dtype=torch.float64)[:, None] * 10000.0 ** (-k / (2 * dim))
    return torch.cat([angle.sin(), angle.cos()], dim=1).float()


def month_table(dim: int = 32) -> torch.Tensor:
    """``(12, dim)``: dim/2 copies of sin(2 pi m / 12), then dim/2 copies of cos (the stored ``month_embed``)."""
    angle = 2 * math.pi * torch.arange(12, dtype=torch.float64) / 12
    half = dim // 2
    return torch.cat([angle.sin()[:, None].expand(12, half), angle.cos()[:, None].expand(12, half)], dim=1).float()


def spatial_encoding(h: int, w: int, patch_size: int, resolution_m: float = 10.0, dim: int = 32) -> torch.Tensor:
    """``(h, w, dim)``: sin/cos of the column, then of the row, of each token, positions scaled by
    ``resolution_m * patch_size / 10``; frequencies 10000^(-k / dim), k < dim / 4."""
    scale = resolution_m * patch_size / 10.0
    k = torch.arange(dim // 4, dtype=torch.float64)
    freq = 10000.0 ** (-k / dim)
    cols = torch.arange(w, dtype=torch.float64)[:, None] * scale * freq  # (w, dim/4)
    rows = torch.arange(h, dtype=torch.float64)[:, None] * scale * freq  # (h, dim/4)
    col_part = torch.cat([cols.sin(), cols.cos()], dim=1)[None].expand(h, w, dim // 2)
    row_part = torch.cat([rows.sin(), rows.cos()], dim=1)[:, None].expand(h, w, dim // 2)
    return torch.cat([col_part, row_part], dim=2).float()


# -- flexible patch size -----------------------------------------------------------------------------
@lru_cache(maxsize=None)
def kernel_resize_pinv(p: int, base: int = BASE_PATCH) -> torch.Tensor:
    """``(p*p, base*base)`` float32 matrix that turns a flattened ``base x base`` kernel into a ``p x p`` one:
    the pseudo-inverse of the bicubic (antialiased) resize of each one-hot ``base x base`` image."""
    basis = torch.eye(base * base, dtype=torch.float32).reshape(base * base, 1, base, base)
    resized = F.interpolate(basis, size=(p, p), mode="bicubic", antialias=True, align_corners=False)
    return torch.linalg.pinv(resized.reshape(base * base, p * p))


def resize_kernel(weight: torch.Tensor, p: int) -> torch.Tensor:
    """``(out, in, 8, 8)`` kernel -> ``(out, in, p, p)`` (unchanged when ``p`` is the stored size)."""
    base = weight.shape[-1]
    if p == base:
        return weight
    if not 1 <= p <= base:
        raise ConfigError(f"Galileo token size must be 1..{base} px, got {p}")
    pinv = kernel_resize_pinv(p, base).to(device=weight.device, dtype=weight.dtype)
    o, c = weight.shape[:2]
    return (weight.reshape(o, c, base * base) @ pinv.T).reshape(o, c, p, p)


# -- modules -----------------------------------------------------------------------------------------
class PatchProjection(nn.Module):
    """One channel group's patch embedding: an 8x8 kernel, resized to the token size at run time."""

    def __init__(self, in_channels: int, dim: int):
        super().__init__()
        self.proj = nn.Conv2d(in_channels, dim, BASE_PATCH, stride=BASE_PATCH)

    def forward(self, x: torch.Tensor, p: int) -> torch.Tensor:
        """``(N, C, H, W)`` -> ``(N, dim, H // p, W // p)``."""
        return F.conv2d(x, resize_kernel(self.proj.weight, p), self.proj.bias, stride=p)


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.q, self.k, self.v, self.proj = (nn.Linear(dim, dim) for _ in range(4))

    def forward(self, x: torch.Tensor, key_pad: torch.Tensor | None) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = (f(x).reshape(b, n, self.heads, d // self.heads).transpose(1, 2) for f in (self.q, self.k, self.v))
        allowed = None if key_pad is None else ~key_pad[:, None, None, :]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)  # softmax(q k^T / sqrt(16)) v
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))  # exact (erf) GELU


class Block(nn.Module):
    """Pre-norm transformer block."""

    def __init__(self, dim: int, heads: int, mlp_ratio: int):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.mlp = Mlp(dim, dim * mlp_ratio)

    def forward(self, x: torch.Tensor, key_pad: torch.Tensor | None) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), key_pad)
        return x + self.mlp(self.norm2(x))


@dataclass
class GalileoInputs:
    """The four families and their group masks (1 = masked), months ``(B, T)`` 0-11, token size in px."""

    s_t_x: torch.Tensor
    sp_x: torch.Tensor
    t_x: torch.Tensor
    st_x: torch.Tensor
    s_t_m: torch.Tensor
    sp_m: torch.Tensor
    t_m: torch.Tensor
    st_m: torch.Tensor
    months: torch.Tensor
    patch_size: int
    input_resolution_m: float = 10.0


@dataclass
class GalileoOutputs:
    """Tokens per family ``s_t (B, h, w, T, 7, D)``, ``sp (B, h, w, 3, D)``, ``t (B, T, 3, D)``, ``st (B, 4, D)``
    and their token masks (1 = masked)."""

    s_t: torch.Tensor
    sp: torch.Tensor
    t: torch.Tensor
    st: torch.Tensor
    s_t_m: torch.Tensor
    sp_m: torch.Tensor
    t_m: torch.Tensor
    st_m: torch.Tensor


class GalileoEncoder(nn.Module):
    """Galileo encoder; default sizes are Galileo-nano's (width 128, depth 4, 8 heads)."""

    def __init__(self, dim: int = 128, depth: int = 4, heads: int = 8, mlp_ratio: int = 4,
                 max_timesteps: int = MAX_TIMESTEPS):
        super().__init__()
        if dim % 4:
            raise ConfigError(f"Galileo width must be a multiple of 4 (four additive encodings), got {dim}")
        q = dim // 4
        self.dim = dim
        self.pos_embed = nn.Parameter(time_position_table(max_timesteps, q), requires_grad=False)
        self.month_embed = nn.Embedding(12, q)
        with torch.no_grad():
            self.month_embed.weight.copy_(month_table(q))
        self.month_embed.weight.requires_grad_(False)
        for family, groups in (("s_t", S_T_GROUPS), ("sp", SP_GROUPS), ("t", T_GROUPS), ("st", ST_GROUPS)):
            setattr(self, f"{family}_channel_embed", nn.Parameter(0.02 * torch.randn(len(groups), q)))
        self.blocks = nn.ModuleList(Block(dim, heads, mlp_ratio) for _ in range(depth))
        self.space_time_embed = nn.ModuleDict({n: PatchProjection(len(c), dim) for n, c in S_T_GROUPS})
        self.space_embed = nn.ModuleDict({n: PatchProjection(len(c), dim) for n, c in SP_GROUPS})
        self.time_embed = nn.ModuleDict({n: nn.Linear(len(c), dim) for n, c in T_GROUPS})
        self.static_embed = nn.ModuleDict({n: nn.Linear(len(c), dim) for n, c in ST_GROUPS})
        self.norm = nn.LayerNorm(dim)

    # -- tokens --------------------------------------------------------------------------------
    def embed(self, inp: GalileoInputs) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Projected tokens plus encodings (the first block's input) and token masks, per family."""
        p = int(inp.patch_size)
        b, hh, ww, t = inp.s_t_x.shape[:4]
        if hh % p or ww % p:
            raise ConfigError(f"image of {hh}x{ww} px is not a whole number of {p} px tokens")
        if t > self.pos_embed.shape[0]:
            raise ConfigError(f"Galileo takes at most {self.pos_embed.shape[0]} timesteps, got {t}")
        h, w, q = hh // p, ww // p, self.dim // 4
        dev = inp.s_t_x.device
        zeros = torch.zeros(q, device=dev)
        # space-time: one image per (sample, timestep)
        st_img = inp.s_t_x.permute(0, 3, 4, 1, 2).reshape(b * t, -1, hh, ww)
        s_t = torch.stack([self.space_time_embed[n](st_img[:, list(c)], p) for n, c in S_T_GROUPS], dim=1)
        s_t = s_t.reshape(b, t, len(S_T_GROUPS), self.dim, h, w).permute(0, 4, 5, 1, 2, 3)  # (B, h, w, T, G, D)
        sp_img = inp.sp_x.permute(0, 3, 1, 2)
        sp = torch.stack([self.space_embed[n](sp_img[:, list(c)], p) for n, c in SP_GROUPS], dim=1)
        sp = sp.permute(0, 3, 4, 1, 2)  # (B, h, w, G, D)
        tt = torch.stack([self.time_embed[n](inp.t_x[..., list(c)]) for n, c in T_GROUPS], dim=2)  # (B, T, G, D)
        st = torch.stack([self.static_embed[n](inp.st_x[..., list(c)]) for n, c in ST_GROUPS], dim=1)  # (B, G, D)

        space = spatial_encoding(h, w, p, float(inp.input_resolution_m), q).to(dev)  # (h, w, q)
        time_pos = self.pos_embed[:t]  # (T, q)
        month = self.month_embed(inp.months.long())  # (B, T, q)
        s_t = s_t + torch.cat([
            self.s_t_channel_embed[None, None, None, None].expand(b, h, w, t, -1, -1),
            time_pos[None, None, None, :, None].expand(b, h, w, t, len(S_T_GROUPS), q),
            month[:, None, None, :, None].expand(b, h, w, t, len(S_T_GROUPS), q),
            space[None, :, :, None, None].expand(b, h, w, t, len(S_T_GROUPS), q)], dim=-1)
        sp = sp + torch.cat([
            self.sp_channel_embed[None, None, None].expand(b, h, w, -1, -1),
            zeros.expand(b, h, w, len(SP_GROUPS), q), zeros.expand(b, h, w, len(SP_GROUPS), q),
            space[None, :, :, None].expand(b, h, w, len(SP_GROUPS), q)], dim=-1)
        tt = tt + torch.cat([
            self.t_channel_embed[None, None].expand(b, t, -1, -1),
            time_pos[None, :, None].expand(b, t, len(T_GROUPS), q),
            month[:, :, None].expand(b, t, len(T_GROUPS), q),
            zeros.expand(b, t, len(T_GROUPS), q)], dim=-1)
        st = st + torch.cat([self.st_channel_embed[None].expand(b, -1, -1), st.new_zeros(b, len(ST_GROUPS), 3 * q)], dim=-1)
        masks = {"s_t": inp.s_t_m[:, ::p, ::p], "sp": inp.sp_m[:, ::p, ::p], "t": inp.t_m, "st": inp.st_m}  # top-left pixel
        return {"s_t": s_t, "sp": sp, "t": tt, "st": st}, masks

    # -- transformer ---------------------------------------------------------------------------
    def transform(self, x: torch.Tensor, visible: torch.Tensor) -> torch.Tensor:
        """``(B, N, D)`` tokens, ``(B, N)`` bool -> final tokens; only visible tokens take part, the others come
        back as zero vectors before the final LayerNorm."""
        b, n, d = x.shape
        counts = visible.sum(dim=1)
        keep = int(counts.max()) if b else 0
        out = torch.zeros_like(x)
        if keep:
            order = torch.argsort((~visible).to(torch.uint8), dim=1, stable=True)[:, :keep]  # visible first
            index = order[..., None].expand(b, keep, d)
            seq = torch.gather(x, 1, index)
            pad = torch.arange(keep, device=x.device)[None] >= counts[:, None]
            key_pad = pad if bool(pad.any()) else None
            for block in self.blocks:
                seq = block(seq, key_pad)
            out.scatter_(1, index, torch.where(pad[..., None], torch.zeros_like(seq), seq))
        return self.norm(out)

    def forward(self, inp: GalileoInputs) -> GalileoOutputs:
        tokens, masks = self.embed(inp)
        b = inp.s_t_x.shape[0]
        flat = torch.cat([tokens[k].reshape(b, -1, self.dim) for k in ("s_t", "sp", "t", "st")], dim=1)
        visible = torch.cat([masks[k].reshape(b, -1) for k in ("s_t", "sp", "t", "st")], dim=1) < 1
        out = self.transform(flat, visible)
        parts, start = {}, 0
        for k in ("s_t", "sp", "t", "st"):
            size = tokens[k][..., 0].numel() // b
            parts[k] = out[:, start:start + size].reshape(tokens[k].shape)
            start += size
        return GalileoOutputs(**parts, **{f"{k}_m": m for k, m in masks.items()})


# -- pooling -----------------------------------------------------------------------------------------
def _visible_sum(tokens: torch.Tensor, mask: torch.Tensor, dims: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    v = (mask < 1).to(tokens.dtype)
    return (tokens * v[..., None]).sum(dim=dims), v.sum(dim=dims)


def pool(out: GalileoOutputs) -> torch.Tensor:
    """``(B, D)``: the mean of every visible output token of each sample."""
    parts = [_visible_sum(out.s_t, out.s_t_m, (1, 2, 3, 4)), _visible_sum(out.sp, out.sp_m, (1, 2, 3)),
             _visible_sum(out.t, out.t_m, (1, 2)), _visible_sum(out.st, out.st_m, (1,))]
    return sum(s for s, _ in parts) / sum(c for _, c in parts)[:, None]


def pool_per_patch(out: GalileoOutputs) -> torch.Tensor:
    """``(B, h, w, D)``: per token cell, the mean of its visible space-time and space tokens (all timesteps and
    groups) and of every visible time and static token (these belong to every cell)."""
    s1, c1 = _visible_sum(out.s_t, out.s_t_m, (3, 4))
    s2, c2 = _visible_sum(out.sp, out.sp_m, (3,))
    s3, c3 = _visible_sum(out.t, out.t_m, (1, 2))
    s4, c4 = _visible_sum(out.st, out.st_m, (1,))
    total = s1 + s2 + (s3 + s4)[:, None, None]
    count = c1 + c2 + (c3 + c4)[:, None, None]
    return total / count[..., None]
