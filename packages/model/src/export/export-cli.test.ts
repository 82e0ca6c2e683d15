import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GoogLeNet } from '../googlenet.js';
import { decodeSafetensors, encodeSafetensors } from '../safetensors.js';
import { saveWeights } from '../state-dict.js';
import { useBackend } from '../test-utils.js';
import { readWeightsFile } from '../weights-file.js';

const ROOT = resolve(import.meta.dirname, '../../../..');
const TSX = join(ROOT, 'node_modules/.bin/tsx');

function exportCli(...args: string[]) {
  const r = spawnSync(TSX, [join(ROOT, 'packages/model/src/cli/export.ts'), ...args], { cwd: ROOT, encoding: 'utf8', timeout: 120_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr, errors: r.stderr.split('\n').filter((l) => l.startsWith('error')) };
}

describe('nx run model:export', () => {
  const dir = mkdtempSync(join(tmpdir(), 'googlenet-export-cli-'));
  const run = join(dir, 'run');
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  beforeAll(async () => {
    await useBackend('cpu');
    const model = new GoogLeNet({ numClasses: 10, aux: true });
    mkdirSync(join(run, 'checkpoints'), { recursive: true });
    await saveWeights(model, join(run, 'model.safetensors'));
    model.dispose();
    writeFileSync(join(run, 'config.json'), JSON.stringify({ dataset: 'synthetic', imageSize: 40 }));
    // A checkpoint: the same weights plus SGD momentum buffers under optimizer.*.
    const { tensors } = decodeSafetensors(new Uint8Array(readFileSync(join(run, 'model.safetensors'))));
    tensors.set('optimizer.momentum_buffer.fc.bias', { dtype: 'F32', shape: [10], data: new Float32Array(10) });
    writeFileSync(join(run, 'checkpoints', 'step-2.ckpt'), encodeSafetensors(tensors, { checkpoint: '{}' }));
  });

  it('reads a run folder, a .safetensors file and a checkpoint (dropping its optimizer tensors)', async () => {
    for (const w of [run, join(run, 'model.safetensors'), join(run, 'checkpoints', 'step-2.ckpt')]) {
      const f = await readWeightsFile(w);
      expect(f.numClasses).toBe(10);
      expect([...f.tensors.keys()].some((k) => k.startsWith('optimizer.'))).toBe(false);
    }
  });

  it('--format=onnx writes model.onnx beside the weights, built for the run\'s image size, without aux heads', () => {
    const r = exportCli(`--weights=${run}`, '--format=onnx');
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/wrote .*run\/model\.onnx: ONNX opset 17, input `input` float32 \[N, 3, 40, 40\]/);
    const bytes = readFileSync(join(run, 'model.onnx'));
    expect(bytes.includes('inception5b.branch4.1.conv.0.weight')).toBe(true);
    expect(bytes.includes('aux1.')).toBe(false);
  });

  it('--format=tfjs --out writes model.json and its shards', () => {
    const out = join(dir, 'web');
    const r = exportCli(`--weights=${join(run, 'checkpoints', 'step-2.ckpt')}`, '--format=tfjs', `--out=${out}`, '--imageSize=32');
    expect(r.status, r.stderr).toBe(0);
    const json = JSON.parse(readFileSync(join(out, 'model.json'), 'utf8'));
    expect(json.format).toBe('layers-model');
    expect(json.modelTopology.config.layers[0].config.batch_input_shape).toEqual([null, 32, 32, 3]);
    expect(readdirSync(out).filter((f) => f.endsWith('.bin')).sort()).toEqual([...json.weightsManifest[0].paths].sort());
  });

  it.each([
    [['--format=keras'], 'BAD_FLAG', /--format=keras is not supported; use tfjs or onnx/],
    [['--format=onnx', '--weights=/nonexistent/run'], 'WEIGHTS_NOT_FOUND', /\/nonexistent\/run does not exist/],
    [['--format=onnx', 'TRUNCATED'], 'WEIGHTS_UNREADABLE', /is not a readable safetensors file/],
    [['--format=tfjs', 'MISSING'], 'WEIGHTS_MISMATCH', /fc\.weight: missing/],
  ])('%j fails with one line: %s', (args, code, message) => {
    const file = join(dir, `${code}.safetensors`);
    const bytes = new Uint8Array(readFileSync(join(run, 'model.safetensors')));
    if (args.includes('TRUNCATED')) writeFileSync(file, bytes.subarray(0, bytes.length - 100));
    if (args.includes('MISSING')) {
      const { tensors } = decodeSafetensors(bytes);
      tensors.delete('fc.weight');
      writeFileSync(file, encodeSafetensors(tensors));
    }
    const weights = args.some((a) => a.startsWith('--weights')) ? [] : [`--weights=${file}`];
    const r = exportCli(...weights, ...args.filter((a) => a.startsWith('--')));
    expect(r.status).toBe(code === 'BAD_FLAG' ? 2 : 1);
    expect(r.errors, r.stderr).toHaveLength(1);
    expect(r.errors[0]).toMatch(new RegExp(`^error \\[${code}\\]: `));
    expect(r.errors[0]).toMatch(message);
    expect(existsSync(join(dir, 'model.onnx'))).toBe(false);
  });
});
