"""Checks an exported ONNX model: onnx.checker (full, with shape inference), then runs it with onnxruntime on a
raw float32 NCHW input and compares with the expected logits (raw float32).
Usage: python onnx_check.py model.onnx input.bin expected.bin N S. Prints one JSON line."""
import json
import sys

import numpy as np
import onnx
import onnxruntime as ort


def main(model_path, input_path, expected_path, n, s):
    model = onnx.load(model_path)
    onnx.checker.check_model(model, full_check=True)
    session = ort.InferenceSession(model_path, providers=['CPUExecutionProvider'])
    x = np.fromfile(input_path, np.float32).reshape(n, 3, s, s)
    expected = np.fromfile(expected_path, np.float32).reshape(n, -1)
    (logits,) = session.run(['logits'], {'input': x})
    print(json.dumps({
        'opset': max(o.version for o in model.opset_import if o.domain in ('', 'ai.onnx')),
        'ops': sorted({node.op_type for node in model.graph.node}),
        'maxpool_ceil': [next((a.i for a in node.attribute if a.name == 'ceil_mode'), 0)
                         for node in model.graph.node if node.op_type == 'MaxPool'],
        'shape': list(logits.shape),
        'max_abs_diff': float(np.abs(logits - expected).max()),
        'max_abs': float(np.abs(expected).max()),
    }))


if __name__ == '__main__':
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
