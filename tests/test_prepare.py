"""Tests of data/prepare.py (python -m data.prepare ...).

The fast tests build tiny synthetic sources in tmp_path in the same layout as
the real downloads and pass matching (small) expected counts to main(); the
real-data tests run on ../shared/data when it exists and skip otherwise.
"""

import io
import os
import random
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `pytest` (unlike `python -m pytest`) does not put the repo root on sys.path
    sys.path.insert(0, str(REPO))

from data import prepare  # noqa: E402
from data.prepare import MiniImagenetCounts, OmniglotCounts  # noqa: E402

SHARED_DATA = Path(__file__).resolve().parents[2] / 'shared' / 'data'

# Synthetic Omniglot: 3 alphabets, 4 characters, 3 drawings each.
OMNI_SETS = {'images_background': {'Alpha': 2, 'Beta': 1}, 'images_evaluation': {'Gamma': 1}}
OMNI_DRAWINGS = 3
SMALL_OMNI = OmniglotCounts(alphabets=3, characters=4, images_per_character=OMNI_DRAWINGS)

# Synthetic miniImagenet: 2/1/1 classes, 3 images each; one image is not 84x84.
MINI_CLASSES = {'train': ['n00000001', 'n00000002'], 'val': ['n00000003'], 'test': ['n00000004']}
MINI_PER_CLASS = 3
SMALL_MINI = MiniImagenetCounts(train=2, val=1, test=1, images_per_class=MINI_PER_CLASS)
ODD_SIZED = 'n0000000200000002.jpg'


# ---------------------------------------------------------------------------
# Builders of synthetic sources


def drawing_png(seed: int) -> bytes:
    """A 105x105 one-bit PNG like Omniglot's: white background, a few black strokes."""
    rng = random.Random(seed)
    im = Image.new('1', (105, 105), 1)
    draw = ImageDraw.Draw(im)
    for _ in range(3):
        draw.line([(rng.randrange(10, 95), rng.randrange(10, 95)) for _ in range(3)], fill=0, width=4)
    buf = io.BytesIO()
    im.save(buf, format='PNG')
    return buf.getvalue()


def omniglot_members():
    """(set name, path below the set's top folder, bytes) of every synthetic drawing."""
    seed = 0
    for set_name, alphabets in OMNI_SETS.items():
        for alphabet, n_chars in alphabets.items():
            for c in range(1, n_chars + 1):
                for d in range(1, OMNI_DRAWINGS + 1):
                    seed += 1
                    yield set_name, f'{alphabet}/character{c:02d}/{seed:04d}_{d:02d}.png', drawing_png(seed)


def build_omniglot(root: Path, as_zip: bool = True) -> Path:
    """SRC with images_background.zip/images_evaluation.zip (or the extracted folders)."""
    src = root / 'omniglot_src'
    src.mkdir()
    for set_name in OMNI_SETS:
        members = [(p, data) for s, p, data in omniglot_members() if s == set_name]
        if as_zip:
            with zipfile.ZipFile(src / f'{set_name}.zip', 'w') as zf:
                zf.writestr(f'{set_name}/', '')
                for p, data in members:
                    zf.writestr(f'{set_name}/{p}', data)
        else:
            for p, data in members:
                (src / set_name / p).parent.mkdir(parents=True, exist_ok=True)
                (src / set_name / p).write_bytes(data)
    return src


def photo_jpeg(seed: int, size=(84, 84)) -> bytes:
    """An RGB JPEG with smooth colour gradients and noise."""
    rng = np.random.default_rng(seed)
    h, w = size[1], size[0]
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x * 255 / w, y * 255 / h, np.full((h, w), rng.integers(0, 255))], axis=-1)
    pixels = np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels, 'RGB').save(buf, format='JPEG')
    return buf.getvalue()


