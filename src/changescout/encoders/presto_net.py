"""The Presto encoder network (Tseng et al. 2023), written from its description, loading the published weights.

Presto embeds the time series of ONE pixel. Its inputs, per pixel and timestep, are 17 normalised channels
(:data:`CHANNELS`), a mask of the same shape (1 = missing), a Dynamic World class (9 = missing), the month
(0-11, January = 0) and, per pixel, the location (latitude, longitude) in degrees.

* Tokens: each channel group (:data:`GROUPS`, in the model's order) at each timestep is projected to 128 dims
  by its own linear layer, then an encoding is added: ``[month (32) | channel-group (32) | position (64)]``.
  SRTM gives one token (timestep 0, encoding without month and position); Dynamic World one token per
  timestep (a class embedding). A token is masked when any channel of its group is masked.
* Sequence: group-major (all timesteps of a group, then the next group), masked tokens dropped, a location
  token (a linear map of the unit vector of the position on the sphere) first. Attention has no positional
  bias, so dropped tokens are equivalent to tokens excluded by a key-padding mask: here every sample keeps
  its visible tokens packed at the front, padded to the batch's longest, so pixels with different numbers of
  missing tokens share a batch (the published implementation requires equal counts).
* Two pre-norm transformer blocks (8 heads of 16 dims, exact GELU, MLP 128-512-128), a final LayerNorm.
  The pooled embedding is the final LayerNorm of the MEAN of the block outputs over the visible tokens
  (location included), not the mean of the normed tokens.

Only the ``encoder.*`` entries of the weights file are used; the ``decoder.*`` entries (pre-training
reconstruction head) are dropped.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError

#: The 17 input channels, in order (the last axis of ``x`` and ``mask``).
CHANNELS = ("VV", "VH", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B11", "B12",
            "temperature_2m", "total_precipitation", "elevation", "slope", "NDVI")
#: Channel groups in the model's order (index = row of the channel embedding); Dynamic World is group 9.
GROUPS = {
    "S1": (0, 1), "S2_RGB": (2, 3, 4), "S2_Red_Edge": (5, 6, 7), "S2_NIR_10m": (8,), "S2_NIR_20m": (9,),
    "S2_SWIR": (10, 11), "ERA5": (12, 13), "SRTM": (14, 15), "NDVI": (16,),
}
SRTM_GROUP, DW_GROUP, DW_CLASSES, DW_MISSING = 7, 9, 10, 9
#: Published input normalisation: ``(raw + add) / divide``; S2 raw values are digital numbers (reflectance x 1e4).
NORM_ADD = np.array([25, 25] + [0] * 10 + [-272.15, 0, 0, 0, 0], np.float64)
NORM_DIV = np.array([25, 25] + [10000] * 10 + [35, 0.03, 2000, 50, 1], np.float64)

DIM, DEPTH, HEADS, MLP_HIDDEN, MAX_STEPS, MONTH_DIM, CHANNEL_DIM = 128, 2, 8, 512, 24, 32, 32
POS_DIM = DIM - MONTH_DIM - CHANNEL_DIM


def month_table() -> torch.Tensor:
    """``(12, 32)``: row m = 16 copies of sin(2 pi m / 12), then 16 copies of cos (the stored table)."""
    angle = 2 * math.pi * torch.arange(12, dtype=torch.float64) / 12
    half = MONTH_DIM // 2
    return torch.cat([angle.sin()[:, None].expand(12, half), angle.cos()[:, None].expand(12, half)], 1).float()


def position_table(steps: int = MAX_STEPS, dim: int = POS_DIM) -> torch.Tensor:
    """``(steps, dim)``: angle t / 1000 ** (2 floor(j / 2) / dim), sin on even and cos on odd dims."""
    j = torch.arange(dim, dtype=torch.float64)
    angle = torch.arange(steps, dtype=torch.float64)[:, None] / 1000.0 ** (2 * (j // 2) / dim)[None]
    return torch.where(j % 2 == 0, angle.sin(), angle.cos()).float()


def latlon_unit(latlons: torch.Tensor) -> torch.Tensor:
    """``(..., 2)`` (latitude, longitude) degrees -> ``(..., 3)`` unit vector (cos φ cos λ, cos φ sin λ, sin φ)."""
    phi, lam = torch.deg2rad(latlons[..., 0]), torch.deg2rad(latlons[..., 1])
    return torch.stack([phi.cos() * lam.cos(), phi.cos() * lam.sin(), phi.sin()], dim=-1)


class Attention(nn.Module):
    """Multi-head self-attention with one fused ``qkv`` projection; ``pad`` (B, L) True = key ignored."""

    def __init__(self):
        super().__init__()
        self.qkv = nn.Linear(DIM, 3 * DIM)
        self.proj = nn.Linear(DIM, DIM)

    def forward(self, x: torch.Tensor, pad: torch.Tensor | None) -> torch.Tensor:
        b, n, _ = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, HEADS, DIM // HEADS).permute(2, 0, 3, 1, 4)
        keep = None if pad is None else ~pad[:, None, None, :]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=keep, scale=(DIM // HEADS) ** -0.5)
        return self.proj(out.transpose(1, 2).reshape(b, n, DIM))


class Mlp(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(DIM, MLP_HIDDEN)
        self.fc2 = nn.Linear(MLP_HIDDEN, DIM)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))  # exact (erf) GELU


class Block(nn.Module):
    """Pre-norm transformer block: attention, then MLP, each added back to the input."""

    def __init__(self):
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(DIM, eps=1e-5), Attention()
        self.norm2, self.mlp = nn.LayerNorm(DIM, eps=1e-5), Mlp()

    def forward(self, x: torch.Tensor, pad: torch.Tensor | None) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), pad)
        return x + self.mlp(self.norm2(x))


class PrestoNet(nn.Module):
    """The Presto encoder; parameter names are those of the ``encoder.*`` weights without the prefix."""

    def __init__(self):
        super().__init__()
        self.pos_embed = nn.Parameter(position_table()[None], requires_grad=False)
        self.eo_patch_embed = nn.ModuleDict({g: nn.Linear(len(ch), DIM) for g, ch in GROUPS.items()})
        self.dw_embed = nn.Embedding(DW_CLASSES, DIM)
        self.latlon_embed = nn.Linear(3, DIM)
        self.blocks = nn.ModuleList(Block() for _ in range(DEPTH))
        self.norm = nn.LayerNorm(DIM, eps=1e-5)
        self.month_embed = nn.Embedding(12, MONTH_DIM)
        self.month_embed.weight.data.copy_(month_table())
        self.month_embed.weight.requires_grad_(False)
        self.channel_embed = nn.Embedding(len(GROUPS) + 1, CHANNEL_DIM)

    # -- tokens ------------------------------------------------------------------------------------
    def _encoding(self, group: int, months: torch.Tensor) -> torch.Tensor:
        """``(B, T, 128)`` = [month | channel row ``group`` | position]."""
        b, t = months.shape
        chan = self.channel_embed.weight[group].expand(b, t, CHANNEL_DIM)
        pos = self.pos_embed[0, :t].expand(b, t, POS_DIM)
        return torch.cat([self.month_embed(months), chan, pos], dim=-1)

    def sequence(self, x, mask, dynamic_world, latlons, months) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The token sequence (location first, then group-major): ``(seq (B, L, 128), hidden (B, L) bool: True
        = masked, index (L,): position of each token in the full 9T + 2 sequence)``. Groups masked in every
        sample of the batch are left out (they would be dropped anyway): only a matter of speed."""
        b, t, c = x.shape
        if c != len(CHANNELS) or mask.shape != x.shape or t < 1 or t > MAX_STEPS:
            raise ConfigError(f"presto takes x and mask of shape (batch, 1..{MAX_STEPS} steps, {len(CHANNELS)}), "
                              f"got {tuple(x.shape)} and {tuple(mask.shape)}")
        tokens = [self.latlon_embed(latlon_unit(latlons))[:, None]]
        hidden = [torch.zeros(b, 1, dtype=torch.bool, device=x.device)]
        index, start = [torch.zeros(1, dtype=torch.long)], 1
        for g, (name, chans) in enumerate([*GROUPS.items(), ("dynamic_world", ())]):
            n = 1 if g == SRTM_GROUP else t
            if g == DW_GROUP:
                gmask = dynamic_world == DW_MISSING
            else:
                gmask = (mask[:, :n, list(chans)] > 0).any(dim=-1)
            if not bool(gmask.all()):
                tokens.append(self._group_tokens(g, x, dynamic_world, months))
                hidden.append(gmask)
                index.append(torch.arange(start, start + n))
            start += n
        return torch.cat(tokens, dim=1), torch.cat(hidden, dim=1), torch.cat(index).to(x.device)

    def _group_tokens(self, g: int, x, dynamic_world, months) -> torch.Tensor:
        """Tokens of group ``g`` with their encodings: ``(B, T, 128)``, or ``(B, 1, 128)`` for SRTM."""
        if g == DW_GROUP:
            return self.dw_embed(dynamic_world) + self._encoding(g, months)
        name, chans = list(GROUPS.items())[g]
        if g == SRTM_GROUP:  # one token, from timestep 0; channel encoding only
            enc = torch.zeros(DIM, dtype=x.dtype, device=x.device)
            enc[MONTH_DIM:MONTH_DIM + CHANNEL_DIM] = self.channel_embed.weight[g]
            return self.eo_patch_embed[name](x[:, :1, list(chans)]) + enc
        return self.eo_patch_embed[name](x[..., list(chans)]) + self._encoding(g, months)

    @staticmethod
    def pack(seq: torch.Tensor, hidden: torch.Tensor, index: torch.Tensor):
        """Visible tokens moved to the front in sequence order, cut to the longest: ``(packed, pad, order)``;
        ``order[i, j]`` is the position in the full sequence of packed token j, ``pad`` True on fillers."""
        if not bool(hidden.any()):
            return seq, hidden, index.expand(seq.shape[0], -1)
        order = torch.sort(hidden.to(torch.uint8), dim=1, stable=True).indices
        order = order[:, : int((~hidden).sum(dim=1).max())]
        packed = torch.gather(seq, 1, order[..., None].expand(-1, -1, seq.shape[-1]))
        return packed, torch.gather(hidden, 1, order), index[order]

    def blocks_out(self, packed: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        """The transformer blocks (before the final LayerNorm)."""
        key_pad = pad if bool(pad.any()) else None
        for block in self.blocks:
            packed = block(packed, key_pad)
        return packed

    def pool(self, out: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        """Final LayerNorm of the mean of the block outputs over visible tokens: ``(B, 128)``."""
        w = (~pad).to(out.dtype)[..., None]
        return self.norm((out * w).sum(dim=1) / w.sum(dim=1))

    def forward(self, x, mask, dynamic_world, latlons, months) -> torch.Tensor:
        """``x``, ``mask`` (B, T, 17) float, ``dynamic_world`` (B, T) int, ``latlons`` (B, 2) degrees,
        ``months`` (B, T) int 0-11 -> pooled embedding ``(B, 128)``."""
        packed, pad, _ = self.pack(*self.sequence(x, mask, dynamic_world, latlons, months))
        return self.pool(self.blocks_out(packed, pad), pad)

    def tokens(self, x, mask, dynamic_world, latlons, months) -> dict[str, torch.Tensor]:
        """Intermediates, for checks: ``embedded`` (packed sequence entering the blocks), ``tokens`` (after the
        final LayerNorm), ``pad``, ``order`` (positions in the location-first sequence) and ``pooled``."""
        packed, pad, order = self.pack(*self.sequence(x, mask, dynamic_world, latlons, months))
        out = self.blocks_out(packed, pad)
        return {"embedded": packed, "tokens": self.norm(out), "pad": pad, "order": order, "pooled": self.pool(out, pad)}
