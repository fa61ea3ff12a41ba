"""The documentation holds together: every relative link of README.md, docs/ and tools/README.md
leads to a file (and a heading, for a #anchor) that exists, the README stays one short page whose
first table is the results table, and the user docs outside docs/log/ stay short enough to read."""
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
README_LIMIT = 12 * 1024       # bytes: the front page
USER_DOC_LIMIT = 20 * 1024     # bytes: each user doc under docs/, the dated log apart
RESULTS_START = '<!-- results table: '
RESULTS_END = '<!-- end of the results table -->'

LINK = re.compile(r'!?\[([^\]]*)\]\(\s*<?([^)\s>]+)>?(?:\s+"[^"]*")?\s*\)')
CODE_SPAN = re.compile(r'(`+)(?:(?!\1).)+?\1')
FENCE = re.compile(r'^\s*(```|~~~)')


def markdown_files():
    """Every markdown file whose links are checked."""
    files = [REPO / 'README.md', REPO / 'tools' / 'README.md'] + sorted((REPO / 'docs').rglob('*.md'))
    return [f for f in files if f.exists()]


def prose_lines(text):
    """(line number, line) of the text outside fenced code blocks: links and headings live there."""
    inside = False
    for number, line in enumerate(text.split('\n'), 1):
        if FENCE.match(line):
            inside = not inside
            continue
        if not inside:
            yield number, line


def links(text):
    """(line number, target) of every markdown link and image outside code."""
    for number, line in prose_lines(text):
        for match in LINK.finditer(CODE_SPAN.sub('', line)):
            yield number, match.group(2)


def github_slug(heading):
    """The anchor GitHub gives a heading: its rendered text in lower case, everything but letters,
    digits, spaces, hyphens and underscores dropped, spaces turned into hyphens."""
    text = re.sub(r'!?\[([^\]]*)\]\([^)]*\)', r'\1', heading)   # a link renders as its text
    text = text.replace('`', '').replace('*', '')
    text = re.sub(r'<[^>]+>', '', text).strip().lower()
    return re.sub(r'[^\w\- ]', '', text).replace(' ', '-')


def anchors(path):
    """The anchors of a markdown file's headings, with GitHub's -1, -2 ... for repeated ones."""
    seen, result = {}, set()
    for _, line in prose_lines(path.read_text()):
        match = re.match(r'^ {0,3}#{1,6}\s+(.*?)\s*#*\s*$', line)
        if not match:
            continue
        slug = github_slug(match.group(1))
        result.add(slug if slug not in seen else '%s-%d' % (slug, seen[slug]))
        seen[slug] = seen.get(slug, 0) + 1
    return result


def broken_links(path):
    """The relative links of one file that lead nowhere, as 'file:line: target (why)'."""
    broken = []
    for number, target in links(path.read_text()):
        if re.match(r'^[a-z][a-z0-9+.-]*:', target, re.I):   # http:, https:, mailto: ...
            continue
        file_part, _, anchor = target.partition('#')
        dest = (path.parent / file_part).resolve() if file_part else path
        where = '%s:%d: %s' % (path.relative_to(REPO), number, target)
        if not dest.exists():
            broken.append(where + ' (no such file)')
        elif anchor and dest.suffix == '.md' and anchor not in anchors(dest):
            broken.append(where + ' (no such heading)')
    return broken


def test_the_slug_rule_on_headings_of_this_repository():
    assert github_slug("Regression check: the authors' released miniImagenet model") == \
        'regression-check-the-authors-released-miniimagenet-model'
    assert github_slug('Trained models in `models/`') == 'trained-models-in-models'
    assert github_slug('1. What each step does: `tools/inner_steps.py`') == '1-what-each-step-does-toolsinner_stepspy'
    assert github_slug('Every step in the loop, and the machine in a faster hour (15:50-15:55)') == \
        'every-step-in-the-loop-and-the-machine-in-a-faster-hour-1550-1555'


def test_a_broken_link_is_found(tmp_path):
    doc = tmp_path / 'a.md'
    (tmp_path / 'b.md').write_text('# Title\n\n## A part\n\n```\n# not a heading\n```\n')
    doc.write_text('[ok](b.md#a-part) [file](c.md) [heading](b.md#not-a-heading) `[code](d.md)`\n'
                   '```\n[fenced](e.md)\n```\n[web](https://example.org/x.md)\n')
    global REPO
    saved, REPO = REPO, tmp_path
    try:
        assert broken_links(doc) == ['a.md:1: c.md (no such file)', 'a.md:1: b.md#not-a-heading (no such heading)']
    finally:
        REPO = saved


@pytest.mark.parametrize('path', markdown_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_leads_to_a_file_and_heading(path):
    assert broken_links(path) == []


def test_readme_is_one_short_page():
    size = (REPO / 'README.md').stat().st_size
    assert size <= README_LIMIT, 'README.md is %d bytes, over %d: move detail into docs/' % (size, README_LIMIT)


def test_every_user_doc_is_at_most_20_kb():
    log = REPO / 'docs' / 'log'
    over = ['%s: %d bytes' % (p.relative_to(REPO), p.stat().st_size)
            for p in sorted((REPO / 'docs').rglob('*.md')) if log not in p.parents and p.stat().st_size > USER_DOC_LIMIT]
    assert over == [], 'over %d bytes (dated parts belong in docs/log/): %s' % (USER_DOC_LIMIT, over)


def test_the_results_table_is_the_first_table_of_the_readme():
    text = (REPO / 'README.md').read_text()
    lines = list(prose_lines(text))
    first = next(number for (number, line), (_, after) in zip(lines, lines[1:])
                 if line.lstrip().startswith('|') and re.match(r'^\s*\|\s*:?-{3,}', after))
    start = next(n for n, line in lines if line.startswith(RESULTS_START))
    end = next(n for n, line in lines if line.startswith(RESULTS_END))
    assert start < first < end, 'the first table of README.md (line %d) is not the results table' % first


def test_docs_index_names_every_user_doc():
    index = REPO / 'docs' / 'README.md'
    assert index.exists(), 'docs/README.md: the index of docs/ is missing'
    named = {(index.parent / target.partition('#')[0]).resolve() for _, target in links(index.read_text())}
    log = REPO / 'docs' / 'log'
    missing = [str(p.relative_to(REPO)) for p in sorted((REPO / 'docs').glob('*.md'))
               if p != index and p not in named]
    assert missing == [], 'docs/README.md does not link to: %s' % missing
    assert any(p == log or log in p.parents for p in named), 'docs/README.md does not link to docs/log/'


def test_log_index_names_every_dated_record():
    index = REPO / 'docs' / 'log' / 'README.md'
    named = {(index.parent / target.partition('#')[0]).resolve() for _, target in links(index.read_text())}
    missing = [str(p.relative_to(REPO)) for p in sorted(index.parent.glob('*.md')) if p != index and p not in named]
    assert missing == [], 'docs/log/README.md does not link to: %s' % missing
