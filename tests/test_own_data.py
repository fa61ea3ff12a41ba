"""Your own data set: python -m data.prepare folder, then main.py --datasource=miniimagenet on it.

A small folder of class folders is generated here as a user's data could look
(PNG, JPEG, BMP, GIF; RGB, grayscale, RGBA, palette; many sizes; classes of
different sizes), prepared, trained on for two iterations and tested. The bad
inputs must each stop with one 'Error:' line and exit status 2, before any
training: those of the folder in data.prepare, those that depend on the
training flags (N-way, K-shot) in main.py.
"""
import os
import random
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import data_generator
from conftest import REPO
from data import prepare
from runner import describe, read_results_csv, run_main

# (extension, PIL mode, size) cycled over the images of every class
VARIANTS = [('.png', 'RGB', (84, 84)), ('.jpg', 'RGB', (120, 90)), ('.jpeg', 'L', (60, 60)),
            ('.bmp', 'RGB', (100, 140)), ('.gif', 'P', (84, 84)), ('.png', 'RGBA', (70, 70)),
            ('.png', 'L', (32, 48)), ('.jpg', 'RGB', (84, 84))]
# 2-way 1-shot, a tiny net: training draws K+15 = 16 images of a class, testing 2K = 2
FLAGS = ['--datasource=miniimagenet', '--num_classes=2', '--update_batch_size=1', '--update_lr=0.01',
         '--num_filters=8', '--max_pool=True', '--meta_batch_size=2']


def make_own_images(root, classes=8, images=(18, 22), seed=0):
    """root/class_XX/img_YYY.<ext>: class c holds images[0] + c % (spread) images.

    Each class is a fixed random colour pattern plus a little noise per
    image, so a model can tell the classes apart after a few iterations.
    """
    rng = np.random.default_rng(seed)
    low, high = images
    for c in range(classes):
        folder = os.path.join(root, 'class_%02d' % c)
        os.makedirs(folder, exist_ok=True)
        base = rng.integers(0, 256, (12, 12, 3))
        for i in range(low + c % (high - low + 1)):
            ext, mode, size = VARIANTS[i % len(VARIANTS)]
            noisy = np.clip(base + rng.integers(-20, 21, base.shape), 0, 255).astype(np.uint8)
            im = Image.fromarray(noisy).resize(size, resample=Image.NEAREST)
            im = im.convert(mode) if mode != 'RGB' else im
            im.save(os.path.join(folder, 'img_%03d%s' % (i, ext)))
    return str(root)


