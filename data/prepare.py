"""Prepare the Omniglot and miniImagenet image sets for the MAML experiments.

Run from the repository root:

    python -m data.prepare omniglot SRC [--out DIR]        (default DIR: data/omniglot_resized)
    python -m data.prepare miniimagenet SRC [--out DIR]    (default DIR: data/miniImagenet)
    python -m data.prepare folder SRC --out DIR [--split 0.64,0.16,0.2] [--seed 0]

Omniglot: SRC holds images_background.zip and images_evaluation.zip (or the
extracted folders images_background/ and images_evaluation/). Every 105x105
one-bit drawing becomes a 28x28 PNG at DIR/<Alphabet>/<characterNN>/<file>.png,
both sets merged.

miniImagenet: SRC holds train.csv, val.csv, test.csv (header filename,label)
and images.tar.gz (one folder images/ inside) or the extracted folder images/.
Every CSV row becomes DIR/<split>/<label>/<filename>, an 84x84 RGB JPEG.
Where to get both: WHERE_TO_GET below, and docs/data.md.

folder (your own data): SRC holds one folder per class, each holding that
class's images (.png .jpg .jpeg .bmp .gif, any size and colour mode). The
classes are split into train/val/test by split_classes() (sorted names,
shuffled with --seed, then counts or fractions from --split), and every image
becomes DIR/miniImagenet/<split>/<class>/<name>.jpg, 84x84 RGB JPEG: the
layout that `python main.py --datasource=miniimagenet --data_dir=DIR` reads.

Design notes:
- Every output file is written to a temporary name in its own folder and then
  renamed into place (os.replace is atomic), so a file under its final name is
  always complete. A rerun therefore trusts final-named files, skips them, and
  removes temporary leftovers of an interrupted run.
- The output folder is checked before anything is written: it may only hold
  files of this data set's layout (from an earlier, possibly partial run);
  anything else makes the command refuse instead of mixing data.
- Every run ends with a verification of the output folder against the
  expected counts and image sizes; the counts are parameters so that the tests
  can use small synthetic data, while the command line always enforces the
  real counts of the paper's data sets.
- Input problems raise PrepareError; main() turns it into a one-line message
  (`Error: ...`, as main.py and reproduce.py print theirs) and exit code 2
  (no traceback). For the paper's data sets a problem with the source also
  says where to get the right files (WHERE_TO_GET); problems with the output
  folder (OutputError) do not, the source is not their cause.

Only the standard library and Pillow are used. The source is only read,
never modified.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import io
import json
import math
import os
import random
import sys
import tarfile
import time
import zipfile
import zlib
from pathlib import Path
from typing import Callable, Iterable, Iterator

from PIL import Image, ImageOps

OMNIGLOT_SETS = ('images_background', 'images_evaluation')
OMNIGLOT_SIZE = (28, 28)
OMNIGLOT_DEFAULT_OUT = Path('data/omniglot_resized')

MINI_SPLITS = ('train', 'val', 'test')
MINI_SIZE = (84, 84)
MINI_ARCHIVE = 'images.tar.gz'
MINI_FOLDER = 'images'
MINI_DEFAULT_OUT = Path('data/miniImagenet')

OWN_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.gif')
# The folder under --data_dir that main.py --datasource=miniimagenet reads (data_generator.MINIIMAGENET_FOLDER).
OWN_LAYOUT_FOLDER = 'miniImagenet'
# miniImagenet's proportions (64/16/20 of 100 classes), the default split of a folder of classes.
OWN_DEFAULT_SPLIT = '0.64,0.16,0.2'
EXIF_ORIENTATION = 0x0112

# Appended to the errors about a paper data set's source (not to those about the output folder).
WHERE_TO_GET = {
    'omniglot': 'Omniglot is images_background.zip and images_evaluation.zip from '
                'https://github.com/brendenlake/omniglot (folder python/), see docs/data.md',
    'miniimagenet': "miniImagenet is Ravi & Larochelle's train.csv, val.csv and test.csv from "
                    'https://github.com/twitter/meta-learning-lstm (folder data/miniImagenet) with the images they '
                    'name (images.tar.gz or images/), see docs/data.md',
}

MARKER = '.prepared.json'  # written after a successful verification
TMP_SUFFIX = '.tmp'  # temporary files are named .<final name>.<pid>.tmp
PROGRESS_EVERY = 5000  # images between two progress lines


class PrepareError(Exception):
    """A problem with the input or the output folder that the user must fix.

    main() prints the message (which names the offending file or folder) and
    returns 2 instead of showing a traceback.
    """


class OutputError(PrepareError):
    """A problem with the output folder (not the source): no hint on where to get the data."""


@dataclasses.dataclass(frozen=True)
class OmniglotCounts:
    """What a complete Omniglot output must contain (the defaults are the real data set)."""

    alphabets: int = 50
    characters: int = 1623
    images_per_character: int = 20


@dataclasses.dataclass(frozen=True)
class MiniImagenetCounts:
    """What a complete miniImagenet output must contain (the defaults are the real data set)."""

    train: int = 64
    val: int = 16
    test: int = 20
    images_per_class: int = 600

    def classes(self, split: str) -> int:
        return getattr(self, split)


@dataclasses.dataclass(frozen=True)
class Item:
    """One image to produce: its output path (relative, '/'-separated),
    a label naming its source in error messages, and how to read its bytes."""

    rel: str
    label: str
    read: Callable[[], bytes]


@dataclasses.dataclass(frozen=True)
class CsvRow:
    """One row of train/val/test.csv, with its position for error messages."""

    split: str
    filename: str
    label: str
    csv_name: str
    line: int

    @property
    def rel(self) -> str:
        return f'{self.split}/{self.label}/{self.filename}'

    def line_ref(self) -> str:
        return f'{self.csv_name} line {self.line}'

    def where(self) -> str:
        return f'{self.line_ref()} ({self.filename})'


# ---------------------------------------------------------------------------
# Small helpers shared by both data sets


def fmt(n: int) -> str:
    """Thousands separators make the large counts readable."""
    return f'{n:,}'


def log(message: str) -> None:
    """Progress goes to stderr so that stdout holds only the verification result."""
    print(message, file=sys.stderr, flush=True)


def is_safe_name(name: str) -> bool:
    """A path component taken from an archive or CSV must not escape the output folder."""
    return name not in ('', '.', '..') and '/' not in name and '\\' not in name


def is_temp_name(name: str) -> bool:
    """Recognise the temporary files written by write_atomic()."""
    return name.startswith('.') and name.endswith(TMP_SUFFIX)


def is_ignorable_source_name(name: str) -> bool:
    """Junk that archiving tools add (.DS_Store, Thumbs.db, __MACOSX/) is not data."""
    return name.startswith('.') or name == '__MACOSX' or name == 'Thumbs.db'


def check_source_folder(src: Path) -> None:
    if not src.exists():
        raise PrepareError(f'source folder not found: {src}')
    if not src.is_dir():
        raise PrepareError(f'source {src} is a file, not a folder: give the folder that holds it')


def write_atomic(path: Path, data: bytes) -> None:
    """Write DATA to PATH so that PATH is either absent or complete.

    The bytes go to a temporary file in the same folder (same file system, so
    the rename is atomic) which is then renamed over the final name. No fsync:
    this protects against an interrupted process, which is the case that
    matters here, not against a power cut.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f'.{path.name}.{os.getpid()}{TMP_SUFFIX}'
    try:
        with open(tmp, 'wb') as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def decode_image(data: bytes, label: str) -> Image.Image:
    """Fully decode an image so that a corrupt file is reported by name."""
    try:
        im = Image.open(io.BytesIO(data))
        im.load()
    except Image.UnidentifiedImageError:  # its message would only show a BytesIO repr
        raise PrepareError(f'corrupt image {label}: not a recognisable image file') from None
    except Exception as e:  # Pillow raises many kinds of errors for bad data
        raise PrepareError(f'corrupt image {label}: {e}') from None
    return im


