"""A PyTorch reference of the published Soft MoE ViT ("Guiding the Experts",
Min et al., 2025), written from the specification for the parity tests: the
same architecture, parameter names and loss, in plain torch (Debian's
python3-torch). fgmoe must agree with it on the same weights and inputs."""
import math

import torch
import torch.nn.functional as F
from torch import nn


class MultiExpertLayer(nn.Module):
    def __init__(self, in_features, out_features, num_experts):
        super().__init__()
        bound = 1.0 / math.sqrt(in_features * out_features)
        self.weight = nn.Parameter(torch.empty(num_experts, in_features, out_features).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(num_experts, out_features).uniform_(-bound, bound))

    def forward(self, x):  # x (b, n, p, in)
        return torch.einsum("bnpi,nio->bnpo", x, self.weight) + self.bias[None, :, None, :]


class SoftMoE(nn.Module):
    def __init__(self, in_features, out_features, num_experts, slots_per_expert):
        super().__init__()
        self.num_experts = num_experts
        self.slots_per_expert = slots_per_expert
        bound = 1.0 / math.sqrt(num_experts * slots_per_expert)
        self.phi = nn.Parameter(torch.empty(in_features, num_experts, slots_per_expert).uniform_(-bound, bound))
        self.experts = MultiExpertLayer(in_features, out_features, num_experts)

    def forward(self, x):  # x (b, m, d)
        b, m, _ = x.shape
        n, p = self.num_experts, self.slots_per_expert
        logits = torch.einsum("bmd,dnp->bmnp", x, self.phi)
        dispatch = logits.softmax(dim=1)
        combine = logits.reshape(b, m, n * p).softmax(dim=-1).reshape(b, m, n, p)
        slots = torch.einsum("bmd,bmnp->bnpd", x, dispatch)
        outputs = self.experts(slots)
        return torch.einsum("bnpo,bmnp->bmo", outputs, combine), dispatch


class EncoderLayer(nn.Module):
    def __init__(self, cfg, index):
        super().__init__()
        d = cfg["width"]
        self.index = index
        self.is_moe = index >= cfg["depth"] - cfg["moe_layers"]
        self.dropout = nn.Dropout(cfg["dropout"])
        self.norm1 = nn.LayerNorm(d, eps=cfg["layer_norm_eps"])
        self.self_attn = nn.MultiheadAttention(d, cfg["heads"], dropout=cfg["dropout"], batch_first=True)
        self.norm2 = nn.LayerNorm(d, eps=cfg["layer_norm_eps"])
        self.linear = nn.Linear(d, cfg["ffn_width"])
        if self.is_moe:
            self.ffn = SoftMoE(cfg["ffn_width"], d, cfg["num_experts"], cfg["slots_per_expert"])
        else:
            self.ffn = nn.Linear(cfg["ffn_width"], d)
        if index in cfg["layer_scale_layers"]:
            self.gamma_2 = nn.Parameter(cfg["layer_scale_init"] * torch.ones(d))
        else:
            self.gamma_2 = None

    def forward(self, x):
        attn, _ = self.self_attn(x, x, x, need_weights=False)
        x = self.norm1(x + self.dropout(attn))
        h = self.dropout(F.relu(self.linear(x)))
        dispatch = None
        if self.is_moe:
            f, dispatch = self.ffn(h)
        else:
            f = self.ffn(h)
        f = self.dropout(f)
        skip = self.gamma_2 * x if self.gamma_2 is not None else x
        return self.norm2(skip + f), dispatch


class Encoder(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.layers = nn.ModuleList([EncoderLayer(cfg, i) for i in range(cfg["depth"])])


def foreground_guided_loss(dispatch, masks, foreground=True):
    """dispatch (b, m, n, p); masks (b, 1, H, W). As the paper's loss: the mean
    dispatch weight per token, masks bicubic-resized to the token grid and
    thresholded with != 0, tokens at or above the mean weight, soft IoU q, and
    -log(q + 1e-4) averaged over samples with some foreground."""
    dispatch = dispatch.float() if dispatch.dtype != torch.float64 else dispatch
    b, m = dispatch.shape[:2]
    a = dispatch.mean(dim=(2, 3))
    grid = int(round(math.sqrt(m)))
    fg = F.interpolate(masks.to(a.dtype), size=(grid, grid), mode="bicubic", align_corners=False)
    fg = (fg != 0).reshape(b, m)
    valid = fg.any(dim=1)
    if not foreground:
        fg = ~fg
    with torch.no_grad():
        above = a >= a.mean(dim=1, keepdim=True)
    inner = (above & fg).to(a.dtype)
    outer = (above | fg).to(a.dtype)
    q = (a * inner).sum(dim=1) / (a * outer).sum(dim=1)
    per_sample = -torch.log(q + 1e-4)
    if valid.sum() == 0:
        return torch.zeros((), dtype=a.dtype)
    return per_sample[valid].sum() / valid.sum()


class ReferenceSoftMoEViT(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        patch_dim = cfg["num_channels"] * cfg["patch_size"] ** 2
        tokens = (cfg["image_size"] // cfg["patch_size"]) ** 2
        self.patch_to_embedding = nn.Sequential(
            nn.LayerNorm(patch_dim, eps=cfg["layer_norm_eps"]),
            nn.Linear(patch_dim, cfg["width"]),
            nn.LayerNorm(cfg["width"], eps=cfg["layer_norm_eps"]),
        )
        self.pos_embedding = nn.Parameter(torch.randn(1, tokens, cfg["width"]))
        self.encoder = Encoder(cfg)
        self.out = nn.Linear(cfg["width"], cfg["num_classes"])

    def forward(self, images, masks=None):
        b, c, h, w = images.shape
        p = self.cfg["patch_size"]
        # 'b c (h p1) (w p2) -> b (h w) (p1 p2 c)'
        x = images.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 3, 5, 1).reshape(b, -1, p * p * c)
        x = self.patch_to_embedding(x) + self.pos_embedding
        aux = None
        for layer in self.encoder.layers:
            x, dispatch = layer(x)
            if dispatch is not None and layer.index == self.cfg["aux_layer"] and masks is not None:
                aux = foreground_guided_loss(dispatch, masks, self.cfg.get("aux_foreground", True))
        return self.out(x.mean(dim=1)), aux
