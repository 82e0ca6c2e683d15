"""Reads a run's tb/ event files with TensorBoard's own EventAccumulator and compares every scalar with
metrics.jsonl. Usage: python tensorboard_check.py <run folder>. Prints one JSON line; exits 1 on a mismatch."""
import json
import math
import os
import sys

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def flatten(prefix, obj, out):
    for k, v in obj.items():
        if prefix.count('/') == 0 and k in ('type', 'step'):
            continue
        if isinstance(v, bool):
            continue
        if isinstance(v, (int, float)) and math.isfinite(v):
            out[f'{prefix}/{k}'] = float(v)
        elif isinstance(v, dict):
            flatten(f'{prefix}/{k}', v, out)


def main(run):
    acc = EventAccumulator(os.path.join(run, 'tb'), size_guidance={'scalars': 0})
    acc.Reload()
    expected = {}
    with open(os.path.join(run, 'metrics.jsonl')) as f:
        for line in f:
            rec = json.loads(line)
            group = 'train' if rec['type'] == 'step' else rec['type']
            values = {}
            flatten(group, rec, values)
            for tag, v in values.items():
                expected.setdefault(tag, {})[int(rec['step'])] = v
    tags = set(acc.Tags()['scalars'])
    problems = []
    compared = 0
    for tag, by_step in expected.items():
        if tag not in tags:
            problems.append(f'tag {tag} missing')
            continue
        got = {e.step: e.value for e in acc.Scalars(tag)}
        for step, v in by_step.items():
            if step not in got:
                problems.append(f'{tag} step {step} missing')
            elif abs(got[step] - v) > 1e-6 * max(1.0, abs(v)):
                problems.append(f'{tag} step {step}: tb {got[step]} vs metrics {v}')
            compared += 1
    extra = sorted(tags - set(expected))
    if extra:
        problems.append(f'tags not in metrics.jsonl: {extra}')
    print(json.dumps({'file_version': acc.file_version, 'tags': len(tags), 'compared': compared, 'problems': problems[:20]}))
    return 1 if problems or acc.file_version != 2.0 or compared == 0 else 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1]))
