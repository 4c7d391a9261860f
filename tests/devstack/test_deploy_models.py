"""python -m devstack.deploy_models: its usage name and a missing models folder (no Azurite needed)."""
from __future__ import annotations

import pytest

from devstack import deploy_models


def test_missing_models_folder_is_one_line_exit_2(tmp_path, capsys):
    path = tmp_path / "models"
    assert deploy_models.main([str(path)]) == 2
    assert capsys.readouterr().err == (f"error: {path}: No such file or directory "
                                       "(expected a models folder written by `python -m batch_scoring.scoring.train`)\n")


def test_help_names_the_real_invocation_and_the_environment(capsys):
    with pytest.raises(SystemExit):
        deploy_models.main(["--help"])
    out = capsys.readouterr().out
    assert out.startswith("usage: python -m devstack.deploy_models ") and "BATCH_SCORING_MODELS_CONTAINER" in out
