"""SeqFakeFormer as its authors published it (Shao, Wu and Liu, ECCV 2022), re-implemented.

Written from reading the authors' code (github.com/rshaojimmy/SeqDeepFake: models/
SeqFakeFormer.py, transformer_SECA.py, attention_layer.py, backbone.py, position_encoding.py,
configs/r50.json and r34.json, test.py) so that their state dict loads key for key and
shape for shape (:mod:`export.published.seqfakeformer` checks both):

* backbone ``backbone.0.body.*``: a torchvision ResNet without avgpool/fc; ResNet-50/101 with
  the last stage dilated (stride 16: 16 x 16 tokens at 256 px), ResNet-18/34 without (stride
  32); BatchNorm2d (their configs) or the frozen variant (buffers only);
* ``input_proj``: 1 x 1 convolution to ``hidden_dim``; sine positions (DETR's, normalised,
  ``hidden_dim / 2`` features per axis, no parameters);
* ``transformer.encoder``: pre-norm layers (self-attention with positions on q and k, ReLU
  feed-forward) and a final LayerNorm;
* ``transformer.embeddings``: token + step embeddings, LayerNorm (eps 1e-12); vocabulary
  {0 = SOS (read as "no edit" when predicted), 1..5 the edits, 6 = EOS, 7 = PAD};
* ``transformer.decoder``: pre-norm layers with causal self-attention and SECA, the
  spatially enhanced cross-attention: each query predicts a point on the token grid
  (``point1``, first layer, shared by the next ones) plus a per-head offset (``point2``)
  and per-head x/y scales (``point3``, "type3"); the attention logits get
  ``-((dx * sx)^2 + (dy * sy)^2) / smooth``; a final LayerNorm;
* ``mlp``: 3 layers to the vocabulary.

Inference is the authors' greedy decoding (test.py): start from [SOS], take the argmax of
step ``i``'s logits, stop at EOS; the 5 slots are then the tokens after SOS with PAD read as
0 when EOS stopped the loop (their loop keeps a predicted PAD otherwise, and so does this).
Their loop re-runs the whole network, backbone included, at every step; here the image is
encoded once and only the decoder runs per step (its causal mask makes step ``i``'s logits
depend on the first ``i + 1`` tokens only, so the logits are the same).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from models.registry import register_model

SOS, EOS, PAD = 0, 6, 7
SLOTS = 5             # max_position_embeddings - 1
SUPPORTED = ("resnet18", "resnet34", "resnet50", "resnet101")


class FrozenBatchNorm2d(nn.Module):
    """BatchNorm with fixed statistics and affine terms, buffers only (no
    ``num_batches_tracked``), eps 1e-5."""

    def __init__(self, n: int) -> None:
        super().__init__()
        for name, fill in (("weight", 1.0), ("bias", 0.0), ("running_mean", 0.0),
                           ("running_var", 1.0)):
            self.register_buffer(name, torch.full((n,), fill))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.weight.reshape(1, -1, 1, 1) * (self.running_var.reshape(1, -1, 1, 1)
                                                     + 1e-5).rsqrt()
        return x * scale + (self.bias.reshape(1, -1, 1, 1)
                            - self.running_mean.reshape(1, -1, 1, 1) * scale)


class ResNetBody(nn.Module):
    """A torchvision ResNet up to ``layer4`` (the keys ``conv1``, ``bn1``, ``layer1..4``)."""

    def __init__(self, name: str, dilation: bool, frozen_bn: bool) -> None:
        super().__init__()
        import torchvision

        net = getattr(torchvision.models, name)(
            weights=None, replace_stride_with_dilation=[False, False, dilation],
            norm_layer=FrozenBatchNorm2d if frozen_bn else nn.BatchNorm2d)
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = (net.layer1, net.layer2,
                                                              net.layer3, net.layer4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


class Backbone(nn.Module):
    """``backbone.0.body``: the ResNet (the position encoding has no parameters)."""

    def __init__(self, name: str, dilation: bool, frozen_bn: bool) -> None:
        super().__init__()
        self.body = ResNetBody(name, dilation, frozen_bn)


def sine_positions(h: int, w: int, dim: int, device: torch.device) -> torch.Tensor:
    """DETR's normalised sine positions of an h x w grid without padding: (h * w, dim),
    y features first, then x, each interleaving sin and cos."""
    half = dim // 2
    y = torch.arange(1, h + 1, dtype=torch.float32, device=device)[:, None].expand(h, w)
    x = torch.arange(1, w + 1, dtype=torch.float32, device=device)[None, :].expand(h, w)
    y = y / (h + 1e-6) * (2 * math.pi)
    x = x / (w + 1e-6) * (2 * math.pi)
    t = torch.arange(half, dtype=torch.float32, device=device)
    t = 10000 ** (2 * torch.div(t, 2, rounding_mode="floor") / half)

    def enc(v: torch.Tensor) -> torch.Tensor:
        p = v[:, :, None] / t
        return torch.stack((p[:, :, 0::2].sin(), p[:, :, 1::2].cos()), dim=3).flatten(2)

    return torch.cat((enc(y), enc(x)), dim=2).reshape(h * w, dim)


class Attention(nn.MultiheadAttention):
    """``nn.MultiheadAttention``'s parameters (``in_proj_weight``, ``in_proj_bias``,
    ``out_proj``), computed batch-first with plain matmuls and an additive bias.

    Shapes: q (B, T, d), k and v (B, N, d), bias broadcastable to (B, heads, T, N).
    """

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
               bias: torch.Tensor | None = None) -> torch.Tensor:
        d, nh = self.embed_dim, self.num_heads
        hd = d // nh
        w, b = self.in_proj_weight, self.in_proj_bias
        q = F.linear(q, w[:d], b[:d]) * float(hd) ** -0.5
        k = F.linear(k, w[d:2 * d], b[d:2 * d])
        v = F.linear(v, w[2 * d:], b[2 * d:])
        bsz, t, n = q.shape[0], q.shape[1], k.shape[1]
        q = q.reshape(bsz, t, nh, hd).transpose(1, 2)
        k = k.reshape(bsz, n, nh, hd).transpose(1, 2)
        v = v.reshape(bsz, n, nh, hd).transpose(1, 2)
        att = q @ k.transpose(-2, -1)
        if bias is not None:
            att = att + bias
        out = torch.softmax(att, dim=-1) @ v
        return self.out_proj(out.transpose(1, 2).reshape(bsz, t, d))


class MLP(nn.Module):
    """``layers.0..n-1`` linear layers, ReLU between them."""

    def __init__(self, dim_in: int, hidden: int, dim_out: int, n: int) -> None:
        super().__init__()
        dims = [dim_in] + [hidden] * (n - 1)
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims, dims[1:] + [dim_out]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x) if i == len(self.layers) - 1 else F.relu(layer(x))
        return x


class EncoderLayer(nn.Module):
    """Pre-norm: x + SA(n1(x) + pos, n1(x) + pos, n1(x)); x + FFN(n2(x))."""

    def __init__(self, d: int, nh: int, ff: int) -> None:
        super().__init__()
        self.self_attn = Attention(d, nh)
        self.linear1, self.linear2 = nn.Linear(d, ff), nn.Linear(ff, d)
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)

    def forward(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        x = x + self.self_attn.attend(h + pos, h + pos, h)
        return x + self.linear2(F.relu(self.linear1(self.norm2(x))))


class DecoderLayer(nn.Module):
    """Pre-norm decoder layer with SECA (see the module docstring).

    Args:
        first: the first layer predicts the reference point (``point1``); the others reuse it.
        smooth: the Gaussian's divisor (their ``smooth``, 4).
    """

    def __init__(self, d: int, nh: int, ff: int, first: bool, smooth: float) -> None:
        super().__init__()
        self.self_attn, self.multihead_attn = Attention(d, nh), Attention(d, nh)
        self.linear1, self.linear2 = nn.Linear(d, ff), nn.Linear(ff, d)
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.norm3, self.norm4 = nn.LayerNorm(d), nn.LayerNorm(d)
        if first:
            self.point1 = MLP(d, d, 2, 3)
        self.point2 = nn.Linear(d, 2 * nh)
        self.point3 = nn.Linear(d, 2 * nh)
        self.first, self.nh, self.smooth = first, nh, smooth

    def forward(self, x: torch.Tensor, qpos: torch.Tensor, mem: torch.Tensor,
                mem_pos: torch.Tensor, grid: torch.Tensor, causal: torch.Tensor,
                ref: torch.Tensor | None, ref_scale: float) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, T, d), qpos (1, T, d), mem and mem_pos (B or 1, N, d), grid (N, 2) token
        (x, y); ``ref`` (B, T, 2 * heads) from the first layer; returns (x, ref)."""
        bsz, t = x.shape[0], x.shape[1]
        out = self.norm4(x + qpos)
        offset = self.point2(out)
        h = self.norm1(x)
        x = x + self.self_attn.attend(h + qpos, h + qpos, h, causal)
        if self.first:
            ref = (torch.sigmoid(self.point1(out)) * ref_scale).repeat(1, 1, self.nh)
        assert ref is not None
        point = (ref + offset).reshape(bsz, t, self.nh, 1, 2)
        scale = self.point3(out).pow(2).reshape(bsz, t, self.nh, 1, 2)
        dist = ((point - grid).pow(2) * scale).sum(-1)              # (B, T, heads, N)
        gauss = (-dist.abs() / self.smooth).transpose(1, 2)         # (B, heads, T, N)
        h = self.norm2(x)
        x = x + self.multihead_attn.attend(h + qpos, mem + mem_pos, mem, gauss)
        return x + self.linear2(F.relu(self.linear1(self.norm3(x)))), ref


