"""The README and docs: short, linked, and naming only what exists."""
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
DOCS = sorted([
    ROOT / 'README.md', ROOT / 'CHANGELOG.md', ROOT / 'tools' / 'README.md',
    ROOT / 'tools' / 'dev' / 'README.md', ROOT / 'configs' / 'README.md',
    *(ROOT / 'docs').glob('*.md')
])
README_LINES = 150
#: a Markdown link or image: [text](target)
LINK = re.compile(r'!?\[[^\]]*\]\(([^)\s]+)(?:\s+"[^"]*")?\)')
#: a repository path in a command: tools/..., configs/..., .ci/run
REPO_PATH = re.compile(r'(?<![\w./-])((?:tools|configs|\.ci)/[\w./-]+)')


def _relative(path: Path) -> str:
    return str(path.relative_to(ROOT))


def test_the_readme_is_short():
    lines = (ROOT / 'README.md').read_text().splitlines()
    assert len(lines) <= README_LINES, (
        f'README.md has {len(lines)} lines; at most {README_LINES}: move '
        'detail into docs/')


@pytest.mark.parametrize('doc', DOCS, ids=_relative)
def test_every_relative_link_resolves(doc):
    broken, fenced = [], False
    for number, line in enumerate(doc.read_text().splitlines(), 1):
        if line.lstrip().startswith('```'):
            fenced = not fenced
        if fenced or line.startswith('    '):  # code, not text
            continue
        for target in LINK.findall(re.sub(r'`[^`]*`', '', line)):
            if re.match(r'[a-z]+:', target) or target.startswith('#'):
                continue  # a URL, or an anchor in the same page
            path = (doc.parent / target.split('#')[0]).resolve()
            if not path.exists():
                broken.append(f'{_relative(doc)}:{number}: {target}')
    assert not broken, '\n'.join(broken)


def _code_blocks(text: str):
    """The lines of the fenced code blocks of a Markdown text."""
    inside = False
    for line in text.splitlines():
        if line.lstrip().startswith('```'):
            inside = not inside
        elif inside:
            yield line


def test_every_command_the_readme_shows_exists():
    shown = set()
    for line in _code_blocks((ROOT / 'README.md').read_text()):
        if line.lstrip().startswith('#'):
            continue  # a comment
        shown.update(path.rstrip('.,') for path in REPO_PATH.findall(line))
    assert {'tools/dev/run_demo.sh', 'tools/dev/run_tests.sh'} <= shown
    missing = sorted(path for path in shown if not (ROOT / path).exists())
    assert not missing, missing
    ci = (ROOT / '.ci' / 'run').read_text()
    assert 'tools/dev/run_tests.sh' in ci  # CI runs the README's command


@pytest.mark.parametrize('doc', DOCS, ids=_relative)
def test_no_doc_speaks_of_sessions(doc):
    found = [
        f'{_relative(doc)}:{number}: {line.strip()}'
        for number, line in enumerate(doc.read_text().splitlines(), 1)
        if re.search(r'\bsessions?\b', line, re.IGNORECASE)
    ]
    assert not found, '\n'.join(found)


def test_the_changelog_names_the_package_version():
    from mmplug_involution import __version__
    newest = re.search(r'^## \[(\d+\.\d+\.\d+)\] - \d{4}-\d{2}-\d{2}$',
                       (ROOT / 'CHANGELOG.md').read_text(), re.MULTILINE)
    assert newest and newest.group(1) == __version__