def mini_images():
    """{filename: (split, label, bytes)} of the synthetic miniImagenet."""
    images, seed = {}, 0
    for split, labels in MINI_CLASSES.items():
        for label in labels:
            for i in range(1, MINI_PER_CLASS + 1):
                seed += 1
                name = f'{label}{i:08d}.jpg'
                size = (100, 90) if name == ODD_SIZED else (84, 84)
                images[name] = (split, label, photo_jpeg(seed, size))
    return images


def build_mini(root: Path, as_tar: bool = True) -> Path:
    """SRC with train/val/test.csv and images.tar.gz (or the extracted images/ folder)."""
    src = root / 'mini_src'
    src.mkdir()
    images = mini_images()
    for split in MINI_CLASSES:
        lines = ['filename,label'] + [f'{n},{lab}' for n, (s, lab, _) in images.items() if s == split]
        (src / f'{split}.csv').write_text('\n'.join(lines) + '\n')
    if as_tar:
        with tarfile.open(src / 'images.tar.gz', 'w:gz') as tf:
            for name, (_, _, data) in images.items():
                info = tarfile.TarInfo(f'images/{name}')
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    else:
        (src / 'images').mkdir()
        for name, (_, _, data) in images.items():
            (src / 'images' / name).write_bytes(data)
    return src


# ---------------------------------------------------------------------------
# Helpers


def run(capsys, *argv, expected=None):
    """Call main() in-process; return (exit code, stdout, stderr)."""
    code = prepare.main([str(a) for a in argv], expected=expected)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def files_under(folder: Path) -> dict:
    """{relative path: mtime_ns} of every file below FOLDER (hidden ones included)."""
    return {p.relative_to(folder).as_posix(): p.stat().st_mtime_ns
            for p in folder.rglob('*') if p.is_file()}


def temp_files(folder: Path) -> list:
    return [p for p in folder.rglob('*') if p.name.endswith('.tmp')]


def expected_omniglot_outputs() -> set:
    return {p for _, p, _ in omniglot_members()}


def expected_mini_outputs() -> set:
    return {f'{s}/{lab}/{n}' for n, (s, lab, _) in mini_images().items()}


def interrupt_on_replace(monkeypatch, nth: int) -> None:
    """Make the NTH atomic rename raise KeyboardInterrupt (as Ctrl-C would)."""
    real_replace, calls = os.replace, []

    def replace(a, b):
        calls.append(b)
        if len(calls) == nth:
            raise KeyboardInterrupt
        return real_replace(a, b)

    monkeypatch.setattr(prepare.os, 'replace', replace)


# ---------------------------------------------------------------------------
# Omniglot, synthetic


@pytest.mark.parametrize('as_zip', [True, False], ids=['zips', 'folders'])
def test_omniglot_layout_and_binary_pixels(tmp_path, capsys, as_zip):
    src, out = build_omniglot(tmp_path, as_zip), tmp_path / 'out'
    code, stdout, _ = run(capsys, 'omniglot', src, '--out', out, expected=SMALL_OMNI)
    assert code == 0
    assert 'Omniglot verified' in stdout and '3 alphabets, 4 characters, 3 images each' in stdout
    assert set(files_under(out)) == expected_omniglot_outputs() | {prepare.MARKER}
    for rel in expected_omniglot_outputs():
        im = Image.open(out / rel)
        assert im.size == (28, 28) and im.mode == '1'
        pixels = np.asarray(im.convert('L'))
        assert set(np.unique(pixels)) == {0, 255}  # binary: ink 0, background 255
        assert (pixels == 255).sum() > (pixels == 0).sum()


def test_omniglot_matches_reference_resize(tmp_path, capsys):
    """Same pixels as the reference's Image.open(png).resize((28, 28), LANCZOS) on the mode-'1' image."""
    src, out = build_omniglot(tmp_path), tmp_path / 'out'
    assert run(capsys, 'omniglot', src, '--out', out, expected=SMALL_OMNI)[0] == 0
    for _, rel, data in omniglot_members():
        reference = Image.open(io.BytesIO(data)).resize((28, 28), resample=Image.LANCZOS)
        assert np.array_equal(np.asarray(Image.open(out / rel)), np.asarray(reference))


