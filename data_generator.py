"""Meta-batches of tasks: inputa/labela (support) and inputb/labelb (query).

Sinusoid tasks are drawn on the fly. Omniglot and miniImagenet are read once
into uint8 arrays (optionally through a cache file next to the data), and
tasks are sampled from memory, so no training step waits on file reads.
Classes may hold different numbers of images (a user's own data set prepared
with `python -m data.prepare folder`); the paper's data sets hold the same
number in every class and are then kept as one array.

Every batch comes from its own random stream, seeded by (seed, split, index):
the tasks of iteration 1234 are the same whether or not the run was
interrupted and resumed before it.
"""
import hashlib
import json
import os
import random
import sys

import numpy as np
from PIL import Image

OMNIGLOT_FOLDER = 'omniglot_resized'
MINIIMAGENET_FOLDER = 'miniImagenet'
OMNIGLOT_NUM_TRAIN, OMNIGLOT_NUM_VAL = 1100, 100
OMNIGLOT_SPLIT_SEED = 1
MINIIMAGENET_QUERIES = 15  # query examples per class in miniImagenet training
PREPARE_COMMANDS = {
    'omniglot': 'python -m data.prepare omniglot PATH/TO/omniglot (the folder holding images_background.zip, '
                'images_evaluation.zip; docs/data.md says where to get them)',
    'miniimagenet': 'python -m data.prepare miniimagenet PATH/TO/miniImagenet (the folder holding images/ or '
                    'images.tar.gz and train/val/test.csv; docs/data.md says where to get them), or for your own '
                    'images python -m data.prepare folder PATH/TO/class_folders --out DIR and --data_dir=DIR',
}
STREAMS = {'train': 0, 'val': 1, 'test': 2}


class DataError(Exception):
    """A data set is missing, incomplete or unreadable; the message says which file."""


## Reading image folders -----------------------------------------------------------------

def list_class_folders(root, depth):
    """Class folders below root, depth 1 (class/) or 2 (alphabet/character/), sorted.

    Sorting fixes the reference's dependence on os.listdir order.
    """
    if not os.path.isdir(root):
        raise DataError('data folder not found: %s' % root)
    folders = [root]
    for _ in range(depth):
        folders = [os.path.join(f, name) for f in folders for name in sorted(os.listdir(f))
                   if os.path.isdir(os.path.join(f, name))]
    return folders


def read_image(path):
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert('RGB' if im.mode not in ('1', 'L') else 'L'), dtype=np.uint8)
    except (OSError, ValueError) as exc:
        raise DataError('unreadable image %s: %s' % (path, exc)) from exc


def load_class_images(folder, extension):
    """All images of one class folder, sorted by name, as one uint8 array."""
    names = sorted(n for n in os.listdir(folder) if n.lower().endswith(extension))
    if not names:
        raise DataError('class folder holds no %s images: %s' % (extension, folder))
    images = [read_image(os.path.join(folder, n)) for n in names]
    shapes = {im.shape for im in images}
    if len(shapes) != 1:
        raise DataError('images of different sizes %s in %s' % (sorted(shapes), folder))
    return np.stack(images)


def fingerprint(folders, extension):
    """Cheap identity of a folder tree: names, sizes and mtimes of its images."""
    digest = hashlib.sha256()
    for folder in folders:
        for name in sorted(os.listdir(folder)):
            if name.lower().endswith(extension):
                st = os.stat(os.path.join(folder, name))
                digest.update(('%s/%s:%d:%d;' % (folder, name, st.st_size, st.st_mtime_ns)).encode())
    return digest.hexdigest()


