#!/usr/bin/env python3
"""PyTorch side of the same-batches comparison (test/torch-parity.test.ts, bench/torch-parity.ts).

Run with Debian's interpreter (/usr/bin/python3, which sees python3-torch):
  /usr/bin/python3 torch_parity.py --init W.safetensors --data D.safetensors --out OUT.safetensors
      --lr 0.05 --momentum 0.9 --weight-decay 1e-4 --aux-weight 0.3 [--record 1,50] [--threads 2] [--float64]

W: the project's initial weights (the seed's state_dict names; loaded with strict=True).
D: `images` float32 [steps, B, 3, S, S] (NCHW, normalised, exactly what the project trained on), `labels`
int32 [steps, B], and `mask_main`, `mask_aux1`, `mask_aux2` float32 [steps, B, 1024] (the project's dropout
masks, 0 or 1/(1-p)) so that both sides drop the same units.
Trains the seed's model (test/../../model/test/torch_ref.py) with torch.optim.SGD (dampening 0, no Nesterov),
BatchNorm in training mode, loss CE(main) + aux_weight * (CE(aux1) + CE(aux2)), one step per batch, and writes
OUT: `loss` float32 [steps] (each step's loss before its update) and, for every step k in --record, the whole
state_dict after k steps as `step<k>.<name>`.
"""
import argparse
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..', 'model', 'test'))
from torch_ref import GoogLeNet, read_safetensors, write_safetensors  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--init', required=True)
    ap.add_argument('--data', required=True)
    ap.add_argument('--out', required=True)
    ap.add_argument('--lr', type=float, required=True)
    ap.add_argument('--momentum', type=float, default=0.9)
    ap.add_argument('--weight-decay', type=float, default=1e-4)
    ap.add_argument('--aux-weight', type=float, default=0.3)
    ap.add_argument('--record', default='')
    ap.add_argument('--threads', type=int, default=2)
    ap.add_argument('--float64', action='store_true', help='train in float64 (how much of a difference is float32 rounding)')
    ap.add_argument('--progress', action='store_true', help='a line on stderr every 10 steps')
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)

    init = read_safetensors(a.init)
    classes = init['fc.bias'].shape[0]
    model = GoogLeNet(classes)
    model.load_state_dict(init, strict=True)
    model.train()
    data = read_safetensors(a.data)
    if a.float64:
        model.double()
        data = {k: (v.double() if v.is_floating_point() else v) for k, v in data.items()}
    images, labels = data['images'], data['labels'].long()
    steps = images.shape[0]
    record = {int(s) for s in a.record.split(',') if s}
    opt = torch.optim.SGD(model.parameters(), lr=a.lr, momentum=a.momentum, weight_decay=a.weight_decay)
    out = {}
    losses = torch.zeros(steps)
    for k in range(steps):
        model.dropout.mask = data['mask_main'][k]
        model.aux1.clf_[2].mask = data['mask_aux1'][k]
        model.aux2.clf_[2].mask = data['mask_aux2'][k]
        main_, aux2, aux1 = model(images[k])
        y = labels[k]
        loss = F.cross_entropy(main_, y) + a.aux_weight * (F.cross_entropy(aux1, y) + F.cross_entropy(aux2, y))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses[k] = loss.item()
        if a.progress and (k + 1) % 10 == 0:
            print('torch_parity: step %d/%d loss %.4f' % (k + 1, steps, losses[k]), file=sys.stderr, flush=True)
        if k + 1 in record:
            for name, t in model.state_dict().items():
                out['step%d.%s' % (k + 1, name)] = (t.float() if t.is_floating_point() else t).clone()
    out['loss'] = losses
    write_safetensors(a.out, out)


if __name__ == '__main__':
    main()