def test_omniglot_second_run_rewrites_nothing(tmp_path, capsys):
    src, out = build_omniglot(tmp_path), tmp_path / 'out'
    assert run(capsys, 'omniglot', src, '--out', out, expected=SMALL_OMNI)[0] == 0
    before = files_under(out)
    code, stdout, stderr = run(capsys, 'omniglot', src, '--out', out, expected=SMALL_OMNI)
    assert code == 0 and 'Omniglot verified' in stdout
    assert '0 to write' in stderr
    assert files_under(out) == before  # same files, same mtimes (marker included)


def test_omniglot_resumes_after_interruption(tmp_path, capsys, monkeypatch):
    src, out = build_omniglot(tmp_path), tmp_path / 'out'
    interrupt_on_replace(monkeypatch, nth=5)
    code, _, stderr = run(capsys, 'omniglot', src, '--out', out, expected=SMALL_OMNI)
    assert code == 130 and 'rerun' in stderr
    partial = files_under(out)
    assert len(partial) == 4 and prepare.MARKER not in partial  # 4 complete files, no half-written one
    assert temp_files(out) == []
    monkeypatch.undo()
    code, stdout, stderr = run(capsys, 'omniglot', src, '--out', out, expected=SMALL_OMNI)
    assert code == 0 and '4 already' in stderr
    after = files_under(out)
    assert set(after) == expected_omniglot_outputs() | {prepare.MARKER}
    assert all(after[rel] == mtime for rel, mtime in partial.items())  # finished files were kept


def test_omniglot_restart_removes_leftover_temp_and_fills_gaps(tmp_path, capsys):
    """A killed run (no cleanup) leaves a temp file and missing outputs; the rerun repairs both."""
    src, out = build_omniglot(tmp_path), tmp_path / 'out'
    assert run(capsys, 'omniglot', src, '--out', out, expected=SMALL_OMNI)[0] == 0
    removed = sorted(expected_omniglot_outputs())[:2]
    for rel in removed:
        (out / rel).unlink()
    leftover = (out / removed[0]).parent / f'.{Path(removed[0]).name}.12345.tmp'
    leftover.write_bytes(b'half a png')
    kept = {rel: m for rel, m in files_under(out).items() if not rel.endswith('.tmp')}
    code, stdout, stderr = run(capsys, 'omniglot', src, '--out', out, expected=SMALL_OMNI)
    assert code == 0 and 'Omniglot verified' in stdout
    assert 'removed 1 temporary file' in stderr and '2 to write' in stderr
    assert not leftover.exists()
    after = files_under(out)
    assert set(after) == expected_omniglot_outputs() | {prepare.MARKER}
    assert all(after[rel] == m for rel, m in kept.items() if rel != prepare.MARKER)


def test_omniglot_cli_enforces_real_counts(tmp_path, capsys):
    src, out = build_omniglot(tmp_path), tmp_path / 'out'
    code, _, stderr = run(capsys, 'omniglot', src, '--out', out)  # no expected= : the real counts
    assert code == 2
    assert 'expected 50 alphabets, found 3' in stderr and 'expected 1,623 characters, found 4' in stderr
    assert 'do not have 20 images' in stderr
    assert not (out / prepare.MARKER).exists()


def test_omniglot_missing_source_folder(tmp_path, capsys):
    code, _, stderr = run(capsys, 'omniglot', tmp_path / 'nowhere', expected=SMALL_OMNI)
    assert code == 2 and 'source folder not found' in stderr and 'nowhere' in stderr


