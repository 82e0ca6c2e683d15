#!/usr/bin/env python3
"""Reference for the model tests: the seed notebook's GoogLeNet in PyTorch, and safetensors by hand.

Run with Debian's interpreter (/usr/bin/python3, which sees python3-torch):
  /usr/bin/python3 torch_ref.py --input IN --weights OURS --out OUT --write-weights THEIRS --num-classes N --seed S

IN holds `input` (float32 NCHW) and optionally `mask_main`, `mask_aux1`, `mask_aux2` (dropout masks, 0 or
1/(1-p), [N, 1024]) so that a training-mode forward can be compared exactly.
1. Loads OURS (written by @googlenet/model) into the seed's model with strict=True; writes to OUT:
   `ours.logits` (eval mode), `ours.train_main|train_aux2|train_aux1` (training mode with the given masks) and
   `ours.stats.<bn>.running_mean|running_var` (the buffers after that training forward).
2. Builds a seed model with PyTorch's own random init plus random BN weights and running statistics
   (num_batches_tracked = 7), writes its state_dict to THEIRS, and its eval logits as `theirs.logits`.
Deviation from the seed, as in @googlenet/model: an aux head whose AvgPool2d(5, 3) would not give 4x4
(inputs other than ~224) pools adaptively to 4x4 as torchvision does.
"""
import argparse, json, struct

import torch
import torch.nn as nn
import torch.nn.functional as F

# ---- the seed's model (module names and order define the state_dict keys) ----


class BasicConv2d(nn.Module):
    def __init__(self, in_channels, out_channels, **kwargs):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(in_channels, out_channels, bias=False, **kwargs),
                                  nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))

    def forward(self, x):
        return self.conv(x)


class Inception(nn.Module):
    def __init__(self, in_channels, ch1x1, ch3x3red, ch3x3, ch5x5red, ch5x5, pool_proj):
        super().__init__()
        self.branch1 = BasicConv2d(in_channels, ch1x1, kernel_size=1)
        self.branch2 = nn.Sequential(BasicConv2d(in_channels, ch3x3red, kernel_size=1),
                                     BasicConv2d(ch3x3red, ch3x3, kernel_size=3, padding=1))
        self.branch3 = nn.Sequential(BasicConv2d(in_channels, ch5x5red, kernel_size=1),
                                     BasicConv2d(ch5x5red, ch5x5, kernel_size=5, padding=2))
        self.branch4 = nn.Sequential(nn.MaxPool2d(kernel_size=3, stride=1, padding=1),
                                     BasicConv2d(in_channels, pool_proj, kernel_size=1))

    def forward(self, x):
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], 1)


class MaskDropout(nn.Module):
    """nn.Dropout with an externally given mask (no parameters: the state_dict is unchanged)."""

    def __init__(self):
        super().__init__()
        self.mask = None

    def forward(self, x):
        return x * self.mask if self.training and self.mask is not None else x


class AuxClf(nn.Module):
    def __init__(self, in_channels, num_classes):
        super().__init__()
        self.feature_ = nn.Sequential(nn.AvgPool2d(kernel_size=5, stride=3), BasicConv2d(in_channels, 128, kernel_size=1))
        self.clf_ = nn.Sequential(nn.Linear(4 * 4 * 128, 1024), nn.ReLU(inplace=True), MaskDropout(),
                                  nn.Linear(1024, num_classes))

    def forward(self, x):
        h, w = x.shape[2:]
        if (h - 5) // 3 + 1 == 4 and (w - 5) // 3 + 1 == 4:
            x = self.feature_(x)
        else:
            x = self.feature_[1](F.adaptive_avg_pool2d(x, (4, 4)))
        x = x.reshape(x.shape[0], 4 * 4 * 128)
        return self.clf_(x)


