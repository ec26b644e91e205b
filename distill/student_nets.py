"""The image and sequence students: a residual CNN for (C, H, W) images, and a GRU and a
transformer encoder for (T, F) float sequences or (T,) int64 token ids.

Each family's parameter schema and exact parameter count live in catalog/students.py; a
test holds the count equal to these modules'. Every module here exports to ONNX with the
dynamo exporter (plain ops: no fused attention kernels, no packed sequences). A token
student sets `token_input`, so the engine feeds it int64 ids rather than floats.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from catalog.students import CNN2dParams, GRUParams, TransformerParams


def _conv_bn(c_in: int, c_out: int, k: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, k, stride=stride, padding=k // 2, bias=False),
        nn.BatchNorm2d(c_out),
    )


class BasicBlock(nn.Module):
    """He et al. 2016 (arXiv:1512.03385): y = ReLU(BN(conv(ReLU(BN(conv(x))))) + s(x)),
    s the identity, or a 1x1 conv + BN where the stride or the width changes."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = _conv_bn(c_in, c_out, 3, stride)
        self.conv2 = _conv_bn(c_out, c_out, 3)
        self.shortcut: nn.Module = (
            _conv_bn(c_in, c_out, 1, stride) if stride != 1 or c_in != c_out else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, c_in, H, W) -> (B, c_out, H', W')
        return F.relu(self.conv2(F.relu(self.conv1(x))) + self.shortcut(x))


class CNN2d(nn.Module):
    """Conv 3x3 stem -> stages of BasicBlocks (stride 2 into every stage after the first)
    -> global average pool -> Linear. A (H, W) sample is read as one channel."""

    token_input = False

    def __init__(self, p: CNN2dParams, input_shape: tuple[int, ...], num_classes: int):
        super().__init__()
        self.in_shape = input_shape if len(input_shape) == 3 else (1, *input_shape)
        c_in = self.in_shape[0]
        stem = nn.Sequential(*_conv_bn(c_in, p.channels[0], 3), nn.ReLU())
        stages: list[nn.Module] = [stem]
        c_in = p.channels[0]
        for i, c_out in enumerate(p.channels):
            blocks = []
            for b in range(p.blocks):
                blocks.append(BasicBlock(c_in, c_out, 2 if i > 0 and b == 0 else 1))
                c_in = c_out
            stages.append(nn.Sequential(*blocks))
        self.features = nn.Sequential(*stages)
        self.head = nn.Linear(c_in, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, ...) -> (B, classes)
        h = self.features(x.reshape(x.shape[0], *self.in_shape))  # (B, C', H', W')
        return self.head(h.mean(dim=(2, 3)))  # (B, C') -> (B, classes)


class GRUNet(nn.Module):
    """Cho et al. 2014 (arXiv:1406.1078). [Embedding ->] GRU -> the final hidden state
    (forward and backward concatenated when bidirectional) -> Linear.

    Samples: (T, F) floats, (T,) floats read as one feature per step, or (T,) int64 ids."""

    def __init__(self, p: GRUParams, input_shape: tuple[int, ...], num_classes: int):
        super().__init__()
        self.token_input = p.vocab_size is not None
        self.in_shape = input_shape if len(input_shape) == 2 else (input_shape[0], 1)
        self.embed: nn.Module = (
            nn.Embedding(p.vocab_size, p.embed_dim) if p.vocab_size is not None else nn.Identity()
        )
        self.gru = nn.GRU(
            p.embed_dim if self.token_input else self.in_shape[1],
            p.hidden,
            num_layers=p.layers,
            batch_first=True,
            bidirectional=p.bidirectional,
        )
        self.directions = 2 if p.bidirectional else 1
        width = p.hidden * self.directions
        self.sequence = nn.Identity()  # feature layer: every step's output (B, T, width)
        self.features = nn.Identity()  # feature layer: the pooled state (B, width)
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T[, F]) -> (B, classes)
        if self.token_input:
            h = self.embed(x)  # (B, T) int64 -> (B, T, E)
        else:
            h = x.reshape(x.shape[0], *self.in_shape)  # (B, T, F)
        out, h_n = self.gru(h)  # (B, T, width), (layers * directions, B, hidden)
        self.sequence(out)
        last = torch.cat(list(h_n[-self.directions :]), dim=1)  # (B, width)
        return self.head(self.features(last))


class EncoderBlock(nn.Module):
    """Pre-norm transformer encoder block (Vaswani et al. 2017; pre-norm as Xiong et al.
    2020): x + MHA(LN(x)), then x + FF(LN(x)), with
    MHA(h) = concat_i softmax(Q_i K_i^T / sqrt(d_head)) V_i, FF(h) = W2 GELU(W1 h)."""

    def __init__(self, d_model: int, heads: int, ff: int, dropout: float):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.ff1 = nn.Linear(d_model, ff)
        self.ff2 = nn.Linear(ff, d_model)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, d) -> (B, T, d)
        b, t, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).chunk(3, dim=-1)  # 3 x (B, T, d)
        q, k, v = (z.reshape(b, t, self.heads, d // self.heads).transpose(1, 2) for z in (q, k, v))
        scores = q @ k.transpose(-2, -1) / math.sqrt(d // self.heads)  # (B, heads, T, T)
        attn = self.drop(scores.softmax(dim=-1))
        mixed = (attn @ v).transpose(1, 2).reshape(b, t, d)  # (B, T, d)
        x = x + self.drop(self.proj(mixed))
        return x + self.drop(self.ff2(self.drop(F.gelu(self.ff1(self.norm2(x))))))


class TransformerNet(nn.Module):
    """[Embedding (-> Linear) or Linear] + learned positional embedding -> encoder blocks
    -> LayerNorm -> mean over the T positions (the samples have a fixed length: no padding
    mask) -> Linear."""

    def __init__(self, p: TransformerParams, input_shape: tuple[int, ...], num_classes: int):
        super().__init__()
        self.token_input = p.vocab_size is not None
        self.in_shape = input_shape if len(input_shape) == 2 else (input_shape[0], 1)
        d = p.d_model
        self.embed: nn.Module
        if p.vocab_size is not None:
            e = p.embed_dim or d
            embedding = nn.Embedding(p.vocab_size, e)
            self.embed = embedding if e == d else nn.Sequential(embedding, nn.Linear(e, d))
        else:
            self.embed = nn.Linear(self.in_shape[1], d)
        self.positions = nn.Parameter(torch.zeros(1, p.max_len or self.in_shape[0], d))
        nn.init.normal_(self.positions, std=0.02)
        self.encoder = nn.Sequential(
            *(EncoderBlock(d, p.heads, p.ff, p.dropout) for _ in range(p.layers))
        )
        self.norm = nn.LayerNorm(d)
        self.sequence = nn.Identity()  # feature layer: the encoded positions (B, T, d)
        self.features = nn.Identity()  # feature layer: the pooled encoding (B, d)
        self.head = nn.Linear(d, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T[, F]) -> (B, classes)
        if not self.token_input:
            x = x.reshape(x.shape[0], *self.in_shape)  # (B, T, F)
        t = self.in_shape[0]
        h = self.embed(x) + self.positions[:, :t]  # (B, T, d)
        h = self.sequence(self.norm(self.encoder(h)))  # (B, T, d)
        return self.head(self.features(h.mean(dim=1)))  # (B, d) -> (B, classes)