class Progress:
    """Prints 'done/total images, elapsed seconds' every PROGRESS_EVERY images."""

    def __init__(self, what: str, total: int, every: int = PROGRESS_EVERY):
        self.what, self.total, self.every = what, total, every
        self.done = 0
        self.start = time.monotonic()

    def step(self) -> None:
        self.done += 1
        if self.done % self.every == 0 or self.done == self.total:
            self.report()

    def report(self) -> None:
        elapsed = time.monotonic() - self.start
        log(f'  {self.what}: {fmt(self.done)}/{fmt(self.total)} images written, {elapsed:.1f} s')


# ---------------------------------------------------------------------------
# Output folder: layout check, leftovers, marker


def parent_dirs(rels: Iterable[str]) -> set[str]:
    """All folders (relative, '/'-separated) that the expected files live in."""
    dirs = set()
    for rel in rels:
        parts = rel.split('/')[:-1]
        for i in range(1, len(parts) + 1):
            dirs.add('/'.join(parts[:i]))
    return dirs


def read_marker(out: Path) -> dict | None:
    try:
        return json.loads((out / MARKER).read_text())
    except (OSError, ValueError):
        return None


def scan_output(out: Path, expected: set[str], dataset: str) -> set[str]:
    """Return the expected files already present in OUT.

    OUT may be missing, empty, or hold (part of) this data set's layout from
    an earlier run. Anything else (a foreign file or folder, another data
    set) makes us refuse, so that data are never mixed. Temporary files left
    by an interrupted run are deleted, but only once the folder is known to
    be ours.
    """
    if not out.exists():
        return set()
    if not out.is_dir():
        raise OutputError(f'output path exists and is not a folder: {out}')
    marker = read_marker(out)
    if marker is not None and marker.get('dataset') != dataset:
        raise OutputError(
            f'output folder {out} holds a prepared {marker.get("dataset")!r} data set, not {dataset!r}; '
            'choose another --out')
    expected_dirs = parent_dirs(expected)
    present, leftovers = set(), []
    for root, dirs, files in os.walk(out):
        rel_root = Path(root).relative_to(out).as_posix()
        prefix = '' if rel_root == '.' else rel_root + '/'
        for d in sorted(dirs):
            if prefix + d not in expected_dirs:
                raise foreign_content(out, Path(root) / d, dataset)
        for f in sorted(files):
            rel = prefix + f
            if is_temp_name(f):
                leftovers.append(Path(root) / f)
            elif rel in expected:
                present.add(rel)
            elif rel != MARKER:
                raise foreign_content(out, Path(root) / f, dataset)
    for path in leftovers:
        path.unlink()
    if leftovers:
        log(f'  removed {len(leftovers)} temporary file(s) left by an interrupted run')
    return present


def foreign_content(out: Path, path: Path, dataset: str) -> PrepareError:
    return OutputError(
        f'output folder {out} holds {path}, which is not part of the {dataset} layout; '
        'refusing to mix data: use an empty or new folder (--out), or remove it')


def write_marker(out: Path, info: dict) -> None:
    """Record what was prepared from what; rewritten only when it changes."""
    text = json.dumps(info, indent=2, sort_keys=True) + '\n'
    if (out / MARKER).exists() and (out / MARKER).read_text() == text:
        return
    write_atomic(out / MARKER, text.encode())