class GoogLeNet(nn.Module):
    def __init__(self, num_classes=1000):
        super().__init__()
        self.conv1 = BasicConv2d(3, 64, kernel_size=7, stride=2, padding=3)
        self.maxpool1 = nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True)
        self.conv2 = BasicConv2d(64, 64, kernel_size=1)
        self.conv3 = BasicConv2d(64, 192, kernel_size=3, padding=1)
        self.maxpool2 = nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True)
        self.inception3a = Inception(192, 64, 96, 128, 16, 32, 32)
        self.inception3b = Inception(256, 128, 128, 192, 32, 96, 64)
        self.maxpool3 = nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True)
        self.inception4a = Inception(480, 192, 96, 208, 16, 48, 64)
        self.inception4b = Inception(512, 160, 112, 224, 24, 64, 64)
        self.inception4c = Inception(512, 128, 128, 256, 24, 64, 64)
        self.inception4d = Inception(512, 112, 144, 288, 32, 64, 64)
        self.inception4e = Inception(528, 256, 160, 320, 32, 128, 128)
        self.maxpool4 = nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True)
        self.inception5a = Inception(832, 256, 160, 320, 32, 128, 128)
        self.inception5b = Inception(832, 384, 192, 384, 48, 128, 128)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.dropout = MaskDropout()
        self.fc = nn.Linear(1024, num_classes)
        self.aux1 = AuxClf(512, num_classes)
        self.aux2 = AuxClf(528, num_classes)

    def forward(self, x):
        x = self.maxpool1(self.conv1(x))
        x = self.maxpool2(self.conv3(self.conv2(x)))
        x = self.maxpool3(self.inception3b(self.inception3a(x)))
        x = self.inception4a(x)
        aux1 = self.aux1(x) if self.training else None
        x = self.inception4d(self.inception4c(self.inception4b(x)))
        aux2 = self.aux2(x) if self.training else None
        x = self.maxpool4(self.inception4e(x))
        x = self.inception5b(self.inception5a(x))
        x = self.dropout(torch.flatten(self.avgpool(x), 1))
        return self.fc(x), aux2, aux1


# ---- safetensors, by hand (no `safetensors` package here) ----

DTYPES = {'F32': (torch.float32, 4), 'F16': (torch.float16, 2), 'I64': (torch.int64, 8), 'I32': (torch.int32, 4),
          'U8': (torch.uint8, 1)}
NAMES = {v[0]: k for k, v in DTYPES.items()}


def read_safetensors(path):
    with open(path, 'rb') as f:
        data = f.read()
    (n,) = struct.unpack('<Q', data[:8])
    header = json.loads(data[8:8 + n].decode('utf-8'))
    base = 8 + n
    out = {}
    for name, info in header.items():
        if name == '__metadata__':
            continue
        dtype, _ = DTYPES[info['dtype']]
        b, e = info['data_offsets']
        buf = bytearray(data[base + b:base + e])
        t = torch.frombuffer(buf, dtype=dtype) if len(buf) else torch.empty(0, dtype=dtype)
        out[name] = t.reshape(info['shape']).clone()
    return out


def write_safetensors(path, tensors, metadata=None):
    header, chunks, offset = {}, [], 0
    if metadata:
        header['__metadata__'] = metadata
    for name, t in tensors.items():
        t = t.detach().contiguous().cpu()
        raw = t.numpy().tobytes() if t.numel() else b''
        header[name] = {'dtype': NAMES[t.dtype], 'shape': list(t.shape), 'data_offsets': [offset, offset + len(raw)]}
        chunks.append(raw)
        offset += len(raw)
    h = json.dumps(header, separators=(',', ':')).encode('utf-8')
    h += b' ' * (-len(h) % 8)
    with open(path, 'wb') as f:
        f.write(struct.pack('<Q', len(h)) + h + b''.join(chunks))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--input', required=True)
    ap.add_argument('--weights', required=True)
    ap.add_argument('--out', required=True)
    ap.add_argument('--write-weights', required=True)
    ap.add_argument('--num-classes', type=int, default=10)
    ap.add_argument('--seed', type=int, default=0)
    a = ap.parse_args()
    torch.set_num_threads(2)
    inp = read_safetensors(a.input)
    x = inp['input']
    out = {}

    ours = GoogLeNet(a.num_classes)
    ours.load_state_dict(read_safetensors(a.weights), strict=True)
    ours.eval()
    with torch.no_grad():
        out['ours.logits'] = ours(x)[0]
        if 'mask_main' in inp:
            ours.train()
            ours.dropout.mask = inp['mask_main']
            ours.aux1.clf_[2].mask = inp['mask_aux1']
            ours.aux2.clf_[2].mask = inp['mask_aux2']
            main_, aux2, aux1 = ours(x)
            out['ours.train_main'], out['ours.train_aux2'], out['ours.train_aux1'] = main_, aux2, aux1
            for k, v in ours.state_dict().items():
                if k.endswith('running_mean') or k.endswith('running_var'):
                    out['ours.stats.' + k] = v

    torch.manual_seed(a.seed)
    theirs = GoogLeNet(a.num_classes)
    for m in theirs.modules():
        if isinstance(m, nn.BatchNorm2d):
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.normal_(m.bias, 0, 0.1)
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 1.5)
            m.num_batches_tracked.fill_(7)
    write_safetensors(a.write_weights, theirs.state_dict(), {'format': 'pt'})
    theirs.eval()
    with torch.no_grad():
        out['theirs.logits'] = theirs(x)[0]
    write_safetensors(a.out, out)


if __name__ == '__main__':
    main()
