"""Small data sets in the prepared folder layouts, for fast end-to-end tests.

Each class is a fixed random pattern plus a little per-image noise, so a model
can learn to tell classes apart within a few iterations.
"""
import os

import numpy as np
from PIL import Image


def class_pattern(rng, shape):
    return rng.random(shape) < 0.3


def make_omniglot(root, alphabets=3, characters=40, drawings=20, seed=0):
    """data_dir/omniglot_resized/<alphabet>/<characterNN>/*.png: 28x28 binary, ink dark."""
    rng = np.random.default_rng(seed)
    folder = os.path.join(root, 'omniglot_resized')
    for a in range(alphabets):
        for c in range(characters):
            path = os.path.join(folder, 'Alphabet_%02d' % a, 'character%02d' % (c + 1))
            os.makedirs(path, exist_ok=True)
            ink = class_pattern(rng, (28, 28))
            for d in range(drawings):
                noisy = ink ^ (rng.random((28, 28)) < 0.02)
                Image.fromarray(np.where(noisy, 0, 255).astype(np.uint8)).convert('1').save(
                    os.path.join(path, '%04d_%02d.png' % (c, d + 1)))
    return root


def make_miniimagenet(root, classes=(8, 5, 5), images=20, seed=0):
    """data_dir/miniImagenet/{train,val,test}/<wnid>/*.jpg: 84x84 RGB."""
    rng = np.random.default_rng(seed)
    for s, (split, count) in enumerate(zip(('train', 'val', 'test'), classes)):
        for c in range(count):
            wnid = 'n%08d' % (1000 * s + c)  # fixed names: str hash() differs per process
            path = os.path.join(root, 'miniImagenet', split, wnid)
            os.makedirs(path, exist_ok=True)
            base = rng.integers(0, 256, (84, 84, 3))
            for i in range(images):
                noisy = np.clip(base + rng.integers(-20, 21, (84, 84, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(noisy).save(os.path.join(path, '%s%08d.jpg' % (wnid, i)), quality=95)
    return root