def load_classes(folders, extension, cache_path=None, progress=True):
    """The images of the given class folders, class by class.

    One uint8 array [classes, images_per_class, H, W(, C)] when every class
    holds the same number of images (the paper's data sets); otherwise a list
    of one array [images of that class, H, W(, C)] per class. Both index the
    same way: images[c][i] is image i of class c.

    With cache_path, the images are kept in an .npy file beside a fingerprint
    of the folders; a stale or corrupt cache is rebuilt. The cache lives next
    to the prepared folder, not inside it, so the folder stays exactly the
    layout that data.prepare verifies.
    """
    key = fingerprint(folders, extension) if cache_path else None
    if cache_path and os.path.exists(cache_path) and os.path.exists(cache_path + '.json'):
        try:
            with open(cache_path + '.json') as f:
                info = json.load(f)
            if info.get('fingerprint') == key:
                return from_cache(np.load(cache_path, mmap_mode=None), info.get('counts'))
        except (OSError, ValueError):
            pass  # unreadable cache: rebuild it below
    classes = []
    for i, folder in enumerate(folders):
        classes.append(load_class_images(folder, extension))
        if progress and (i + 1) % max(1, len(folders) // 10) == 0:
            print('  loaded %d/%d classes' % (i + 1, len(folders)), file=sys.stderr, flush=True)
    shapes = {c.shape[1:] for c in classes}
    if len(shapes) > 1:
        raise DataError('images of different sizes %s in %s' % (sorted(shapes), os.path.dirname(folders[0])))
    counts = [c.shape[0] for c in classes]
    images = np.stack(classes) if len(set(counts)) == 1 else classes
    if cache_path:
        write_cache(cache_path, images, key)
    return images


def from_cache(array, counts):
    """The cache's array as load_classes returns it: classes of different sizes are stored
    end to end, with their counts in the fingerprint file."""
    if counts is None:
        return array
    if sum(counts) != len(array):
        raise ValueError('cache counts do not match its array')
    return np.split(array, np.cumsum(counts)[:-1])


def write_cache(cache_path, images, key):
    """Write the cache atomically: a crash never leaves a cache that loads wrong.

    Temporary names carry the process id, so two runs that rebuild the same
    cache at once (two trainings started together) do not take each other's
    file. The fingerprint goes last: a reader that sees it sees the array too.
    """
    counts = None
    if isinstance(images, list):
        counts, images = [len(c) for c in images], np.concatenate(images)
    tmp = '%s.%d.tmp.npy' % (cache_path, os.getpid())
    np.save(tmp, images)
    try:
        os.remove(cache_path + '.json')
    except FileNotFoundError:
        pass
    os.replace(tmp, cache_path)
    tmp_json = '%s.json.%d.tmp' % (cache_path, os.getpid())
    with open(tmp_json, 'w') as f:
        json.dump({'fingerprint': key, 'shape': list(images.shape), 'counts': counts}, f)
    os.replace(tmp_json, cache_path + '.json')


## Splits ---------------------------------------------------------------------------------------

def omniglot_split(character_folders):
    """Sorted character list shuffled with random.seed(1): 1100 train, 100 val, rest test."""
    order = sorted(character_folders)
    random.Random(OMNIGLOT_SPLIT_SEED).shuffle(order)
    n_train, n_val = OMNIGLOT_NUM_TRAIN, OMNIGLOT_NUM_VAL
    return {'train': order[:n_train], 'val': order[n_train:n_train + n_val], 'test': order[n_train + n_val:]}


## Task sampling ---------------------------------------------------------------------------------------

def sample_task(rng, class_images, num_classes, num_samples_per_class, rotate):
    """One N-way task as (images [N*S, ...], labels [N*S]) in the reference's layout.

    Classes get positions 0..N-1 in a random order; each sample index k holds
    one image of every class, in a fresh random class order. With rotate, each
    class is turned by a random multiple of 90 degrees (Omniglot).
    class_images[c][i] is image i of class c (load_classes); classes may differ
    in size, and with equal sizes the draws are those of one stacked array.
    """
    classes = rng.choice(len(class_images), num_classes, replace=False)
    picks = np.stack([rng.choice(len(class_images[c]), num_samples_per_class, replace=False)
                      for c in classes])
    rotations = rng.integers(0, 4, num_classes) if rotate else np.zeros(num_classes, int)
    images, labels = [], []
    for k in range(num_samples_per_class):
        for label in rng.permutation(num_classes):
            image = class_images[classes[label]][picks[label, k]]
            images.append(np.rot90(image, rotations[label]) if rotations[label] else image)
            labels.append(label)
    return np.stack(images), np.array(labels)


class DataGenerator:
    """Meta-batches for sinusoid, omniglot or miniimagenet.

    num_samples_per_class: examples per class (per function for sinusoid) in a
    task: the first update_batch_size of each class are the support set.
    """

    def __init__(self, num_samples_per_class, batch_size, datasource='sinusoid', num_classes=5,
                 test_set=False, data_dir='data', seed=0, baseline=None, cache=True):
        self.num_samples_per_class = num_samples_per_class
        self.batch_size = batch_size
        self.datasource = datasource
        self.seed = seed
        self.baseline = baseline
        self.eval_split = 'test' if test_set else 'val'
        self.num_classes = 1
        if datasource == 'sinusoid':
            self.amp_range, self.phase_range, self.input_range = [0.1, 5.0], [0, np.pi], [-5.0, 5.0]
            self.dim_input = 3 if baseline == 'oracle' else 1
            self.dim_output = 1
            return
        self.num_classes = self.dim_output = num_classes
        if datasource == 'omniglot':
            self.img_size, self.channels, self.rotate = (28, 28), 1, True
            self.root = os.path.join(data_dir, OMNIGLOT_FOLDER)
        elif datasource == 'miniimagenet':
            self.img_size, self.channels, self.rotate = (84, 84), 3, False
            self.root = os.path.join(data_dir, MINIIMAGENET_FOLDER)
        else:
            raise ValueError('Unrecognized data source: %r' % datasource)
        self.dim_input = int(np.prod(self.img_size)) * self.channels
        self.cache = cache
        self._splits = {}
        self._check_root()

    def _check_root(self):
        if not os.path.isdir(self.root):
            raise DataError('%s data not found at %s; prepare it first with: %s'
                            % (self.datasource, self.root, PREPARE_COMMANDS[self.datasource]))

    ## Class folders and images per split --------------------------------------------------------

    def class_folders(self, split):
        """The class folders of a split ('train', 'val' or 'test')."""
        if self.datasource == 'omniglot':
            return omniglot_split(list_class_folders(self.root, 2))[split]
        return list_class_folders(os.path.join(self.root, split), 1)

    def split_images(self, split):
        """uint8 images of a split, loaded on first use and kept in memory."""
        if split not in self._splits:
            if self.datasource == 'omniglot':
                self._splits[split] = self._omniglot_images()[split]
            else:
                folders = self.class_folders(split)
                cache = self.root + '.%s.cache.npy' % split if self.cache else None
                self._splits[split] = load_classes(folders, '.jpg', cache)
        return self._splits[split]

    def _omniglot_images(self):
        """All 1623 characters are small (25 MB): load once, index per split."""
        folders = sorted(list_class_folders(self.root, 2))
        cache = self.root + '.cache.npy' if self.cache else None
        images = load_classes(folders, '.png', cache)
        index = {f: i for i, f in enumerate(folders)}
        split = omniglot_split(folders)
        if isinstance(images, list):  # characters of different sizes
            return {name: [images[index[f]] for f in members] for name, members in split.items()}
        return {name: images[[index[f] for f in members]] for name, members in split.items()}

    def num_classes_in(self, split):
        return len(self.class_folders(split))

    def smallest_class(self, split):
        """(count, folder) of the split's class with the fewest images (counted, not loaded)."""
        extension = '.png' if self.datasource == 'omniglot' else '.jpg'
        counts = [(sum(n.lower().endswith(extension) for n in os.listdir(f)), f)
                  for f in self.class_folders(split)]
        return min(counts) if counts else (0, os.path.join(self.root, split))

    ## Batches ---------------------------------------------------------------------------------------

    def rng(self, split, index):
        """The random stream of batch `index` of a split; independent of all others."""
        return np.random.default_rng([self.seed, STREAMS[split], index])

    def generate(self, train=True, index=0):
        """Sinusoid batch: inputs [B, S, 1], outputs [B, S, 1], amp [B], phase [B]."""
        rng = self.rng('train' if train else self.eval_split, index)
        b, s = self.batch_size, self.num_samples_per_class
        amp = rng.uniform(*self.amp_range, size=b)
        phase = rng.uniform(*self.phase_range, size=b)
        inputs = rng.uniform(*self.input_range, size=[b, s, 1])
        outputs = amp[:, None, None] * np.sin(inputs - phase[:, None, None])
        return inputs.astype(np.float32), outputs.astype(np.float32), amp, phase

    def image_batch(self, split, index):
        """Image batch: images [B, N*S, dim] float32 and one-hot labels [B, N*S, N]."""
        rng = self.rng(split, index)
        class_images = self.split_images(split)
        images, labels = zip(*[sample_task(rng, class_images, self.num_classes,
                                           self.num_samples_per_class, self.rotate)
                               for _ in range(self.batch_size)])
        images = np.stack(images).reshape(self.batch_size, -1, self.dim_input).astype(np.float32) / 255.0
        if self.datasource == 'omniglot':
            images = 1.0 - images  # stored ink-dark; the network sees ink as 1
        return images, np.eye(self.num_classes, dtype=np.float32)[np.stack(labels)]

    def make_batch(self, train=True, index=0, update_batch_size=1):
        """(inputa, inputb, labela, labelb): the first N*K examples of each task are the support set."""
        if self.datasource == 'sinusoid':
            inputs, labels, amp, phase = self.generate(train, index)
            if self.baseline == 'oracle':
                task = np.broadcast_to(np.stack([amp, phase], -1)[:, None, :], inputs.shape[:2] + (2,))
                inputs = np.concatenate([inputs, task.astype(np.float32)], -1)
        else:
            inputs, labels = self.image_batch('train' if train else self.eval_split, index)
        split = self.num_classes * update_batch_size
        return inputs[:, :split], inputs[:, split:], labels[:, :split], labels[:, split:]

    def make_batches(self, train=True, indices=(0,), update_batch_size=1):
        """make_batch of each index, stacked along the task axis.

        Each index keeps its own stream, so task i of a stacked test batch is
        exactly what make_batch(index=i) gives alone (meta_batch_size 1).
        """
        parts = [self.make_batch(train, index, update_batch_size) for index in indices]
        return tuple(np.concatenate(arrays) for arrays in zip(*parts))