def prepare_folder(capsys, *args):
    """python -m data.prepare folder ARGS, in process: (exit status, stdout, stderr)."""
    code = prepare.main(['folder', *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_error_line(code, err, *fragments):
    """Exit status 2 and one 'Error:' line, the last (progress lines may come before it)."""
    assert code == 2, err
    lines = err.splitlines()
    assert lines and lines[-1].startswith('Error: '), err
    assert sum(line.startswith('Error') for line in lines) == 1, err
    for fragment in fragments:
        assert fragment in lines[-1], 'missing %r in %s' % (fragment, err)


def layout(out):
    """{split: {class: [files]}} of out/miniImagenet."""
    root = os.path.join(out, 'miniImagenet')
    return {split: {c: sorted(os.listdir(os.path.join(root, split, c)))
                    for c in os.listdir(os.path.join(root, split))} for split in ('train', 'val', 'test')}


## Prepare, train, test ---------------------------------------------------------------------------

@pytest.fixture(scope='module')
def own_folder(tmp_path_factory):
    return make_own_images(tmp_path_factory.mktemp('own') / 'my_images')


def test_prepare_train_and_test_a_folder_of_class_folders(own_folder, tmp_path, capsys):
    out = tmp_path / 'prepared'
    code, stdout, stderr = prepare_folder(capsys, own_folder, '--out', out, '--split', '4,2,2')
    assert code == 0, stderr
    assert 'Own data verified' in stdout and '4/2/2 classes' in stdout and '18 to 22 images each' in stdout
    assert '--data_dir=%s' % out in stdout
    # the stated split rule: names sorted, shuffled with random.Random(seed), then 4 train, 2 val, 2 test
    names = sorted(os.listdir(own_folder))
    random.Random(0).shuffle(names)
    found = layout(out)
    assert {s: sorted(c) for s, c in found.items()} == {
        'train': sorted(names[:4]), 'val': sorted(names[4:6]), 'test': sorted(names[6:])}
    for split, classes in found.items():
        for name, files in classes.items():
            sources = sorted(os.listdir(os.path.join(own_folder, name)))
            assert files == sorted(os.path.splitext(f)[0] + '.jpg' for f in sources)
            for f in files:
                with Image.open(os.path.join(out, 'miniImagenet', split, name, f)) as im:
                    assert (im.format, im.mode, im.size) == ('JPEG', 'RGB', (84, 84))

    logdir = tmp_path / 'logs'
    flags = FLAGS + ['--data_dir=%s' % out, '--logdir=%s' % logdir]
    train = run_main(*flags, '--metatrain_iterations=2', cwd=tmp_path)
    assert train.returncode == 0, describe(train)
    assert 'Last checkpoint' in train.stdout
    test = run_main(*flags, '--train=False', '--test_tasks_per_batch=20', cwd=tmp_path)
    assert test.returncode == 0, describe(test)
    exp_dir = logdir / 'cls_2.mbs_2.ubs_1.numstep1.updatelr0.01hidden8maxpoolbatchnorm'
    _, means, _, _ = read_results_csv(exp_dir / 'test_ubs1_stepsize0.01.csv')
    assert len(means) == 11 and all(0 <= m <= 1 for m in means)
    assert means[10] > 0.7  # the classes' patterns survive the preparation: 2-way chance is 0.5


def test_a_second_run_writes_nothing_and_another_split_is_refused(own_folder, tmp_path, capsys):
    out = tmp_path / 'prepared'
    assert prepare_folder(capsys, own_folder, '--out', out, '--split', '4,2,2')[0] == 0
    code, stdout, stderr = prepare_folder(capsys, own_folder, '--out', out, '--split', '4,2,2')
    assert code == 0 and 'Own data verified' in stdout and '0 to write' in stderr
    code, _, stderr = prepare_folder(capsys, own_folder, '--out', out, '--split', '4,2,2', '--seed', '1')
    assert_one_error_line(code, stderr, 'was prepared with --split 4,2,2 --seed 0', '--seed 1',
                          'use another --out')


def test_default_split_is_fractions_rounded_half_up(tmp_path, capsys):
    """10 classes at 0.64,0.16,0.2: 6.4 -> 6 train, 1.6 -> 2 val, the other 2 test."""
    src = make_own_images(tmp_path / 'ten', classes=10, images=(3, 3))
    code, stdout, stderr = prepare_folder(capsys, src, '--out', tmp_path / 'out')
    assert code == 0, stderr
    assert '6/2/2 classes' in stdout and '--split 0.64,0.16,0.2 --seed 0' in stderr
    other = prepare_folder(capsys, src, '--out', tmp_path / 'out2', '--seed', '5')
    assert other[0] == 0
    assert layout(tmp_path / 'out') != layout(tmp_path / 'out2')  # the seed decides which classes go where


def test_colour_modes_transparency_and_orientation(tmp_path, capsys):
    """Grayscale and palette become RGB; transparent pixels white; a photo's EXIF rotation applied."""
    src = tmp_path / 'src'
    for c in ('a', 'b', 'c'):
        (src / c).mkdir(parents=True)
    clear = Image.new('RGBA', (40, 40), (0, 0, 0, 0))
    clear.save(src / 'a' / 'clear.png')
    Image.new('L', (30, 50), 100).save(src / 'a' / 'grey.jpg')
    wide = Image.new('RGB', (160, 80), (0, 0, 0))
    wide.paste((255, 0, 0), (0, 0, 80, 80))  # left half red, right half black
    exif = Image.Exif()
    exif[0x0112] = 6  # stored turned: a viewer rotates it 90 degrees clockwise, red on top
    wide.save(src / 'b' / 'photo.jpg', exif=exif, quality=95)
    Image.new('P', (20, 20), 3).save(src / 'c' / 'palette.gif')
    assert prepare_folder(capsys, src, '--out', tmp_path / 'out', '--split', '1,1,1')[0] == 0

    def pixels(name):
        [path] = [os.path.join(d, f) for d, _, files in os.walk(tmp_path / 'out') for f in files if f == name]
        with Image.open(path) as im:
            assert (im.mode, im.size) == ('RGB', (84, 84))
            return np.asarray(im).astype(int)

    assert pixels('clear.jpg').min() > 245
    grey = pixels('grey.jpg')
    assert abs(grey - 100).max() <= 3
    photo = pixels('photo.jpg')
    assert photo[:30, :, 0].mean() > 200 and photo[54:, :, 0].mean() < 50
    assert pixels('palette.jpg').std(axis=2).max() < 3  # palette entry 3 is a grey


## Bad input to data.prepare folder ---------------------------------------------------------------

def test_a_corrupt_image_is_named(tmp_path, capsys):
    src = make_own_images(tmp_path / 'src', classes=3, images=(3, 3))
    broken = os.path.join(src, 'class_01', 'img_001.jpg')
    with open(broken, 'wb') as f:
        f.write(b'\xff\xd8\xff not really a jpeg')
    code, _, stderr = prepare_folder(capsys, src, '--out', tmp_path / 'out', '--split', '1,1,1')
    assert_one_error_line(code, stderr, 'corrupt image %s' % broken)


@pytest.mark.parametrize('case, fragments', [
    ('missing', ['source folder not found']),
    ('file', ['is a file, not a folder']),
    ('empty', ['holds no class folders', '<class>/<image>']),
    ('loose images', ['holds no class folders']),
    ('class without images', ['class folder', 'class_01', 'holds no images']),
    ('too few classes', ['--split 0.64,0.16,0.2 leaves', 'test without a class', '--split 2,1,1']),
    ('counts', ['--split 2,2,2: the counts add up to 6, but there are 3 classes']),
    ('same name', ['img_000.png', 'img_000.jpg', 'would both become img_000.jpg']),
])
def test_bad_source_folders(case, fragments, tmp_path, capsys):
    src = tmp_path / 'src'
    split = ['--split', '2,2,2' if case == 'counts' else '1,1,1']
    if case == 'file':
        src.write_text('not a folder')
    elif case == 'empty':
        src.mkdir()
    elif case == 'loose images':
        src.mkdir()
        Image.new('RGB', (9, 9)).save(src / 'cat.png')
    elif case != 'missing':
        make_own_images(src, classes=4 if case == 'too few classes' else 3, images=(3, 3))
    if case == 'too few classes':
        split = []  # 4 classes at 0.64,0.16,0.2: 3 train, 1 val, 0 test
    if case == 'class without images':
        for name in os.listdir(src / 'class_01'):
            os.rename(src / 'class_01' / name, src / 'class_01' / (name + '.txt'))
    if case == 'same name':
        Image.new('RGB', (9, 9)).save(src / 'class_02' / 'img_000.jpg')
    code, _, stderr = prepare_folder(capsys, src, '--out', tmp_path / 'out', *split)
    assert_one_error_line(code, stderr, *fragments)
    assert not (tmp_path / 'out').exists()  # nothing written


def test_a_folder_holding_other_data_is_refused(own_folder, tmp_path, capsys):
    out = tmp_path / 'out'
    (out / 'miniImagenet' / 'train' / 'n01532829').mkdir(parents=True)
    (out / 'miniImagenet' / 'train' / 'n01532829' / 'n0153282900000005.jpg').write_bytes(b'x')
    code, _, stderr = prepare_folder(capsys, own_folder, '--out', out, '--split', '4,2,2')
    assert_one_error_line(code, stderr, 'train/n01532829', 'refusing to mix data')


def test_command_line_needs_out_and_reports_without_traceback(tmp_path):
    missing_out = subprocess.run([sys.executable, '-m', 'data.prepare', 'folder', str(tmp_path)],
                                 cwd=REPO, capture_output=True, text=True, timeout=60)
    assert missing_out.returncode == 2
    assert missing_out.stderr.splitlines() == [
        'Error: folder needs --out DIR, the data folder to give main.py as --data_dir (python -m data.prepare --help)']
    bad_split = subprocess.run([sys.executable, '-m', 'data.prepare', 'folder', str(tmp_path), '--out',
                                str(tmp_path / 'out'), '--split', '0.5,0.5'],
                               cwd=REPO, capture_output=True, text=True, timeout=60)
    assert bad_split.returncode == 2 and len(bad_split.stderr.splitlines()) == 1
    assert bad_split.stderr.startswith("Error: argument --split: '0.5,0.5': expected train,val,test")


def test_the_layout_is_the_one_main_py_reads():
    assert prepare.OWN_LAYOUT_FOLDER == data_generator.MINIIMAGENET_FOLDER


## Bad flags for the prepared folder, caught by main.py before training ------------------------------

@pytest.fixture(scope='module')
def prepared(own_folder, tmp_path_factory):
    out = tmp_path_factory.mktemp('prepared')
    assert prepare.main(['folder', own_folder, '--out', str(out), '--split', '4,2,2']) == 0
    return out


@pytest.mark.parametrize('flags, fragments', [
    (['--num_classes=3'], ['--num_classes=3 but the val split of', 'has only 2 classes']),
    (['--update_batch_size=4'], ['--update_batch_size=4: a task needs K+15 = 19 images per class',
                                 'holds only 18']),
    (['--update_batch_size=10', '--train=False'], ['--update_batch_size=10: a task needs 2K = 20 images per class',
                                                    'holds only 18']),
])
def test_flags_the_prepared_folder_cannot_serve(prepared, flags, fragments, tmp_path):
    proc = run_main(*FLAGS, '--data_dir=%s' % prepared, '--logdir=%s' % (tmp_path / 'logs'), *flags, cwd=tmp_path,
                    timeout=300)
    assert proc.returncode == 2, describe(proc)
    lines = proc.stderr.splitlines()
    assert lines and all(line.startswith('Error: ') for line in lines), describe(proc)
    for fragment in fragments:
        assert fragment in proc.stderr, describe(proc)
    assert 'Done initializing' not in proc.stdout and not (tmp_path / 'logs').exists()


def test_missing_data_names_both_ways_to_prepare_it_on_one_line(tmp_path):
    proc = run_main(*FLAGS, '--data_dir=%s' % (tmp_path / 'nowhere'), '--logdir=%s' % (tmp_path / 'logs'),
                    cwd=tmp_path, timeout=300)
    assert proc.returncode == 2, describe(proc)
    [line] = proc.stderr.splitlines()
    assert line.startswith('Error: miniimagenet data not found at %s' % (tmp_path / 'nowhere' / 'miniImagenet'))
    assert 'python -m data.prepare miniimagenet' in line and 'python -m data.prepare folder' in line


## Classes of different sizes in data_generator -------------------------------------------------------

def test_classes_of_different_sizes_are_sampled_and_cached(tmp_path):
    root = tmp_path / 'split'
    sizes = [3, 7, 5]
    for c, n in enumerate(sizes):
        (root / ('c%d' % c)).mkdir(parents=True)
        for i in range(n):
            Image.new('RGB', (4, 4), (c, i, 0)).save(root / ('c%d' % c) / ('%02d.png' % i))
    folders = data_generator.list_class_folders(str(root), 1)
    cache = str(tmp_path / 'split.cache.npy')
    images = data_generator.load_classes(folders, '.png', cache, progress=False)
    assert [len(c) for c in images] == sizes
    again = data_generator.load_classes(folders, '.png', cache, progress=False)  # from the cache
    assert [c.tolist() for c in again] == [c.tolist() for c in images]
    for seed in range(20):
        task, labels = data_generator.sample_task(np.random.default_rng(seed), images, 3, 3, rotate=False)
        for image, label in zip(task, labels):
            assert image[0, 0, 1] < sizes[image[0, 0, 0]]  # an image of its class
        assert len({(tuple(im[0, 0]), int(lab)) for im, lab in zip(task, labels)}) == 9  # no repeats


def test_equal_classes_draw_the_same_tasks_as_one_array():
    """The paper's data sets keep their task streams: a list of equal classes is the stacked array."""
    stacked = np.random.default_rng(0).integers(0, 256, (10, 6, 4, 4), dtype=np.uint8)
    for seed in range(5):
        a = data_generator.sample_task(np.random.default_rng(seed), stacked, 5, 3, rotate=True)
        b = data_generator.sample_task(np.random.default_rng(seed), list(stacked), 5, 3, rotate=True)
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])
