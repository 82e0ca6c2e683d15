#!/usr/bin/env node
// Summaries of train runs for tools/gpu-run.sh (plain Node, no dependency: it runs on the GPU machine with the
// Node from .gpu/node.xz and nothing else).
//   node tools/gpu-summary.mjs bench RUN_DIR [--from=3] [--to=8] [--profile-step=6] [--json=FILE]
//     median img/s, dispatches and phase times over steps from..to of RUN_DIR/metrics.jsonl, leaving out the
//     profiled step; plus the profiled step's GPU kernel time and busiest kernels.
//   node tools/gpu-summary.mjs train RUN_DIR... [--json=FILE]
//     each run's final eval (summary.json) side by side.
//   node tools/gpu-summary.mjs recap OUT_DIR
//     a few lines from OUT_DIR/bench.json, host.json and train.json.
// Prints a table on stdout, and the figures as one JSON object: to --json=FILE, else as a line on stdout. Exit 1
// when a run has nothing to show.
import fs from 'node:fs';
import path from 'node:path';

const [mode, ...rest] = process.argv.slice(2);
const flags = Object.fromEntries(rest.filter((a) => a.startsWith('--')).map((a) => {
  const [k, v] = a.slice(2).split('=');
  return [k, v ?? 'true'];
}));
const dirs = rest.filter((a) => !a.startsWith('--'));

const median = (xs) => {
  const s = xs.filter((x) => typeof x === 'number' && Number.isFinite(x)).sort((a, b) => a - b);
  return s.length ? (s[(s.length - 1) >> 1] + s[s.length >> 1]) / 2 : null;
};
const fmt = (x, d = 1) => (x === null || x === undefined || !Number.isFinite(x) ? '-' : x.toFixed(d));
const readJson = (f) => {
  try {
    return JSON.parse(fs.readFileSync(f, 'utf8'));
  } catch {
    return undefined;
  }
};
/** The `backend: ...` line the run printed (names the adapter on webgpu). */
const backendLine = (dir) => {
  try {
    return fs.readFileSync(path.join(dir, 'train.log'), 'utf8').split('\n').find((l) => /backend: /.test(l))?.replace(/^.*?backend: /, 'backend: ');
  } catch {
    return undefined;
  }
};
/** To --json=FILE when given, else as one JSON line on stdout. */
const write = (obj) => {
  if (flags.json) fs.writeFileSync(flags.json, JSON.stringify(obj, null, 2) + '\n');
  else console.log(JSON.stringify(obj));
};

