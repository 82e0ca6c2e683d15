#!/usr/bin/env python3
"""Reference for bench/allreduce.ts: torch.distributed all_reduce over gloo on 127.0.0.1, float32.

Usage: /usr/bin/python3 gloo_reference.py --world 2 --numel 13385816 [--warmup 3 --iters 10]
Each iteration starts after a barrier; its time is the slowest rank's. Prints one line: GLOO {json}.
The timed call is all_reduce(SUM) alone (gloo's native operation); our figure also includes the division.
"""
import argparse
import json
import os
import socket
import statistics
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def run(rank, args, port, out):
    os.environ['GLOO_SOCKET_IFNAME'] = 'lo'
    torch.set_num_threads(1)
    dist.init_process_group('gloo', init_method=f'tcp://127.0.0.1:{port}', rank=rank, world_size=args.world)
    x = torch.randn(args.numel, dtype=torch.float32)
    times = []
    for i in range(args.warmup + args.iters):
        dist.barrier()
        t = time.perf_counter()
        dist.all_reduce(x)
        if i >= args.warmup:
            times.append(time.perf_counter() - t)
    slowest = torch.tensor(times, dtype=torch.float64)
    dist.all_reduce(slowest, op=dist.ReduceOp.MAX)
    if rank == 0:
        out.put(slowest.tolist())
    dist.barrier()
    dist.destroy_process_group()


def main():
    p = argparse.ArgumentParser()
    p.add_argument('--world', type=int, required=True)
    p.add_argument('--numel', type=int, required=True)
    p.add_argument('--warmup', type=int, default=3)
    p.add_argument('--iters', type=int, default=10)
    args = p.parse_args()
    ctx = mp.get_context('spawn')
    out = ctx.SimpleQueue()
    port = free_port()
    procs = [ctx.Process(target=run, args=(r, args, port, out)) for r in range(args.world)]
    for pr in procs:
        pr.start()
    times = out.get()
    for pr in procs:
        pr.join()
    med = statistics.median(times)
    print('GLOO ' + json.dumps({'world': args.world, 'numel': args.numel, 'medianMs': round(med * 1e3, 2),
                                 'minMs': round(min(times) * 1e3, 2), 'MBps': round(args.numel * 4 / med / 1e6, 1),
                                 'torch': torch.__version__}))


if __name__ == '__main__':
    main()