def test_omniglot_missing_archive(tmp_path, capsys):
    src = build_omniglot(tmp_path)
    (src / 'images_evaluation.zip').unlink()
    code, _, stderr = run(capsys, 'omniglot', src, '--out', tmp_path / 'out', expected=SMALL_OMNI)
    assert code == 2 and 'missing images_evaluation.zip' in stderr
    assert 'Traceback' not in stderr


def test_omniglot_corrupt_image(tmp_path, capsys):
    src = build_omniglot(tmp_path)
    member = 'images_evaluation/Gamma/character01/9999_01.png'
    with zipfile.ZipFile(src / 'images_evaluation.zip', 'a') as zf:
        zf.writestr(member, b'\x89PNG\r\n\x1a\n this is not a png')
    code, _, stderr = run(capsys, 'omniglot', src, '--out', tmp_path / 'out', expected=SMALL_OMNI)
    assert code == 2 and 'corrupt image' in stderr and member in stderr


def test_omniglot_not_a_zip(tmp_path, capsys):
    src = build_omniglot(tmp_path)
    (src / 'images_background.zip').write_bytes(b'garbage')
    code, _, stderr = run(capsys, 'omniglot', src, '--out', tmp_path / 'out', expected=SMALL_OMNI)
    assert code == 2 and 'images_background.zip' in stderr


def test_omniglot_refuses_foreign_output_folder(tmp_path, capsys):
    src, out = build_omniglot(tmp_path), tmp_path / 'out'
    out.mkdir()
    (out / 'notes.txt').write_text('mine')
    code, _, stderr = run(capsys, 'omniglot', src, '--out', out, expected=SMALL_OMNI)
    assert code == 2 and 'notes.txt' in stderr and 'refusing' in stderr
    assert 'github.com' not in stderr  # a problem of the output folder: no hint about the download
    assert sorted(p.name for p in out.iterdir()) == ['notes.txt']  # nothing written


def test_omniglot_refuses_output_path_that_is_a_file(tmp_path, capsys):
    src, out = build_omniglot(tmp_path), tmp_path / 'out'
    out.write_text('x')
    code, _, stderr = run(capsys, 'omniglot', src, '--out', out, expected=SMALL_OMNI)
    assert code == 2 and 'not a folder' in stderr and str(out) in stderr


# ---------------------------------------------------------------------------
# miniImagenet, synthetic


@pytest.mark.parametrize('as_tar', [True, False], ids=['tar', 'folder'])
def test_mini_layout_and_images(tmp_path, capsys, as_tar):
    src, out = build_mini(tmp_path, as_tar), tmp_path / 'out'
    code, stdout, _ = run(capsys, 'miniimagenet', src, '--out', out, expected=SMALL_MINI)
    assert code == 0
    assert 'miniImagenet verified' in stdout and '2/1/1 classes' in stdout and 'all 12 CSV rows present' in stdout
    assert set(files_under(out)) == expected_mini_outputs() | {prepare.MARKER}
    for name, (split, label, data) in mini_images().items():
        path = out / split / label / name
        im = Image.open(path)
        assert im.size == (84, 84) and im.mode == 'RGB' and im.format == 'JPEG'
        if name != ODD_SIZED:
            assert path.read_bytes() == data  # copied unchanged: no second lossy encode


def test_mini_second_run_rewrites_nothing_and_skips_archive(tmp_path, capsys, monkeypatch):
    src, out = build_mini(tmp_path), tmp_path / 'out'
    assert run(capsys, 'miniimagenet', src, '--out', out, expected=SMALL_MINI)[0] == 0
    before = files_under(out)

    def no_tar(*args, **kwargs):
        raise AssertionError('the archive should not be opened when everything is prepared')

    monkeypatch.setattr(prepare.tarfile, 'open', no_tar)
    code, stdout, stderr = run(capsys, 'miniimagenet', src, '--out', out, expected=SMALL_MINI)
    assert code == 0 and 'miniImagenet verified' in stdout and '0 to write' in stderr
    assert files_under(out) == before


