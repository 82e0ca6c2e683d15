import { describe, expect, it } from 'vitest';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { allowedCpus, bindingLine, findTaskset, formatCpuList, parseCpuList, planCpuBinding } from './cpu-bind';

describe('cpu lists', () => {
  it('parses and formats the kernel format', () => {
    expect(parseCpuList('0-3,8,10-11')).toEqual([0, 1, 2, 3, 8, 10, 11]);
    expect(parseCpuList('5')).toEqual([5]);
    expect(parseCpuList('3,1-2,2')).toEqual([1, 2, 3]);
    expect(formatCpuList([0, 1, 2, 3, 8, 10, 11])).toBe('0-3,8,10-11');
    expect(formatCpuList([1])).toBe('1');
    for (const bad of ['', 'a', '1-', '3-1', '1,,2']) expect(() => parseCpuList(bad)).toThrow(/cpu list/);
  });

  it('reads Cpus_allowed_list from a status text, and this process\'s own on Linux', () => {
    expect(allowedCpus('Name:\tnode\nCpus_allowed:\tff\nCpus_allowed_list:\t0-1,4\nMems_allowed:\t1\n')).toEqual([0, 1, 4]);
    expect(allowedCpus('Name:\tnode\n')).toBeNull();
    expect(allowedCpus('Cpus_allowed_list:\tgarbage\n')).toBeNull();
    if (process.platform === 'linux') expect(allowedCpus()!.length).toBe(os.availableParallelism());
  });
});

describe('planCpuBinding', () => {
  const base = { choice: 'auto' as const, cpus: [0, 1, 2, 3, 4, 5, 6, 7], taskset: '/usr/bin/taskset' };

  it('gives each worker consecutive equal shares of the allowed cores; a remainder stays unbound', () => {
    expect(planCpuBinding({ ...base, workers: 2 })).toEqual({ sets: [[0, 1, 2, 3], [4, 5, 6, 7]], taskset: '/usr/bin/taskset' });
    expect(planCpuBinding({ ...base, workers: 3 })).toEqual({ sets: [[0, 1], [2, 3], [4, 5]], taskset: '/usr/bin/taskset' });
    expect(planCpuBinding({ ...base, cpus: [2, 3, 6, 7], workers: 2 })).toEqual({ sets: [[2, 3], [6, 7]], taskset: '/usr/bin/taskset' });
  });

  it('is off, saying why, where binding cannot or need not happen', () => {
    const off = (o: Partial<Parameters<typeof planCpuBinding>[0]>) => planCpuBinding({ ...base, workers: 2, ...o }) as { off: string };
    expect(off({ choice: 'off' }).off).toBe('--cpu-bind=off');
    expect(off({ workers: 1 }).off).toMatch(/one worker/);
    expect(off({ workers: 9 }).off).toBe('9 workers share 8 core(s)');
    expect(off({ cpus: null }).off).toMatch(/does not report/);
    expect(off({ taskset: null }).off).toMatch(/no taskset on PATH/);
  });

  it('says what it did, and why not only when asked for something it could not do', () => {
    expect(bindingLine({ sets: [[0], [1]], taskset: 't' }, 2, 'auto')).toBe('cpu binding (--cpu-bind=auto): rank 2 on cpu 0, rank 3 on cpu 1');
    expect(bindingLine({ off: '3 workers share 2 core(s)' }, 0, 'auto')).toBe('cpu binding off: 3 workers share 2 core(s)');
    expect(bindingLine({ off: 'one worker: it may use every core' }, 0, 'auto')).toBe('');
    expect(bindingLine({ off: '--cpu-bind=off' }, 0, 'off')).toBe('');
  });
});

describe('findTaskset', () => {
  it('finds an executable taskset on PATH and nothing elsewhere', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cpu-bind-'));
    try {
      const file = path.join(dir, 'taskset');
      fs.writeFileSync(file, '#!/bin/sh\n');
      expect(findTaskset(dir)).toBeNull(); // not executable
      fs.chmodSync(file, 0o755);
      expect(findTaskset(`/nonexistent${path.delimiter}${dir}`)).toBe(file);
      expect(findTaskset('')).toBeNull();
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  const noTaskset = process.platform !== 'linux' ? `not Linux (${process.platform})` : findTaskset() === null ? 'no taskset on PATH' : '';
  if (noTaskset) console.warn(`SKIPPED taskset binding test: ${noTaskset}`);
  it.skipIf(noTaskset !== '')('a process started through taskset reports the bound core as its own', () => {
    const cpu = allowedCpus()!.at(-1)!;
    const r = spawnSync(findTaskset()!, ['-c', String(cpu), process.execPath, '-e', 'process.stdout.write(require("fs").readFileSync("/proc/self/status","utf8"))'], { encoding: 'utf8' });
    expect(r.status).toBe(0);
    expect(allowedCpus(r.stdout)).toEqual([cpu]);
  });
});