def remove_marker(out: Path) -> None:
    """The marker must not claim a verified data set while files are changing."""
    with contextlib.suppress(FileNotFoundError):
        (out / MARKER).unlink()


def source_info(paths: Iterable[Path]) -> list[dict]:
    """Name and size of each source archive/CSV (folders: name only) for the marker."""
    info = []
    for p in paths:
        entry = {'name': p.name}
        if p.is_file():
            entry['bytes'] = p.stat().st_size
        else:
            entry['kind'] = 'folder'
        info.append(entry)
    return info


PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'
# JPEG start-of-frame markers hold the image size; C4 (DHT), C8 (JPG) and CC (DAC) share the range but are not frames.
JPEG_SOF_MARKERS = set(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def png_header(path: str) -> tuple[int, int, int, int] | None:
    """(width, height, bit depth, colour type) from a PNG's IHDR chunk, or None if not a PNG.

    The verification reads only headers: decoding (or even Image.open-ing)
    every file would make a second run take many seconds, and the pixels
    were checked when the file was written.
    """
    with open(path, 'rb') as f:
        head = f.read(26)
    if len(head) < 26 or head[:8] != PNG_SIGNATURE or head[12:16] != b'IHDR':
        return None
    return int.from_bytes(head[16:20], 'big'), int.from_bytes(head[20:24], 'big'), head[24], head[25]


def jpeg_header(path: str) -> tuple[int, int, int] | None:
    """(width, height, number of colour components) from a JPEG's frame header, or None.

    Walks the marker segments up to the first start-of-frame segment, skipping
    the others (APPn, DQT, DHT, ...) by their length, without decoding anything.
    """
    with open(path, 'rb') as f:
        if f.read(2) != b'\xff\xd8':
            return None
        while True:
            if f.read(1) != b'\xff':
                return None
            marker = f.read(1)
            while marker == b'\xff':  # fill bytes
                marker = f.read(1)
            if not marker or marker[0] in (0xD9, 0xDA):  # end of image / start of scan before any frame
                return None
            if marker[0] == 0x01 or 0xD0 <= marker[0] <= 0xD7:  # markers without a segment
                continue
            length = int.from_bytes(f.read(2), 'big')
            if marker[0] in JPEG_SOF_MARKERS:
                frame = f.read(6)
                if len(frame) < 6:
                    return None
                return int.from_bytes(frame[3:5], 'big'), int.from_bytes(frame[1:3], 'big'), frame[5]
            if length < 2:
                return None
            f.seek(length - 2, os.SEEK_CUR)


def check_headers(paths: Iterable[str], header: Callable[[str], tuple | None], wanted: tuple,
                  description: str, problems: list[str]) -> int:
    """Append a problem if any image's header is not WANTED; return how many were checked."""
    bad, n = [], 0
    for p in paths:
        n += 1
        try:
            ok = header(p) == wanted
        except OSError:
            ok = False
        if not ok:
            bad.append(p)
    if bad:
        problems.append(f'{len(bad)} image(s) are not {description} or cannot be read, '
                        f'e.g. {bad[0]} (delete them and rerun)')
    return n


def list_dirs(folder: Path) -> list[Path]:
    """Sub-folders of FOLDER (none if it does not exist)."""
    if not folder.is_dir():
        return []
    with os.scandir(folder) as entries:
        return sorted(Path(e.path) for e in entries if e.is_dir())


def list_files(folder: Path, suffix: str) -> list[str]:
    """Paths of the non-hidden files of FOLDER ending in SUFFIX (os.scandir: fast for 60,000 files)."""
    with os.scandir(folder) as entries:
        return sorted(e.path for e in entries
                      if e.is_file() and e.name.lower().endswith(suffix) and not e.name.startswith('.'))


def fail_verification(out: Path, problems: list[str]) -> None:
    """One line, as every error: the problems joined by '; '."""
    remove_marker(out)
    raise PrepareError(f'verification of {out} failed: ' + '; '.join(problems))


def process(items: list[Item], out: Path, convert: Callable[[bytes, str], bytes], what: str) -> None:
    """Convert and atomically write every item (all of them still missing)."""
    progress = Progress(what, len(items))
    for item in items:
        write_atomic(out / item.rel, convert(item.read(), item.label))
        progress.step()


# ---------------------------------------------------------------------------
# Omniglot


def find_omniglot_sources(src: Path) -> list[Path]:
    """Each set as its zip (preferred: complete or loudly corrupt) or its extracted folder."""
    check_source_folder(src)
    found, missing = [], []
    for name in OMNIGLOT_SETS:
        if (src / f'{name}.zip').is_file():
            found.append(src / f'{name}.zip')
        elif (src / name).is_dir():
            found.append(src / name)
        else:
            missing.append(f'{name}.zip')
    if missing:
        folders = ' and '.join(f'{name[:-len(".zip")]}/' for name in missing)
        raise PrepareError(f'{src}: missing {" and ".join(missing)} (or the extracted {folders})')
    return found


def omniglot_rel(parts: list[str], where: str) -> str | None:
    """Map <Alphabet>/<character>/<file>.png (below the set's top folder) to its output path.

    Returns None for archive junk; anything else that does not fit the layout
    is an error, since it means the source is not what we think it is.
    """
    if any(is_ignorable_source_name(p) for p in parts):
        return None
    if len(parts) != 3 or not parts[2].lower().endswith('.png') or not all(map(is_safe_name, parts)):
        raise PrepareError(f'unexpected entry {where} (expected <Alphabet>/<character>/<file>.png)')
    return '/'.join(parts)


def omniglot_zip_items(zf: zipfile.ZipFile, zip_path: Path, top: str) -> list[Item]:
    """List the drawings of one Omniglot zip, whose entries all live under TOP/."""
    items = []
    for info in zf.infolist():
        if info.is_dir():
            continue
        parts = info.filename.split('/')
        if parts[0] == '__MACOSX' or is_ignorable_source_name(parts[-1]):
            continue
        where = f'{zip_path}:{info.filename}'
        if parts[0] != top:
            raise PrepareError(f'unexpected entry {where} (everything should be under {top}/)')
        rel = omniglot_rel(parts[1:], where)
        if rel is not None:
            items.append(Item(rel, where, zip_reader(zf, info.filename, where)))
    return items


def zip_reader(zf: zipfile.ZipFile, name: str, where: str) -> Callable[[], bytes]:
    def read() -> bytes:
        try:
            return zf.read(name)
        except (zipfile.BadZipFile, zlib.error, OSError, EOFError) as e:
            raise PrepareError(f'cannot read {where}: {e}') from None
    return read


def omniglot_folder_items(folder: Path) -> list[Item]:
    """List the drawings of one extracted Omniglot set folder."""
    items = []
    for path in sorted(folder.rglob('*')):
        if path.is_file():
            rel = omniglot_rel(list(path.relative_to(folder).parts), str(path))
            if rel is not None:
                items.append(Item(rel, str(path), path.read_bytes))
    return items


def open_omniglot_items(sources: list[Path], stack: contextlib.ExitStack) -> list[Item]:
    """All drawings of both sets; the two sets must not share an output path."""
    items: dict[str, Item] = {}
    for source in sources:
        top = source.name[:-len('.zip')] if source.suffix == '.zip' else source.name
        if source.suffix == '.zip':
            try:
                zf = stack.enter_context(zipfile.ZipFile(source))
            except (zipfile.BadZipFile, OSError) as e:
                raise PrepareError(f'not a readable zip archive: {source} ({e})') from None
            new = omniglot_zip_items(zf, source, top)
        else:
            new = omniglot_folder_items(source)
        if not new:
            raise PrepareError(f'no drawings found in {source} (expected {top}/<Alphabet>/<character>/<file>.png)')
        for item in new:
            if item.rel in items:
                raise PrepareError(f'{item.label} and {items[item.rel].label} would both become {item.rel}')
            items[item.rel] = item
    return sorted(items.values(), key=lambda it: it.rel)


def resize_omniglot(data: bytes, label: str) -> bytes:
    """28x28 PNG, made exactly as the reference made it.

    The reference opened the one-bit PNG as-is (mode '1') and called
    resize((28, 28), resample=LANCZOS). For mode '1' images Pillow silently
    uses NEAREST instead, so the result is binary (0 = ink, 255 = background)
    rather than anti-aliased grey. The reference's published results were
    obtained on that binary data, so we keep it: do NOT convert to 'L' first.
    """
    im = decode_image(data, label)
    small = im.resize(OMNIGLOT_SIZE, resample=Image.LANCZOS)
    buf = io.BytesIO()
    small.save(buf, format='PNG')
    return buf.getvalue()


def verify_omniglot(out: Path, expected: OmniglotCounts) -> str:
    """Check counts and image sizes in OUT; return the summary line or raise PrepareError."""
    problems = []
    alphabets = list_dirs(out)
    characters = [c for a in alphabets for c in list_dirs(a)]
    if len(alphabets) != expected.alphabets:
        problems.append(f'expected {fmt(expected.alphabets)} alphabets, found {fmt(len(alphabets))}')
    if len(characters) != expected.characters:
        problems.append(f'expected {fmt(expected.characters)} characters, found {fmt(len(characters))}')
    images = {c: list_files(c, '.png') for c in characters}
    wrong = [c for c, files in images.items() if len(files) != expected.images_per_character]
    if wrong:
        problems.append(f'{len(wrong)} character(s) do not have {expected.images_per_character} images, '
                        f'e.g. {wrong[0]} has {len(images[wrong[0]])}')
    # bit depth 1, colour type 0 (greyscale): what Pillow writes for, and reads as, mode '1'
    n = check_headers((p for files in images.values() for p in files), png_header,
                      (*OMNIGLOT_SIZE, 1, 0), '28x28 one-bit PNG', problems)
    if problems:
        fail_verification(out, problems)
    return (f'Omniglot verified in {out}: {fmt(len(alphabets))} alphabets, {fmt(len(characters))} characters, '
            f'{expected.images_per_character} images each ({fmt(n)} images), all 28x28 binary PNG')


def prepare_omniglot(src: Path, out: Path, expected: OmniglotCounts) -> str:
    """Resize every Omniglot drawing into OUT, then verify; return the verification line."""
    sources = find_omniglot_sources(src)
    with contextlib.ExitStack() as stack:
        items = open_omniglot_items(sources, stack)
        present = scan_output(out, {it.rel for it in items}, 'omniglot')
        todo = [it for it in items if it.rel not in present]
        log(f'omniglot: {fmt(len(items))} drawings in {", ".join(s.name for s in sources)}; '
            f'{fmt(len(present))} already in {out}, {fmt(len(todo))} to write')
        if todo:
            remove_marker(out)
            process(todo, out, resize_omniglot, 'omniglot')
    summary = verify_omniglot(out, expected)
    write_marker(out, {
        'dataset': 'omniglot', 'sources': source_info(sources),
        'alphabets': expected.alphabets, 'characters': expected.characters,
        'images_per_character': expected.images_per_character, 'image_size': list(OMNIGLOT_SIZE)})
    return summary


# ---------------------------------------------------------------------------
# miniImagenet


def read_split_csv(path: Path, split: str) -> list[CsvRow]:
    """Rows of one split file, header 'filename,label'; malformed rows are errors."""
    try:
        with open(path, newline='', encoding='utf-8-sig') as f:
            lines = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise PrepareError(f'cannot read {path}: {e}') from None
    if not lines or [c.strip() for c in lines[0]] != ['filename', 'label']:
        raise PrepareError(f'{path} line 1: expected the header "filename,label"')
    rows = []
    for line, fields in enumerate(lines[1:], start=2):
        if not fields or fields == ['']:
            continue
        fields = [c.strip() for c in fields]
        if len(fields) != 2 or not all(map(is_safe_name, fields)):
            raise PrepareError(f'{path} line {line}: expected "filename,label", got {",".join(fields)!r}')
        rows.append(CsvRow(split, fields[0], fields[1], path.name, line))
    if not rows:
        raise PrepareError(f'{path} has no rows')
    return rows


def read_mini_csvs(src: Path) -> list[CsvRow]:
    """All rows of train/val/test.csv; an image may appear in only one row."""
    missing = [f'{s}.csv' for s in MINI_SPLITS if not (src / f'{s}.csv').is_file()]
    if missing:
        raise PrepareError(f'{src}: missing {", ".join(missing)}')
    rows, seen = [], {}
    for split in MINI_SPLITS:
        for row in read_split_csv(src / f'{split}.csv', split):
            if row.filename in seen:
                raise PrepareError(f'{row.where()} repeats {seen[row.filename].where()}')
            seen[row.filename] = row
            rows.append(row)
    return rows


def find_mini_images(src: Path) -> Path:
    """images.tar.gz (preferred: it is the distributed form) or the extracted images/ folder."""
    if (src / MINI_ARCHIVE).is_file():
        return src / MINI_ARCHIVE
    if (src / MINI_FOLDER).is_dir():
        return src / MINI_FOLDER
    raise PrepareError(f'{src}: missing {MINI_ARCHIVE} (or the extracted folder {MINI_FOLDER}/)')


def missing_rows_error(rows: list[CsvRow], source: Path) -> PrepareError:
    shown = '; '.join(r.where() for r in rows[:5])
    more = f' and {len(rows) - 5} more' if len(rows) > 5 else ''
    return PrepareError(f'{len(rows)} CSV row(s) have no image in {source}: {shown}{more}')


def mini_folder_items(folder: Path, rows: list[CsvRow]) -> list[Item]:
    """Items read from an extracted images/ folder; every row's image must exist."""
    names = set(os.listdir(folder))
    missing = [r for r in rows if r.filename not in names]
    if missing:
        raise missing_rows_error(missing, folder)
    return [Item(r.rel, f'{folder / r.filename} ({r.line_ref()})', (folder / r.filename).read_bytes) for r in rows]


def iter_tar_images(tar_path: Path, wanted: set[str]) -> Iterator[tuple[str, str, bytes]]:
    """Stream (filename, member name, bytes) for the wanted images/<filename> members.

    The archive is read sequentially ('r|gz'), so nothing is extracted to disk
    and memory stays small. Archive errors are reported by name; errors of
    the consumer (outside the try) pass through unchanged.
    """
    archive_errors = (tarfile.TarError, OSError, EOFError, zlib.error)
    try:
        tf = tarfile.open(tar_path, mode='r|gz')
    except archive_errors as e:
        raise PrepareError(f'not a readable tar.gz archive: {tar_path} ({e})') from None
    with tf:
        members = iter(tf)
        while True:
            try:
                member = next(members, None)
                if member is None:
                    return
                parts = member.name.removeprefix('./').split('/')
                if not (member.isfile() and len(parts) == 2 and parts[0] == MINI_FOLDER
                        and parts[1] in wanted):
                    continue
                data = tf.extractfile(member).read()
            except archive_errors as e:
                raise PrepareError(f'corrupt or truncated archive {tar_path}: {e}') from None
            yield parts[1], member.name, data


def process_mini_tar(tar_path: Path, todo: list[CsvRow], out: Path) -> None:
    """Convert the TODO rows while streaming the archive once; then report rows it lacked."""
    by_name = {r.filename: r for r in todo}
    progress = Progress('miniimagenet', len(todo))
    for filename, member, data in iter_tar_images(tar_path, set(by_name)):
        row = by_name.pop(filename, None)
        if row is None:  # a duplicate member; the first copy was used
            continue
        write_atomic(out / row.rel, convert_mini(data, f'{tar_path}:{member} ({row.line_ref()})'))
        progress.step()
    if by_name:
        raise missing_rows_error(sorted(by_name.values(), key=lambda r: (MINI_SPLITS.index(r.split), r.line)),
                                 tar_path)


def convert_mini(data: bytes, label: str) -> bytes:
    """84x84 RGB JPEG bytes of one miniImagenet image (mini_jpeg)."""
    return mini_jpeg(decode_image(data, label), data)


def mini_jpeg(im: Image.Image, data: bytes) -> bytes:
    """84x84 RGB JPEG bytes of the decoded image IM, whose file held DATA.

    An image that already is an 84x84 RGB JPEG (all of the shared archive) is
    copied byte for byte: decoding and re-encoding a JPEG loses quality. It
    was still fully decoded first, so that a corrupt file is caught. Anything
    else is resized whole (no crop, the aspect ratio is not kept) with
    LANCZOS, as the reference did, and saved as JPEG with Pillow's default
    quality.
    """
    if im.size == MINI_SIZE and im.mode == 'RGB' and im.format == 'JPEG':
        return data
    im = to_rgb(im).resize(MINI_SIZE, resample=Image.LANCZOS)
    buf = io.BytesIO()
    im.save(buf, format='JPEG')
    return buf.getvalue()


def to_rgb(im: Image.Image) -> Image.Image:
    """RGB; transparent pixels (RGBA, LA, a palette with transparency) on white, as a viewer shows them.

    A plain convert('RGB') would keep whatever colour a transparent pixel
    happens to hold, often black.
    """
    if im.mode in ('RGBA', 'LA', 'PA') or (im.mode == 'P' and 'transparency' in im.info):
        rgba = im.convert('RGBA')
        return Image.alpha_composite(Image.new('RGBA', im.size, (255, 255, 255, 255)), rgba).convert('RGB')
    return im.convert('RGB')


def verify_mini(out: Path, rows: list[CsvRow], expected: MiniImagenetCounts) -> str:
    """Check classes per split, images per class, every CSV row and image sizes; return the summary line."""
    problems, found = [], {}
    for split in MINI_SPLITS:
        classes = list_dirs(out / split)
        if len(classes) != expected.classes(split):
            problems.append(f'{split}: expected {expected.classes(split)} classes, found {len(classes)}')
        files = {c: list_files(c, '.jpg') for c in classes}
        wrong = [c for c, paths in files.items() if len(paths) != expected.images_per_class]
        if wrong:
            problems.append(f'{len(wrong)} class(es) do not have {expected.images_per_class} images, '
                            f'e.g. {wrong[0]} has {len(files[wrong[0]])}')
        found.update((f'{split}/{c.name}/{os.path.basename(p)}', p) for c, paths in files.items() for p in paths)
    absent = [r for r in rows if r.rel not in found]
    if absent:
        problems.append(f'{len(absent)} CSV row(s) have no output image, e.g. {absent[0].where()}')
    # three colour components: Pillow decodes such a JPEG as RGB
    n = check_headers(found.values(), jpeg_header, (*MINI_SIZE, 3), '84x84 RGB JPEG', problems)
    if problems:
        fail_verification(out, problems)
    split_counts = '/'.join(str(expected.classes(s)) for s in MINI_SPLITS)
    return (f'miniImagenet verified in {out}: {split_counts} classes (train/val/test), '
            f'{expected.images_per_class} images each, all {fmt(len(rows))} CSV rows present, '
            f'all {fmt(n)} images 84x84 RGB JPEG')


def prepare_miniimagenet(src: Path, out: Path, expected: MiniImagenetCounts) -> str:
    """Copy/resize every CSV row's image into OUT/<split>/<label>/, then verify."""
    check_source_folder(src)
    rows = read_mini_csvs(src)
    images = find_mini_images(src)
    present = scan_output(out, {r.rel for r in rows}, 'miniimagenet')
    todo = [r for r in rows if r.rel not in present]
    log(f'miniimagenet: {fmt(len(rows))} CSV rows, images from {images.name}; '
        f'{fmt(len(present))} already in {out}, {fmt(len(todo))} to write')
    if todo:
        remove_marker(out)
        if images.is_dir():
            process(mini_folder_items(images, todo), out, convert_mini, 'miniimagenet')
        else:
            process_mini_tar(images, todo, out)
    summary = verify_mini(out, rows, expected)
    write_marker(out, {
        'dataset': 'miniimagenet',
        'sources': source_info([src / f'{s}.csv' for s in MINI_SPLITS] + [images]),
        'classes': {s: expected.classes(s) for s in MINI_SPLITS},
        'images_per_class': expected.images_per_class, 'image_size': list(MINI_SIZE)})
    return summary


# ---------------------------------------------------------------------------
# A folder of class folders (your own data)


@dataclasses.dataclass(frozen=True)
class Split:
    """--split: how many classes go to train, val and test, as counts or as fractions."""

    parts: tuple[float, float, float]
    counts: bool  # True: class counts (64,16,20); False: fractions of the classes (0.64,0.16,0.2)

    def __str__(self) -> str:
        return ','.join(f'{p:g}' for p in self.parts)

    def sizes(self, classes: int) -> tuple[int, int, int]:
        """(train, val, test) class counts for CLASSES classes, each 1 or more.

        Fractions: train and val are rounded half up, test takes the rest.
        """
        if self.counts:
            sizes = tuple(int(p) for p in self.parts)
            if sum(sizes) != classes:
                raise PrepareError(f'--split {self}: the counts add up to {sum(sizes)}, but there are {classes} '
                                   f'classes; give counts that add up to {classes}, or fractions')
        else:
            train, val = (math.floor(p * classes + 0.5) for p in self.parts[:2])
            sizes = (train, val, classes - train - val)
        empty = [name for name, n in zip(MINI_SPLITS, sizes) if n < 1]
        if empty:
            raise PrepareError(f'--split {self} leaves {" and ".join(empty)} without a class ({classes} classes in '
                               f'all); every split needs one, and N for N-way tasks: give counts, e.g. '
                               f'--split {max(classes - 2, 1)},1,1')
        return sizes


def parse_split(text: str) -> Split:
    """argparse type of --split: 'a,b,c', three class counts or three fractions adding up to 1."""
    usage = f'{text!r}: expected train,val,test as class counts (e.g. 64,16,20) or fractions adding up to 1 (e.g. 0.64,0.16,0.2)'
    parts = [p.strip() for p in text.split(',')]
    if len(parts) != 3:
        raise argparse.ArgumentTypeError(usage)
    if all(p.isdigit() for p in parts):
        return Split(tuple(float(p) for p in parts), counts=True)
    try:
        fractions = tuple(float(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(usage) from None
    if not all(0 <= f <= 1 for f in fractions) or abs(sum(fractions) - 1) > 1e-6:
        raise argparse.ArgumentTypeError(usage)
    return Split(fractions, counts=False)


def list_own_classes(src: Path) -> dict[str, list[Path]]:
    """{class name: its image files, sorted} of SRC/<class>/<image>; other entries are skipped, and said so."""
    check_source_folder(src)
    classes, skipped = {}, []
    with os.scandir(src) as entries:
        for entry in sorted(entries, key=lambda e: e.name):
            if is_ignorable_source_name(entry.name):
                continue
            if entry.is_dir():
                classes[entry.name] = list_own_images(Path(entry.path), skipped)
            else:
                skipped.append(entry.path)
    if not classes:
        raise PrepareError(f'{src} holds no class folders: expected one folder per class holding its images '
                           f'({src}/<class>/<image>, {" ".join(OWN_EXTENSIONS)})')
    if skipped:
        log(f'  skipped {len(skipped)} entr{"y" if len(skipped) == 1 else "ies"} that are not an image in a '
            f'class folder, e.g. {skipped[0]}')
    return classes


def list_own_images(folder: Path, skipped: list[str]) -> list[Path]:
    """The image files of one class folder, sorted; the other entries go to SKIPPED."""
    images = []
    with os.scandir(folder) as entries:
        for entry in sorted(entries, key=lambda e: e.name):
            if is_ignorable_source_name(entry.name):
                continue
            if entry.is_file() and entry.name.lower().endswith(OWN_EXTENSIONS):
                images.append(Path(entry.path))
            else:
                skipped.append(entry.path)
    if not images:
        raise PrepareError(f'class folder {folder} holds no images ({" ".join(OWN_EXTENSIONS)})')
    return images


def split_classes(names: Iterable[str], split: Split, seed: int) -> dict[str, list[str]]:
    """{split: class names}: the names sorted, shuffled with random.Random(seed), then cut
    into the first train, the next val and the remaining test classes (Split.sizes).

    Sorting first makes the split independent of the file system's listing
    order; Omniglot's characters are split by the same rule (data_generator.omniglot_split).
    """
    order = sorted(names)
    random.Random(seed).shuffle(order)
    n_train, n_val, _ = split.sizes(len(order))
    return {'train': order[:n_train], 'val': order[n_train:n_train + n_val], 'test': order[n_train + n_val:]}


def own_items(classes: dict[str, list[Path]], splits: dict[str, list[str]]) -> list[Item]:
    """One item per image, at <split>/<class>/<name>.jpg (the extension replaced); two files may not
    become one."""
    items = []
    for split, names in splits.items():
        for name in names:
            taken: dict[str, Path] = {}
            for path in classes[name]:
                out_name = path.stem + '.jpg'
                if out_name in taken:
                    raise PrepareError(f'{taken[out_name]} and {path} would both become {out_name}: rename one')
                taken[out_name] = path
                items.append(Item(f'{split}/{name}/{out_name}', str(path), path.read_bytes))
    return items


def convert_own(data: bytes, label: str) -> bytes:
    """84x84 RGB JPEG bytes of one of your images, turned upright first if its EXIF says so (camera photos)."""
    im = decode_image(data, label)
    if im.getexif().get(EXIF_ORIENTATION, 1) != 1:
        im = ImageOps.exif_transpose(im)
    return mini_jpeg(im, data)


def check_own_marker(root: Path, splits: dict[str, list[str]], options: str) -> None:
    """A folder prepared before with another split must not get a second split mixed in."""
    marker = read_marker(root)
    if marker is not None and marker.get('dataset') == 'folder' and marker.get('classes') != splits:
        raise OutputError(f'{root} was prepared with {marker.get("options")} from {marker.get("source")}, '
                          f'which splits the classes differently from {options} now; use another --out, '
                          f'or remove {root}')


def verify_own(root: Path, items: list[Item], splits: dict[str, list[str]]) -> tuple[str, int, int]:
    """Check each split's classes, every image and their headers.

    Returns (summary line, fewest classes in a split, fewest images in a class).
    """
    problems, found = [], set()
    for split, names in splits.items():
        classes = [c.name for c in list_dirs(root / split)]
        if sorted(classes) != sorted(names):
            problems.append(f'{split}: expected {len(names)} classes {sorted(names)[:3]}..., found {len(classes)}')
        found.update(f'{split}/{c}/{os.path.basename(p)}' for c in classes for p in list_files(root / split / c, '.jpg'))
    absent = sorted({it.rel for it in items} - found)
    if absent:
        problems.append(f'{len(absent)} image(s) missing, e.g. {root / absent[0]}')
    n = check_headers((str(root / rel) for rel in sorted(found)), jpeg_header, (*MINI_SIZE, 3),
                      '84x84 RGB JPEG', problems)
    if problems:
        fail_verification(root, problems)
    per_class: dict[str, int] = {}
    for it in items:
        per_class[it.rel.rsplit('/', 1)[0]] = per_class.get(it.rel.rsplit('/', 1)[0], 0) + 1
    fewest, most = min(per_class.values()), max(per_class.values())
    summary = (f'Own data verified in {root}: {"/".join(str(len(splits[s])) for s in MINI_SPLITS)} classes '
               f'(train/val/test), {fewest if fewest == most else f"{fewest} to {most}"} images each '
               f'({fmt(n)} images), all 84x84 RGB JPEG')
    return summary, min(len(names) for names in splits.values()), fewest


def next_step(out: Path, fewest_classes: int, fewest_images: int) -> str:
    """The command that trains on the prepared folder, and the limits of its flags."""
    return (f'Train with: python main.py --datasource=miniimagenet --data_dir={out} --num_classes=N '
            f'--update_batch_size=K ... (N <= {fewest_classes}, the fewest classes in a split; '
            f'training draws K+15 <= {fewest_images} images of a class, testing 2K)')


def prepare_folder(src: Path, out: Path, split: Split, seed: int) -> str:
    """Split SRC's classes and write their images at 84x84 into OUT/miniImagenet/, then verify."""
    classes = list_own_classes(src)
    splits = split_classes(classes, split, seed)
    items = own_items(classes, splits)
    root, options = out / OWN_LAYOUT_FOLDER, f'--split {split} --seed {seed}'
    check_own_marker(root, splits, options)
    present = scan_output(root, {it.rel for it in items}, 'folder')
    todo = [it for it in items if it.rel not in present]
    log(f'folder: {fmt(len(items))} images of {len(classes)} classes in {src}, split '
        f'{"/".join(str(len(splits[s])) for s in MINI_SPLITS)} (train/val/test) by {options}; '
        f'{fmt(len(present))} already in {root}, {fmt(len(todo))} to write')
    if todo:
        remove_marker(root)
        process(todo, root, convert_own, 'folder')
    summary, fewest_classes, fewest_images = verify_own(root, items, splits)
    write_marker(root, {'dataset': 'folder', 'source': str(src), 'options': options, 'classes': splits,
                        'image_size': list(MINI_SIZE)})
    return summary + '\n' + next_step(out, fewest_classes, fewest_images)


# ---------------------------------------------------------------------------
# Command line


class ArgumentParser(argparse.ArgumentParser):
    """A usage error as one line in the style of every other error: 'Error: ...', exit status 2."""

    def error(self, message):
        self.exit(2, f'Error: {message} ({self.prog} --help)\n')


HELP_EPILOG = f'''examples:
  python -m data.prepare omniglot PATH/TO/omniglot           # images_background.zip, images_evaluation.zip
  python -m data.prepare miniimagenet PATH/TO/miniImagenet   # train/val/test.csv, images.tar.gz or images/
  python -m data.prepare folder PATH/TO/my_images --out DIR  # my_images/<class>/<image>
  python main.py --datasource=miniimagenet --data_dir=DIR ...

folder: every image ({' '.join(OWN_EXTENSIONS)}; any size; RGB, grayscale, RGBA or
palette, transparent pixels made white) is resized whole to 84x84 and saved as
DIR/{OWN_LAYOUT_FOLDER}/<split>/<class>/<name>.jpg. The classes are split by a fixed
rule: their names sorted, shuffled with --seed, then the first ones go to train,
the next to val, the rest to test (--split). main.py needs N classes in a split
for N-way tasks, and K+15 images in a class to train K-shot (2K to test).

Where to get Omniglot and miniImagenet: docs/data.md.'''


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = ArgumentParser(
        prog='python -m data.prepare', formatter_class=argparse.RawDescriptionHelpFormatter, epilog=HELP_EPILOG,
        description='Prepare Omniglot (28x28) or miniImagenet (84x84) for MAML from the original archives,\n'
                    'or your own folder of class folders of images (84x84, read as miniImagenet).')
    parser.add_argument('dataset', choices=['omniglot', 'miniimagenet', 'folder'])
    parser.add_argument('src', type=Path, help='folder with the downloaded archives, or (folder) the folder of '
                        'class folders (read only)')
    parser.add_argument('--out', type=Path, default=None,
                        help=f'output folder (default {OMNIGLOT_DEFAULT_OUT} or {MINI_DEFAULT_OUT}); for folder, '
                        f'required: the data folder to give main.py as --data_dir (the images go to '
                        f'OUT/{OWN_LAYOUT_FOLDER}/)')
    parser.add_argument('--split', type=parse_split, default=None,
                        help=f'folder only: how many classes go to train,val,test, as counts (e.g. 64,16,20) or '
                        f'fractions (default {OWN_DEFAULT_SPLIT}: train and val rounded half up, test the rest)')
    parser.add_argument('--seed', type=int, default=None,
                        help='folder only: seed of the shuffle that splits the classes (default 0)')
    args = parser.parse_args(argv)
    if args.dataset == 'folder':
        if args.out is None:
            parser.error('folder needs --out DIR, the data folder to give main.py as --data_dir')
        args.split = args.split or parse_split(OWN_DEFAULT_SPLIT)
        args.seed = 0 if args.seed is None else args.seed
    elif args.split is not None or args.seed is not None:
        parser.error(f'--split and --seed apply to folder only, not to {args.dataset}')
    return args


def main(argv: list[str] | None = None, *,
         expected: OmniglotCounts | MiniImagenetCounts | None = None) -> int:
    """Run the command; return the exit code.

    EXPECTED overrides the real data set's counts; only the tests use it (on
    small synthetic data), so the command line always enforces the real counts.
    """
    args = parse_args(argv)
    start = time.monotonic()
    try:
        if args.dataset == 'omniglot':
            summary = prepare_omniglot(args.src, args.out or OMNIGLOT_DEFAULT_OUT, expected or OmniglotCounts())
        elif args.dataset == 'miniimagenet':
            summary = prepare_miniimagenet(args.src, args.out or MINI_DEFAULT_OUT, expected or MiniImagenetCounts())
        else:
            summary = prepare_folder(args.src, args.out, args.split, args.seed)
    except OutputError as e:
        print(f'Error: {e}', file=sys.stderr)
        return 2
    except PrepareError as e:
        hint = WHERE_TO_GET.get(args.dataset)
        print(f'Error: {e}' + (f'; {hint}' if hint else ''), file=sys.stderr)
        return 2
    except OSError as e:  # e.g. disk full or permissions on the output folder
        print(f'Error: {e}', file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print('interrupted: finished files are kept; rerun the same command to resume', file=sys.stderr)
        return 130
    print(summary)
    log(f'done in {time.monotonic() - start:.1f} s')
    return 0


if __name__ == '__main__':
    sys.exit(main())
