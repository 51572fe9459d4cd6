"""The Python snippets of the README and docs/rednet.md run as written.

A snippet that starts with ``_base_`` is a user's config file: it is saved,
loaded with mmengine's Config (toolkit bases and ``custom_imports``
included) and its model is built and run on a small input. Any other
snippet is executed as a script.
"""
import re
from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import MODELS, DefaultScope

ROOT = Path(__file__).parents[1]
DOCUMENTS = ('README.md', 'docs/rednet.md')


def _snippets():
    for document in DOCUMENTS:
        text = (ROOT / document).read_text()
        blocks = re.findall(r'```python\n(.*?)```', text, re.DOTALL)
        for index, block in enumerate(blocks):
            yield pytest.param(block, id=f'{document}#{index}')


SNIPPETS = list(_snippets())


def test_the_docs_have_snippets_for_both_toolkits():
    sources = [param.values[0] for param in SNIPPETS]
    assert any("'mmdet::" in s and "type='RedNet'" in s for s in sources)
    assert any("'mmseg::" in s and "type='RedNet'" in s for s in sources)


@pytest.mark.parametrize('snippet', SNIPPETS)
def test_snippet_runs(snippet, tmp_path):
    if not snippet.lstrip().startswith('_base_'):
        exec(compile(snippet, 'snippet', 'exec'), {})
        return
    path = tmp_path / 'user_config.py'
    path.write_text(snippet)
    cfg = Config.fromfile(str(path))
    assert cfg.custom_imports.imports == [
        'mmplug_involution', 'mmplug_involution.runtime'
    ]
    assert cfg.runner_type == 'SafeCheckpointRunner'
    scope = cfg.get('default_scope', 'mmdet')
    with DefaultScope.overwrite_default_scope(scope):
        model = MODELS.build(cfg.model).eval()
    assert type(model.backbone).__name__ == 'RedNet'
    with torch.no_grad():
        feats = model.extract_feat(torch.rand(1, 3, 64, 96))
    assert all(torch.isfinite(f).all() for f in feats)