def test_mini_resumes_after_interruption(tmp_path, capsys, monkeypatch):
    src, out = build_mini(tmp_path), tmp_path / 'out'
    interrupt_on_replace(monkeypatch, nth=6)
    assert run(capsys, 'miniimagenet', src, '--out', out, expected=SMALL_MINI)[0] == 130
    partial = files_under(out)
    assert len(partial) == 5 and temp_files(out) == []
    monkeypatch.undo()
    code, stdout, stderr = run(capsys, 'miniimagenet', src, '--out', out, expected=SMALL_MINI)
    assert code == 0 and '5 already' in stderr and '7 to write' in stderr
    after = files_under(out)
    assert set(after) == expected_mini_outputs() | {prepare.MARKER}
    assert all(after[rel] == m for rel, m in partial.items())


def test_mini_cli_enforces_real_counts(tmp_path, capsys):
    src, out = build_mini(tmp_path), tmp_path / 'out'
    code, _, stderr = run(capsys, 'miniimagenet', src, '--out', out)
    assert code == 2
    assert 'train: expected 64 classes, found 2' in stderr and 'do not have 600 images' in stderr


def test_mini_missing_csv(tmp_path, capsys):
    src = build_mini(tmp_path)
    (src / 'val.csv').unlink()
    code, _, stderr = run(capsys, 'miniimagenet', src, '--out', tmp_path / 'out', expected=SMALL_MINI)
    assert code == 2 and 'missing val.csv' in stderr


def test_mini_missing_images(tmp_path, capsys):
    src = build_mini(tmp_path)
    (src / 'images.tar.gz').unlink()
    code, _, stderr = run(capsys, 'miniimagenet', src, '--out', tmp_path / 'out', expected=SMALL_MINI)
    assert code == 2 and 'images.tar.gz' in stderr and 'images/' in stderr


@pytest.mark.parametrize('as_tar', [True, False], ids=['tar', 'folder'])
def test_mini_csv_row_without_image(tmp_path, capsys, as_tar):
    src = build_mini(tmp_path, as_tar)
    with open(src / 'train.csv', 'a') as f:
        f.write('n0000000100000099.jpg,n00000001\n')  # becomes line 8 of train.csv
    code, _, stderr = run(capsys, 'miniimagenet', src, '--out', tmp_path / 'out', expected=SMALL_MINI)
    assert code == 2
    assert 'train.csv line 8 (n0000000100000099.jpg)' in stderr
    assert ('images.tar.gz' if as_tar else 'images') in stderr


@pytest.mark.parametrize('as_tar', [True, False], ids=['tar', 'folder'])
def test_mini_corrupt_image(tmp_path, capsys, as_tar):
    src = build_mini(tmp_path, as_tar)
    bad = 'n0000000300000002.jpg'
    if as_tar:
        images = mini_images()
        with tarfile.open(src / 'images.tar.gz', 'w:gz') as tf:
            for name, (_, _, data) in images.items():
                data = data[:200] if name == bad else data  # truncated JPEG
                info = tarfile.TarInfo(f'images/{name}')
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    else:
        (src / 'images' / bad).write_bytes(b'not a jpeg')
    code, _, stderr = run(capsys, 'miniimagenet', src, '--out', tmp_path / 'out', expected=SMALL_MINI)
    assert code == 2 and 'corrupt image' in stderr and bad in stderr and 'val.csv line 3' in stderr


def test_mini_truncated_archive(tmp_path, capsys):
    src = build_mini(tmp_path)
    archive = src / 'images.tar.gz'
    archive.write_bytes(archive.read_bytes()[:3000])
    code, _, stderr = run(capsys, 'miniimagenet', src, '--out', tmp_path / 'out', expected=SMALL_MINI)
    assert code == 2 and 'images.tar.gz' in stderr and 'Traceback' not in stderr