class Embeddings(nn.Module):
    """``word_embeddings`` (vocab, d; PAD its padding index), ``position_embeddings``
    (steps, d), ``LayerNorm`` (eps ``ln_eps``)."""

    def __init__(self, vocab: int, steps: int, d: int, ln_eps: float) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(vocab, d, padding_idx=PAD)
        self.position_embeddings = nn.Embedding(steps, d)
        self.LayerNorm = nn.LayerNorm(d, eps=ln_eps)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        t = tokens.shape[1]
        return self.LayerNorm(self.word_embeddings(tokens)
                              + self.position_embeddings.weight[:t].unsqueeze(0))


class Encoder(nn.Module):
    def __init__(self, d: int, nh: int, ff: int, n: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(EncoderLayer(d, nh, ff) for _ in range(n))
        self.norm = nn.LayerNorm(d)


class Decoder(nn.Module):
    def __init__(self, d: int, nh: int, ff: int, n: int, smooth: float) -> None:
        super().__init__()
        self.layers = nn.ModuleList(DecoderLayer(d, nh, ff, i == 0, smooth) for i in range(n))
        self.norm = nn.LayerNorm(d)


class Transformer(nn.Module):
    def __init__(self, d: int, nh: int, ff: int, enc: int, dec: int, vocab: int, steps: int,
                 smooth: float, ln_eps: float) -> None:
        super().__init__()
        self.encoder = Encoder(d, nh, ff, enc)
        self.embeddings = Embeddings(vocab, steps, d, ln_eps)
        self.decoder = Decoder(d, nh, ff, dec, smooth)


class PublishedSeqFakeFormer(nn.Module):
    """The authors' SeqFakeFormer (their state-dict layout), encode once, decode greedily.

    Args:
        backbone: resnet18 | resnet34 | resnet50 | resnet101 (dilated last stage for 50/101).
        frozen_bn: their ``Frozen_BatchNorm2d`` (false in both published configs).
        hidden_dim, nheads, dim_feedforward, enc_layers, dec_layers, smooth, vocab_size,
        max_position_embeddings, layer_norm_eps: their ``transformer`` config.
        img_size: their ``imgsize`` (256).

    Forward: image (B, 3, S, S) normalised with mean = std = 0.5 -> dict with ``logits``
    (B, 5, vocab) the logits of each step (zero after the step that gave EOS), ``sequence``
    (B, 5) int64 the authors' answer, ``steps`` (B,) int64 how many steps ran, ``features``
    (B, d) the mean encoder token.
    """

    def __init__(self, backbone: str = "resnet50", frozen_bn: bool = False,
                 hidden_dim: int = 256, nheads: int = 4, dim_feedforward: int = 512,
                 enc_layers: int = 2, dec_layers: int = 2, smooth: float = 4.0,
                 vocab_size: int = 8, max_position_embeddings: int = 6,
                 layer_norm_eps: float = 1e-12, img_size: int = 256) -> None:
        super().__init__()
        if backbone not in SUPPORTED:
            raise ValueError(f"backbone {backbone!r} is not one of {', '.join(SUPPORTED)}")
        dilation = backbone in ("resnet50", "resnet101")
        self.backbone = nn.ModuleList([Backbone(backbone, dilation, frozen_bn)])
        channels = 512 if backbone in ("resnet18", "resnet34") else 2048
        self.input_proj = nn.Conv2d(channels, hidden_dim, kernel_size=1)
        self.transformer = Transformer(hidden_dim, nheads, dim_feedforward, enc_layers,
                                       dec_layers, vocab_size, max_position_embeddings, smooth,
                                       layer_norm_eps)
        self.mlp = MLP(hidden_dim, 512, vocab_size, 3)
        self.img_size, self.hidden_dim = img_size, hidden_dim
        self.steps = max_position_embeddings - 1

    def encode(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
        """(memory (B, N, d), positions (1, N, d), grid (N, 2) of token (x, y), the
        reference point's scale: img_size / int(img_size / max(h, w)), as theirs)."""
        fmap = self.input_proj(self.backbone[0].body(image))
        h, w = int(fmap.shape[2]), int(fmap.shape[3])
        pos = sine_positions(h, w, self.hidden_dim, image.device)[None]
        x = fmap.flatten(2).transpose(1, 2)
        for layer in self.transformer.encoder.layers:
            x = layer(x, pos)
        ys, xs = torch.meshgrid(torch.arange(h, device=image.device),
                                torch.arange(w, device=image.device), indexing="ij")
        grid = torch.stack((xs, ys), dim=2).reshape(h * w, 2).float()
        return (self.transformer.encoder.norm(x), pos, grid,
                float(self.img_size) / int(self.img_size / max(h, w)))

    def step_logits(self, tokens: torch.Tensor, mem: torch.Tensor, pos: torch.Tensor,
                    grid: torch.Tensor, ref_scale: float) -> torch.Tensor:
        """The logits (B, vocab) of the last of ``tokens`` (B, T)."""
        t = tokens.shape[1]
        x = self.transformer.embeddings(tokens)
        qpos = self.transformer.embeddings.position_embeddings.weight[:t].unsqueeze(0)
        causal = torch.triu(torch.full((t, t), float("-inf"), device=tokens.device), 1)
        ref = None
        for layer in self.transformer.decoder.layers:
            x, ref = layer(x, qpos, mem, pos, grid, causal, ref, ref_scale)
        return self.mlp(self.transformer.decoder.norm(x[:, -1]))

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        mem, pos, grid, ref_scale = self.encode(image)
        bsz = image.shape[0]
        tokens = torch.full((bsz, 1), SOS, dtype=torch.long, device=image.device)
        done = torch.zeros(bsz, dtype=torch.bool, device=image.device)
        steps = torch.zeros(bsz, dtype=torch.long, device=image.device)
        logits = []
        for _ in range(self.steps):
            lg = self.step_logits(tokens, mem, pos, grid, ref_scale)
            logits.append(torch.where(done[:, None], torch.zeros_like(lg), lg))
            steps = steps + (~done).long()
            pred = lg.argmax(-1)
            stop = (pred == EOS) & ~done
            done = done | stop
            tokens = torch.cat([tokens, torch.where(done, torch.full_like(pred, PAD), pred)[:, None]], 1)
        seq = tokens[:, 1:]
        seq = torch.where(done[:, None] & (seq == PAD), torch.zeros_like(seq), seq)
        return {"logits": torch.stack(logits, 1), "sequence": seq, "steps": steps,
                "features": mem.mean(dim=1)}


@register_model
def seqfakeformer_published(**kwargs) -> PublishedSeqFakeFormer:
    """The authors' SeqFakeFormer (their configs: r50.json, r34.json)."""
    return PublishedSeqFakeFormer(**kwargs)
