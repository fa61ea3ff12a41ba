"""Prepare the Omniglot and miniImagenet image sets for the MAML experiments.

Run from the repository root:

    python -m data.prepare omniglot SRC [--out DIR]        (default DIR: data/omniglot_resized)
    python -m data.prepare miniimagenet SRC [--out DIR]    (default DIR: data/miniImagenet)

Omniglot: SRC holds images_background.zip and images_evaluation.zip (or the
extracted folders images_background/ and images_evaluation/). Every 105x105
one-bit drawing becomes a 28x28 PNG at DIR/<Alphabet>/<characterNN>/<file>.png,
both sets merged.

miniImagenet: SRC holds train.csv, val.csv, test.csv (header filename,label)
and images.tar.gz (one folder images/ inside) or the extracted folder images/.
Every CSV row becomes DIR/<split>/<label>/<filename>, an 84x84 RGB JPEG.

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
  (no traceback).

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
import os
import sys
import tarfile
import time
import zipfile
import zlib
from pathlib import Path
from typing import Callable, Iterable, Iterator

from PIL import Image

OMNIGLOT_SETS = ('images_background', 'images_evaluation')
OMNIGLOT_SIZE = (28, 28)
OMNIGLOT_DEFAULT_OUT = Path('data/omniglot_resized')

MINI_SPLITS = ('train', 'val', 'test')
MINI_SIZE = (84, 84)
MINI_ARCHIVE = 'images.tar.gz'
MINI_FOLDER = 'images'
MINI_DEFAULT_OUT = Path('data/miniImagenet')

MARKER = '.prepared.json'  # written after a successful verification
TMP_SUFFIX = '.tmp'  # temporary files are named .<final name>.<pid>.tmp
PROGRESS_EVERY = 5000  # images between two progress lines


class PrepareError(Exception):
    """A problem with the input or the output folder that the user must fix.

    main() prints the message (which names the offending file or folder) and
    returns 1 instead of showing a traceback.
    """


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
    if not src.is_dir():
        raise PrepareError(f'source folder not found: {src}')


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
        raise PrepareError(f'output path exists and is not a folder: {out}')
    marker = read_marker(out)
    if marker is not None and marker.get('dataset') != dataset:
        raise PrepareError(
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
    return PrepareError(
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
    remove_marker(out)
    raise PrepareError(f'verification of {out} failed:\n  - ' + '\n  - '.join(problems))


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
        raise PrepareError(
            f'{src}: missing {" and ".join(missing)} (expected images_background.zip and '
            'images_evaluation.zip, or the extracted folders images_background/ and images_evaluation/)')
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
        raise PrepareError(f'{src}: missing {", ".join(missing)} (expected train.csv, val.csv and test.csv)')
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
    """84x84 RGB JPEG bytes.

    An image that already is an 84x84 RGB JPEG (all of the shared archive) is
    copied byte for byte: decoding and re-encoding a JPEG loses quality. It is
    still fully decoded first so that a corrupt file is caught. Anything else
    is resized with LANCZOS, as the reference did, and saved as JPEG with
    Pillow's default quality.
    """
    im = decode_image(data, label)
    if im.size == MINI_SIZE and im.mode == 'RGB' and im.format == 'JPEG':
        return data
    im = im.convert('RGB').resize(MINI_SIZE, resample=Image.LANCZOS)
    buf = io.BytesIO()
    im.save(buf, format='JPEG')
    return buf.getvalue()


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
# Command line


class ArgumentParser(argparse.ArgumentParser):
    """A usage error as one line in the style of every other error: 'Error: ...', exit status 2."""

    def error(self, message):
        self.exit(2, f'Error: {message} ({self.prog} --help)\n')


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = ArgumentParser(
        prog='python -m data.prepare',
        description='Prepare Omniglot (28x28) or miniImagenet (84x84) for MAML from the original archives.')
    parser.add_argument('dataset', choices=['omniglot', 'miniimagenet'])
    parser.add_argument('src', type=Path, help='folder with the downloaded archives (read only)')
    parser.add_argument('--out', type=Path, default=None,
                        help=f'output folder (default {OMNIGLOT_DEFAULT_OUT} or {MINI_DEFAULT_OUT})')
    return parser.parse_args(argv)


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
        else:
            summary = prepare_miniimagenet(args.src, args.out or MINI_DEFAULT_OUT, expected or MiniImagenetCounts())
    except PrepareError as e:
        print(f'Error: {e}', file=sys.stderr)
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