def test_mini_bad_csv_header(tmp_path, capsys):
    src = build_mini(tmp_path)
    (src / 'test.csv').write_text('name,class\nx.jpg,n1\n')
    code, _, stderr = run(capsys, 'miniimagenet', src, '--out', tmp_path / 'out', expected=SMALL_MINI)
    assert code == 2 and 'test.csv line 1' in stderr and 'filename,label' in stderr


def test_mini_refuses_other_dataset_in_output(tmp_path, capsys):
    """An Omniglot output folder must not receive miniImagenet images."""
    out = tmp_path / 'out'
    assert run(capsys, 'omniglot', build_omniglot(tmp_path), '--out', out, expected=SMALL_OMNI)[0] == 0
    before = files_under(out)
    code, _, stderr = run(capsys, 'miniimagenet', build_mini(tmp_path), '--out', out, expected=SMALL_MINI)
    assert code == 2 and "prepared 'omniglot' data set" in stderr
    assert files_under(out) == before


def test_mini_refuses_foreign_files_in_output(tmp_path, capsys):
    src, out = build_mini(tmp_path), tmp_path / 'out'
    (out / 'train' / 'n00000001').mkdir(parents=True)
    (out / 'train' / 'n00000001' / 'cat.png').write_bytes(b'x')
    code, _, stderr = run(capsys, 'miniimagenet', src, '--out', out, expected=SMALL_MINI)
    assert code == 2 and 'cat.png' in stderr and 'refusing' in stderr


