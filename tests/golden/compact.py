"""The golden fixtures in compact form, and back.

    python tests/golden/compact.py [SOURCE_DIR]

reads every fixture SOURCE_DIR/*.npz in the original layout (default
../shared/reference/golden, see README.md here), writes its compact form
next to this file under the same name and checks that expand() gives back
every original array bit for bit (values, dtype and shape).

The compact form keeps every key of the original but the images and the
one-hot labels, which it stores as uint8 under another key:

    pixels/<key>  uint8 q, the original float64(float32(q) / float32(255))
                  (the images: pixels divided by 255 in float32, then widened)
    uint8/<key>   uint8 q, the original float64(q) (the one-hot labels)

An array is stored so only where that round trip is exact; everything else
(sinusoid inputs and outputs, weights, gradients, losses) is kept as it was.
expand() leaves a fixture in the original layout as it is.
"""
import os
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
SOURCE = HERE.parents[2] / 'shared' / 'reference' / 'golden'
BATCH_KEYS = ('inputa', 'labela', 'inputb', 'labelb')


def decode_pixels(q):
    return (q.astype(np.float32) / np.float32(255)).astype(np.float64)


def decode_uint8(q):
    return q.astype(np.float64)


DECODERS = {'pixels/': decode_pixels, 'uint8/': decode_uint8}


def exact(decoded, original):
    return decoded.dtype == original.dtype and decoded.shape == original.shape and np.array_equal(decoded, original)


def encode(key, value):
    """(stored key, stored array) for one array of a fixture in the original layout."""
    if key not in BATCH_KEYS or value.dtype != np.float64 or not value.size or value.min() < 0:
        return key, value
    for prefix, scale in (('uint8/', 1), ('pixels/', 255)):
        if value.max() * scale <= 255:
            q = np.round(value * scale).astype(np.uint8)
            if exact(DECODERS[prefix](q), value):
                return prefix + key, q
    return key, value


def compact(arrays):
    return dict(encode(k, v) for k, v in arrays.items())


def expand(arrays):
    """The original layout of a fixture, from its compact form or from the original itself."""
    out = {}
    for key, value in arrays.items():
        prefix = next((p for p in DECODERS if key.startswith(p)), None)
        if prefix is None:
            out[key] = value
        else:
            out[key[len(prefix):]] = DECODERS[prefix](value)
    return out


def load(path):
    """Every array of a fixture file (either layout) under its original key."""
    with np.load(path) as data:
        return expand({k: data[k] for k in data.files})


def convert(source, target):
    with np.load(source) as data:
        original = {k: data[k] for k in data.files}
    np.savez_compressed(target, **compact(original))
    back = load(target)
    bad = sorted(set(original) ^ set(back)) + [k for k in original if k in back and not exact(back[k], original[k])]
    if bad:
        raise SystemExit('Error: %s: the compact form does not give back %s' % (target, ', '.join(bad)))
    encoded = [k for k in compact(original) if k.startswith(tuple(DECODERS))]
    print('%-16s %6.0f KB -> %6.0f KB  uint8: %s' % (os.path.basename(target), os.path.getsize(source) / 1024,
                                                  os.path.getsize(target) / 1024, ', '.join(encoded) or '-'))


def main(argv):
    source = Path(argv[1]) if len(argv) > 1 else SOURCE
    paths = sorted(source.glob('*.npz'))
    if not paths:
        print('Error: no fixtures (*.npz) in %s' % source, file=sys.stderr)
        return 2
    for path in paths:
        convert(path, HERE / path.name)
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv))
