#!/usr/bin/env python3
"""PyTorch reference for `nx run trainer:bench`: the seed notebook's GoogLeNet (BatchNorm, real 5x5 branch,
two aux heads), loss CE(main) + w * (CE(aux1) + CE(aux2)), SGD momentum 0.9 + weight decay, BN in training
mode, on the CPU with a fixed number of threads. Run with Debian's interpreter: /usr/bin/python3.

Prints one line: RESULT {"imgPerSec": ..., "medianStepSec": ..., ...}
"""
import argparse
import json
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


def basic(cin, cout, **kw):
    return nn.Sequential(nn.Conv2d(cin, cout, bias=False, **kw), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class Inception(nn.Module):
    def __init__(self, cin, c1, c3r, c3, c5r, c5, pp):
        super().__init__()
        self.b1 = basic(cin, c1, kernel_size=1)
        self.b2 = nn.Sequential(basic(cin, c3r, kernel_size=1), basic(c3r, c3, kernel_size=3, padding=1))
        self.b3 = nn.Sequential(basic(cin, c5r, kernel_size=1), basic(c5r, c5, kernel_size=5, padding=2))
        self.b4 = nn.Sequential(nn.MaxPool2d(3, 1, 1), basic(cin, pp, kernel_size=1))

    def forward(self, x):
        return torch.cat([self.b1(x), self.b2(x), self.b3(x), self.b4(x)], 1)


class Aux(nn.Module):
    def __init__(self, cin, classes, adaptive):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(4) if adaptive else nn.AvgPool2d(5, 3)
        self.conv = basic(cin, 128, kernel_size=1)
        self.fc1 = nn.Linear(2048, 1024)
        self.fc2 = nn.Linear(1024, classes)

    def forward(self, x):
        x = torch.flatten(self.conv(self.pool(x)), 1)
        return self.fc2(F.dropout(F.relu(self.fc1(x)), 0.7, self.training))


# (in, 1x1, 3x3 reduce, 3x3, 5x5 reduce, 5x5, pool proj) as in the seed
CFG = {
    '3a': (192, 64, 96, 128, 16, 32, 32), '3b': (256, 128, 128, 192, 32, 96, 64),
    '4a': (480, 192, 96, 208, 16, 48, 64), '4b': (512, 160, 112, 224, 24, 64, 64),
    '4c': (512, 128, 128, 256, 24, 64, 64), '4d': (512, 112, 144, 288, 32, 64, 64),
    '4e': (528, 256, 160, 320, 32, 128, 128), '5a': (832, 256, 160, 320, 32, 128, 128),
    '5b': (832, 384, 192, 384, 48, 128, 128),
}


class GoogLeNet(nn.Module):
    def __init__(self, classes, size):
        super().__init__()
        pool = lambda: nn.MaxPool2d(3, 2, ceil_mode=True)
        self.stem = nn.Sequential(basic(3, 64, kernel_size=7, stride=2, padding=3), pool(),
                                  basic(64, 64, kernel_size=1), basic(64, 192, kernel_size=3, padding=1), pool())
        self.i3 = nn.Sequential(Inception(*CFG['3a']), Inception(*CFG['3b']), pool())
        self.i4a = Inception(*CFG['4a'])
        self.i4bcd = nn.Sequential(Inception(*CFG['4b']), Inception(*CFG['4c']), Inception(*CFG['4d']))
        self.i4e = nn.Sequential(Inception(*CFG['4e']), pool())
        self.i5 = nn.Sequential(Inception(*CFG['5a']), Inception(*CFG['5b']))
        self.aux1 = Aux(512, classes, size < 224)
        self.aux2 = Aux(528, classes, size < 224)
        self.fc = nn.Linear(1024, classes)

    def forward(self, x):
        x = self.i4a(self.i3(self.stem(x)))
        a1 = self.aux1(x)
        x = self.i4bcd(x)
        a2 = self.aux2(x)
        x = self.i5(self.i4e(x))
        x = F.dropout(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1), 0.4, self.training)
        return self.fc(x), a2, a1


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--size', type=int, default=32)
    ap.add_argument('--batch', type=int, default=32)
    ap.add_argument('--classes', type=int, default=10)
    ap.add_argument('--threads', type=int, default=2)
    ap.add_argument('--warmup', type=int, default=2)
    ap.add_argument('--iters', type=int, default=6)
    ap.add_argument('--aux-weight', type=float, default=0.3)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    model = GoogLeNet(a.classes, a.size).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    x = torch.randn(a.batch, 3, a.size, a.size)
    y = torch.randint(0, a.classes, (a.batch,))
    times = []
    for i in range(a.warmup + a.iters):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        main_, a2, a1 = model(x)
        loss = F.cross_entropy(main_, y) + a.aux_weight * (F.cross_entropy(a1, y) + F.cross_entropy(a2, y))
        loss.backward()
        opt.step()
        loss.item()
        if i >= a.warmup:
            times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    print('RESULT ' + json.dumps({'impl': 'pytorch', 'torch': torch.__version__, 'threads': torch.get_num_threads(),
                                  'size': a.size, 'batch': a.batch, 'classes': a.classes, 'iters': len(times),
                                  'medianStepSec': round(med, 4), 'imgPerSec': round(a.batch / med, 2)}))


if __name__ == '__main__':
    main()