def test_command_line_reports_errors_without_traceback(tmp_path):
    """The real entry point: python -m data.prepare, exit code and message."""
    result = subprocess.run([sys.executable, '-m', 'data.prepare', 'miniimagenet', str(tmp_path / 'absent')],
                            cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.startswith('Error: source folder not found') and 'absent' in result.stderr
    assert 'Traceback' not in result.stderr


def test_command_line_usage_error_is_one_error_line():
    result = subprocess.run([sys.executable, '-m', 'data.prepare', 'omniglot'],
                            cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        'Error: the following arguments are required: src (python -m data.prepare --help)']


# ---------------------------------------------------------------------------
# Something else than the expected download: one line that says where to get it


def wrong_source(tmp_path: Path, case: str) -> tuple[str, Path]:
    """(data set, SRC) for each kind of wrong source."""
    src = tmp_path / 'src'
    if case == 'file':
        src.write_text('x')
        return 'omniglot', src
    src.mkdir()
    if case == 'empty omniglot':
        return 'omniglot', src
    if case == 'empty miniimagenet':
        return 'miniimagenet', src
    if case == 'wrong zip':  # e.g. the small subset from the same repository, renamed
        for name in ('images_background', 'images_evaluation'):
            with zipfile.ZipFile(src / f'{name}.zip', 'w') as zf:
                zf.writestr('images_background_small1/Alpha/character01/0001_01.png', drawing_png(1))
        return 'omniglot', src
    if case == 'csv header':
        mini = build_mini(tmp_path)
        (mini / 'train.csv').write_text('image,class\nx.jpg,n1\n')
        return 'miniimagenet', mini
    raise AssertionError(case)


@pytest.mark.parametrize('case, fragment', [
    ('file', 'is a file, not a folder'),
    ('empty omniglot', 'missing images_background.zip and images_evaluation.zip'),
    ('empty miniimagenet', 'missing train.csv, val.csv, test.csv'),
    ('wrong zip', 'everything should be under images_background/'),
    ('csv header', 'train.csv line 1: expected the header "filename,label"'),
])
def test_a_wrong_source_says_what_was_expected_and_where_to_get_it(tmp_path, capsys, case, fragment):
    dataset, src = wrong_source(tmp_path, case)
    code, _, stderr = run(capsys, dataset, src, '--out', tmp_path / 'out')
    assert code == 2
    assert stderr.count('\n') == 1 and stderr.startswith('Error: '), stderr
    assert fragment in stderr
    where = {'omniglot': 'https://github.com/brendenlake/omniglot (folder python/)',
             'miniimagenet': 'https://github.com/twitter/meta-learning-lstm (folder data/miniImagenet)'}
    assert where[dataset] in stderr and 'docs/data.md' in stderr


def test_a_failed_verification_is_one_error_line(tmp_path, capsys):
    """An incomplete download (a few alphabets) prepares, then fails the real counts on one line."""
    code, _, stderr = run(capsys, 'omniglot', build_omniglot(tmp_path), '--out', tmp_path / 'out')
    assert code == 2
    errors = [line for line in stderr.splitlines() if not line.startswith(('omniglot:', '  '))]
    assert len(errors) == 1 and errors[0].startswith('Error: verification of'), stderr
    assert 'expected 50 alphabets, found 3; expected 1,623 characters, found 4; ' in errors[0]
    assert 'do not have 20 images' in errors[0] and 'github.com/brendenlake/omniglot' in errors[0]


# ---------------------------------------------------------------------------
# Real data (../shared/data), skipped when absent


def real_source(name: str) -> Path:
    src = SHARED_DATA / name
    if not src.is_dir():
        pytest.skip(f'real data not available: {src} does not exist (see shared/data/README.md)')
    return src


def test_real_omniglot(prepare_real_data):
    data, stdout = prepare_real_data('omniglot')
    out = data / 'omniglot_resized'
    assert '50 alphabets, 1,623 characters, 20 images each (32,460 images)' in stdout
    alphabets = [a for a in out.iterdir() if a.is_dir()]
    characters = [c for a in alphabets for c in a.iterdir()]
    assert len(alphabets) == 50 and len(characters) == 1623
    assert all(len(list(c.glob('*.png'))) == 20 for c in characters)
    ink = background = 0
    for path in sorted(out.glob('*/*/*.png')):
        stored = np.asarray(Image.open(path).convert('L'))
        assert stored.shape == (28, 28)
        assert set(np.unique(stored)) <= {0, 255}  # background 255, ink 0, nothing in between
        x = 1.0 - stored / 255.0  # how the training code loads it: ink 1, background 0
        assert set(np.unique(x)) <= {0.0, 1.0}
        assert (x == 0).sum() > (x == 1).sum()
        ink, background = ink + (x == 1).sum(), background + (x == 0).sum()
    assert ink > 0 and background > 5 * ink


def test_real_miniimagenet(prepare_real_data):
    data, stdout = prepare_real_data('miniimagenet')
    src, out = real_source('miniImagenet'), data / 'miniImagenet'
    assert '64/16/20 classes' in stdout and 'all 60,000 CSV rows present' in stdout
    for split, n_classes in [('train', 64), ('val', 16), ('test', 20)]:
        classes = [c for c in (out / split).iterdir()]
        assert len(classes) == n_classes
        assert all(len(list(c.glob('*.jpg'))) == 600 for c in classes)
        rows = (src / f'{split}.csv').read_text().split()[1:]
        assert len(rows) == n_classes * 600
        assert all((out / split / label / name).is_file() for name, label in (r.split(',') for r in rows))
    sample = sorted(out.glob('*/*/*.jpg'))[::200]
    pixels = np.stack([np.asarray(Image.open(p)) for p in sample])
    assert pixels.shape == (len(sample), 84, 84, 3) and pixels.dtype == np.uint8
    assert pixels.min() < 20 and pixels.max() > 235 and pixels.std() > 30
    with tarfile.open(src / 'images.tar.gz', 'r|gz') as tf:  # the first member is enough
        member = next(m for m in tf if m.isfile())
        original = tf.extractfile(member).read()
    copies = list(out.glob(f'*/*/{Path(member.name).name}'))
    assert len(copies) == 1 and copies[0].read_bytes() == original  # 84x84 sources copied unchanged
