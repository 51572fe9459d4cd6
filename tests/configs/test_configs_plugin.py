"""The plugin base config imports the package when a config is loaded."""
from pathlib import Path

from mmengine.config import Config
from mmengine.utils import import_modules_from_strings

CONFIGS = Path(__file__).parents[2] / 'configs'


def test_plugin_base_imports_the_package(tmp_path):
    cfg_file = tmp_path / 'user_config.py'
    cfg_file.write_text(
        f"_base_ = ['{CONFIGS / '_base_' / 'plugin.py'}']\n"
        "model = dict(type='Involution', in_channels=32, kernel_size=3)\n")
    cfg = Config.fromfile(str(cfg_file))
    assert cfg.custom_imports.imports == [
        'mmplug_involution', 'mmplug_involution.runtime'
    ]
    assert cfg.runner_type == 'SafeCheckpointRunner'
    import_modules_from_strings(**cfg.custom_imports)
    from mmdet.registry import MODELS
    layer = MODELS.build(cfg.model)
    assert type(layer).__name__ == 'Involution'
