"""The PyTorch peer of fgmoe-layer-bench: the same post-norm encoder layer,
forward + backward, float32 on the CPU. Prints 'median min max' in seconds."""
import argparse
import time

import torch
from torch import nn


class EncoderLayer(nn.Module):
    def __init__(self, width, heads, ffn, p):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(width, heads, dropout=p, batch_first=True)
        self.norm1 = nn.LayerNorm(width)
        self.norm2 = nn.LayerNorm(width)
        self.linear = nn.Linear(width, ffn)
        self.ffn = nn.Linear(ffn, width)
        self.drop = nn.Dropout(p)

    def forward(self, x):
        h = self.norm1(x + self.drop(self.self_attn(x, x, x, need_weights=False)[0]))
        f = self.drop(torch.relu(self.linear(h)))
        f = self.drop(self.ffn(f))
        return self.norm2(h + f)


def main():
    ap = argparse.ArgumentParser()
    for name, default in [("batch", 8), ("tokens", 196), ("width", 384), ("heads", 6),
                          ("ffn", 2048), ("warmup", 3), ("repeat", 10), ("threads", 2)]:
        ap.add_argument("--" + name, type=int, default=default)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    layer = EncoderLayer(a.width, a.heads, a.ffn, 0.1).train()
    x = torch.randn(a.batch, a.tokens, a.width)
    times = []
    for it in range(a.warmup + a.repeat):
        t0 = time.perf_counter()
        layer(x).mean().backward()
        t1 = time.perf_counter()
        layer.zero_grad(set_to_none=True)
        if it >= a.warmup:
            times.append(t1 - t0)
    times.sort()
    print(times[len(times) // 2], times[0], times[-1])


if __name__ == "__main__":
    main()
