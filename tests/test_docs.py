"""Every setting and command is documented where a newcomer looks: README and --help."""

from __future__ import annotations

import re
from pathlib import Path

from click.testing import CliRunner

from pulse.cli import main
from pulse.rollups.metrics import PORTABLE_FIRST_COPIES_SQL
from pulse.settings import SETTINGS, Settings

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def test_every_setting_is_in_the_readme_with_its_default():
    for setting in SETTINGS:
        row = next((line for line in README.splitlines()
                    if line.startswith("|") and f"`{setting.env}`" in line.split("|")[1]), None)
        assert row is not None, f"{setting.env} is missing from the README settings table"
        if setting.default is not None and "/" not in row.split("|")[1]:
            assert f"`{setting.default}`" in row, f"{setting.env}: default not in README"


def test_readme_names_only_real_settings():
    known = {s.env for s in SETTINGS}
    named = set(re.findall(r"PULSE_[A-Z_]+", README))
    assert named <= known, named - known


def test_every_command_is_in_the_readme_and_has_help():
    runner = CliRunner()
    for name in main.commands:
        assert f"pulse {name}" in README, f"`pulse {name}` is not in the README"
        result = runner.invoke(main, [name, "--help"])
        assert result.exit_code == 0, result.output


def test_defaults_in_code_match_the_settings_table():
    parsed = Settings.from_env({})
    assert parsed == Settings()


def test_the_readme_deduplicates_the_lake_with_the_one_definition():
    plain = "read_parquet('lake/events/**/*.parquet', hive_partitioning = true)"
    assert PORTABLE_FIRST_COPIES_SQL.format(table=plain) in README