function bench(dir) {
  const from = Number(flags.from ?? 3);
  const to = Number(flags.to ?? Infinity);
  const profileStep = Number(flags['profile-step'] ?? 0);
  const cfg = readJson(path.join(dir, 'config.json')) ?? {};
  let records = [];
  try {
    records = fs.readFileSync(path.join(dir, 'metrics.jsonl'), 'utf8').trim().split('\n').filter(Boolean).map((l) => JSON.parse(l));
  } catch (e) {
    write({ bench: 'gpu-train-step', dir, error: `no metrics: ${e.message}` });
    return 1;
  }
  const steps = records.filter((r) => r.type === 'step');
  const used = steps.filter((r) => r.step >= from && r.step <= to && r.step !== profileStep);
  const prof = steps.find((r) => r.step === profileStep);
  const phase = (k) => median(used.map((r) => r.ms?.[k]));
  const out = {
    bench: 'gpu-train-step',
    backend: backendLine(dir) ?? cfg.backend,
    shape: { imageSize: cfg.imageSize, batchSize: cfg.batchSize, numClasses: cfg.numClasses, workers: cfg.workers },
    stepsRecorded: steps.length,
    stepsUsed: used.map((r) => r.step),
    partial: used.length === 0 || (Number.isFinite(to) && steps.length < to),
    imgPerSec: median(used.map((r) => r.imgPerSec)),
    dispatches: median(used.map((r) => r.dispatches)),
    ms: { wall: phase('wall'), data: phase('data'), compute: phase('compute'), reduce: phase('reduce'), apply: phase('apply') },
    rssMB: median(used.map((r) => r.rssMB)),
    firstStepMs: steps[0]?.ms?.wall ?? null,
    profile: prof ? {
      step: prof.step, wallMs: prof.ms?.wall ?? null, dispatches: prof.dispatches ?? null,
      kernelMs: prof.gpu?.kernelMs ?? null, kernels: prof.gpu?.kernels ?? [],
    } : null,
  };
  const s = out.shape;
  console.log(`\ntraining step, ${s.imageSize}x${s.imageSize} batch ${s.batchSize}, ${s.numClasses ?? '?'} classes, ${out.backend ?? '?'}`);
  console.log(`medians over steps ${out.stepsUsed.join(',') || '(none)'}${profileStep ? ` (profiled step ${profileStep} left out)` : ''}; first step ${fmt(out.firstStepMs, 0)} ms\n`);
  console.log('| img/s | dispatches | wall ms | data | compute | reduce | apply | rss MB |');
  console.log('|---|---|---|---|---|---|---|---|');
  console.log(`| ${fmt(out.imgPerSec, 2)} | ${fmt(out.dispatches, 0)} | ${fmt(out.ms.wall, 0)} | ${fmt(out.ms.data, 0)} | ${fmt(out.ms.compute, 0)} | ${fmt(out.ms.reduce, 0)} | ${fmt(out.ms.apply, 0)} | ${fmt(out.rssMB, 0)} |`);
  if (out.profile) {
    const p = out.profile;
    console.log(`\nprofiled step ${p.step}: wall ${fmt(p.wallMs, 0)} ms, ${p.dispatches ?? '-'} dispatches, GPU kernel time ${fmt(p.kernelMs, 1)} ms (compute phase)\n`);
    if (p.kernels.length) {
      console.log('| kernel | ms | calls |');
      console.log('|---|---|---|');
      for (const k of p.kernels.slice(0, 10)) console.log(`| ${k.name} | ${fmt(k.ms, 1)} | ${k.calls} |`);
    }
  } else if (profileStep) {
    console.log(`\nno record of the profiled step ${profileStep}`);
  }
  console.log('');
  write(out);
  return out.imgPerSec === null ? 1 : 0;
}

/** For a run that did not finish (timed out): its last step and its last eval, from metrics.jsonl. */
function lastRecords(dir) {
  try {
    const rs = fs.readFileSync(path.join(dir, 'metrics.jsonl'), 'utf8').trim().split('\n').filter(Boolean).map((l) => JSON.parse(l));
    const step = rs.filter((r) => r.type === 'step').pop();
    const ev = rs.filter((r) => r.type === 'eval').pop();
    return { lastStep: step ? { step: step.step, epoch: step.epoch, loss: step.loss, imgPerSec: step.imgPerSec } : null, lastEval: ev ?? null };
  } catch {
    return { lastStep: null, lastEval: null };
  }
}

function train(list) {
  const runs = list.map((dir) => {
    const s = readJson(path.join(dir, 'summary.json'));
    const cfg = readJson(path.join(dir, 'config.json')) ?? {};
    return s ? {
      dir, workers: s.worldSize, backend: s.backend, steps: s.steps, epochs: s.epochs, seconds: s.seconds, imgPerSec: s.imgPerSec,
      batchPerWorker: cfg.batchSize, finalEval: s.finalEval ?? null, finalTrain: s.finalTrain ?? null,
    } : { dir, workers: cfg.workers, error: 'no summary.json (the run did not finish)', ...lastRecords(dir) };
  });
  const pct = (x) => (typeof x === 'number' ? `${(x * 100).toFixed(2)}%` : '-');
  console.log('\naccuracy, synthetic data (final eval)\n');
  console.log('| run | workers | steps | epochs | s | img/s | eval top-1 | eval top-5 | eval loss |');
  console.log('|---|---|---|---|---|---|---|---|---|');
  for (const r of runs) {
    if (r.error) {
      const l = r.lastStep;
      console.log(`| ${path.basename(r.dir)} | ${r.workers ?? '-'} | ${l ? l.step : '-'} | ${l ? fmt(l.epoch, 2) : '-'} | - | ${l ? fmt(l.imgPerSec, 1) : '-'} | ` +
        `${r.lastEval ? `${pct(r.lastEval.top1)} @ step ${r.lastEval.step}` : '-'} | ${pct(r.lastEval?.top5)} | ${fmt(r.lastEval?.loss, 4)} |  (${r.error})`);
    } else {
      console.log(`| ${path.basename(r.dir)} | ${r.workers} | ${r.steps} | ${fmt(r.epochs, 2)} | ${fmt(r.seconds, 0)} | ${fmt(r.imgPerSec, 1)} | ${pct(r.finalEval?.top1)} | ${pct(r.finalEval?.top5)} | ${fmt(r.finalEval?.loss, 4)} |`);
    }
  }
  console.log('');
  write({ accuracy: 'synthetic', runs });
  return runs.some((r) => r.error) ? 1 : 0;
}

/** A few lines from OUT/bench.json and OUT/train.json, for the end of a long log. */
function recap(out) {
  const b = readJson(path.join(out, 'bench.json'));
  const t = readJson(path.join(out, 'train.json'));
  if (b) {
    const s = b.shape ?? {};
    const p = b.profile;
    console.log(`bench ${s.imageSize}x${s.imageSize} b${s.batchSize}: ${fmt(b.imgPerSec, 2)} img/s, ${fmt(b.dispatches, 0)} dispatches, ` +
      `step ${fmt(b.ms?.wall, 0)} ms (compute ${fmt(b.ms?.compute, 0)}, apply ${fmt(b.ms?.apply, 0)})` +
      (p ? `; profiled step ${p.step}: GPU kernels ${fmt(p.kernelMs, 1)} ms of ${fmt(p.wallMs, 0)} ms wall, busiest ` +
        p.kernels.slice(0, 5).map((k) => `${k.name} ${fmt(k.ms, 1)} ms x${k.calls}`).join(', ') : ''));
  } else console.log('bench: no bench.json');
  const h = readJson(path.join(out, 'host.json'));
  if (h) {
    // The host cost is per dispatch, not per image: the ceiling it sets is for the bench's batch size.
    const batch = b?.shape?.batchSize ?? 64;
    console.log(`host side (Dawn null backend, nothing executed): ${fmt(h.ms?.wall, 0)} ms a step (compute ${fmt(h.ms?.compute, 0)}, ` +
      `apply ${fmt(h.ms?.apply, 0)}) for ${fmt(h.dispatches, 0)} dispatches: at batch ${batch}, at most ` +
      `${fmt((batch * 1000) / h.ms?.wall, 0)} img/s whatever the GPU`);
  }
  if (t) {
    for (const r of t.runs) {
      const e = r.finalEval ?? r.lastEval;
      console.log(`train ${path.basename(r.dir)}: ${r.error ? `${r.error}; ` : ''}` +
        (e ? `eval top-1 ${(e.top1 * 100).toFixed(2)}% top-5 ${(e.top5 * 100).toFixed(2)}%${r.finalEval ? '' : ` @ step ${e.step}`}` : 'no eval') +
        (r.seconds ? `, ${fmt(r.seconds, 0)} s, ${fmt(r.imgPerSec, 1)} img/s` : ''));
    }
  } else console.log('train: no train.json');
  return 0;
}

if (mode === 'bench' && dirs.length === 1) process.exitCode = bench(dirs[0]);
else if (mode === 'recap' && dirs.length === 1) process.exitCode = recap(dirs[0]);
else if (mode === 'train' && dirs.length > 0) process.exitCode = train(dirs);
else {
  console.error('usage: node tools/gpu-summary.mjs bench RUN_DIR [--from=3] [--to=8] [--profile-step=6] [--json=FILE]\n' +
    '       node tools/gpu-summary.mjs train RUN_DIR... [--json=FILE]\n       node tools/gpu-summary.mjs recap OUT_DIR');
  process.exitCode = 2;
}
