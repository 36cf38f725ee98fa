"""The command line as a person meets it: help with examples, one-line errors, exit codes."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tsfs.cli.main import app

ROOT = Path(__file__).resolve().parents[1]
ETTH1 = ROOT / "data" / "ETTh1.csv"
runner = CliRunner()


@pytest.mark.parametrize(
    "args", [["--help"], ["store", "--help"], ["prep", "--help"], ["prep", "features", "--help"]]
)
def test_help_shows_examples(args: list[str]) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 0
    assert "Example" in result.output
    assert "tsfs " in result.output


def _bad_inputs(tmp: Path) -> list[tuple[list[str], str]]:
    empty = tmp / "empty.csv"
    empty.write_text("")
    header = tmp / "header.csv"
    header.write_text("date,a,b\n")
    text = tmp / "text.csv"
    rows = [f"2020-01-01 {h % 24:02d}:00:00,{h},{h}" for h in range(300)]
    rows[41] = "2020-01-02 17:00:00,1.5,oops"
    text.write_text("date,a,b\n" + "\n".join(rows) + "\n")
    nan = tmp / "nan.csv"
    rows = [f"2020-01-01 {h % 24:02d}:00:00,{h},{h}" for h in range(300)]
    rows[9] = "2020-01-01 09:00:00,nan,1"
    nan.write_text("date,a,b\n" + "\n".join(rows) + "\n")
    short = tmp / "short.csv"
    short.write_text("date,a\n" + "\n".join(f"2020-01-01 0{h}:00:00,{h}" for h in range(5)) + "\n")
    a_file = tmp / "afile"
    a_file.write_text("x")
    st = ["--store", str(tmp / "store"), "--target", "a"]
    return [
        ([str(tmp / "missing.csv"), *st], "missing.csv"),
        ([str(empty), *st], "empty"),
        ([str(header), *st], "header"),
        ([str(text), *st], "line 43"),
        ([str(nan), *st], "line 11"),
        ([str(short), "--preset", "custom", *st], "short.csv"),
        ([str(ETTH1), "--preset", "ett_year", *st], "--preset"),
        ([str(ETTH1), "--features", "S", "--target", "nope", "--store", str(tmp / "s2")], "nope"),
        ([str(ETTH1), "--store", str(a_file)], "is a file"),
        ([str(ETTH1), "--store", " "], "the store path is empty"),
        ([str(ETTH1), "--seq-len", "0", *st], "--seq-len"),
        ([str(ETTH1), "--splits", "train,dev", *st], "dev"),
    ]


def test_bad_input_is_one_line_and_exit_2(tmp_path: Path) -> None:
    for args, needle in _bad_inputs(tmp_path):
        result = runner.invoke(app, ["prep", "features", *args])
        assert result.exit_code == 2, (args, result.output)
        assert isinstance(result.exception, SystemExit), (args, result.exception)
        lines = [ln for ln in result.output.splitlines() if ln.strip()]
        assert len(lines) == 1, (args, result.output)
        assert lines[0].startswith("tsfs: error:"), lines
        assert needle in lines[0], (needle, lines[0])


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc")
@pytest.mark.parametrize("command", ["prep", "plan"])
def test_a_store_path_where_nothing_can_be_made_is_named_before_any_work(
    tmp_path: Path, command: str
) -> None:
    """/proc accepts no new directories whatever the user's rights (root's too): both prep and
    plan say so, rather than a budget refusal over "0 B free"."""
    result = runner.invoke(
        app, [command, "features", str(ETTH1), "--store", "/proc/tsfs-store", "--splits", "val"]
    )
    assert result.exit_code == 2, result.output
    assert result.output.splitlines() == [
        "tsfs: error: cannot create store /proc/tsfs-store: /proc takes no new directories "
        "(No such file or directory); give another store path"
    ]


def test_prep_summary_counts_in_words(tmp_path: Path) -> None:
    args = [str(ETTH1), "--seq-len", "96", "--splits", "val", "--stride", "512"]
    result = runner.invoke(app, ["prep", "features", *args, "--store", str(tmp_path / "s")])
    assert result.exit_code == 0, result.output
    (summary,) = [ln for ln in result.output.splitlines() if ln.startswith("computed")]
    assert summary.startswith("computed 42 rows, reused 0 (0 duplicates skipped); wrote 1 segment,")


def test_newer_store_format_and_read_only_store(tmp_path: Path) -> None:
    from tsfs.stores.store import Store

    Store(tmp_path / "s", mode="a")
    root = tmp_path / "s" / "zarr.json"
    doc = json.loads(root.read_text())
    doc["attributes"]["tsfs"]["format"] = 7
    root.write_text(json.dumps(doc))
    result = runner.invoke(app, ["store", "info", str(tmp_path / "s")])
    assert result.exit_code == 2
    assert "format 7" in result.output
    Store(tmp_path / "ro", mode="a")
    os.chmod(tmp_path / "ro", 0o555)
    try:
        result = runner.invoke(
            app, ["prep", "features", str(ETTH1), "--store", str(tmp_path / "ro")]
        )
        assert result.exit_code == 2
        assert "read-only" in result.output
    finally:
        os.chmod(tmp_path / "ro", 0o755)


def test_real_process_prints_no_traceback(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "tsfs", "prep", "features", str(tmp_path / "nope.csv")],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().startswith("tsfs: error:")
    assert "nope.csv" in proc.stderr


def test_ctrl_c_while_the_commands_load_is_one_line(tmp_path: Path) -> None:
    """A real SIGINT that lands while the commands import (numpy, here) — as a quick Ctrl-C
    after Enter does — ends like any interrupted command, not in import machinery."""
    interrupt_in_imports = (
        "import builtins, os, signal\n"
        "real = builtins.__import__\n"
        "def imports(name, *args, **kwargs):\n"
        "    if name == 'numpy':\n"
        "        os.kill(os.getpid(), signal.SIGINT)\n"
        "    return real(name, *args, **kwargs)\n"
        "builtins.__import__ = imports\n"
        "import runpy\n"
        "runpy.run_module('tsfs', run_name='__main__')\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", interrupt_in_imports, "store", "info", str(tmp_path)],
        capture_output=True,
        text=True,
        # as in a terminal: a runner started in the background hands SIGINT down ignored
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    assert (proc.returncode, proc.stderr) == (130, "tsfs: interrupted\n")


def test_refused_run_leaves_the_store_as_it_was(tmp_path: Path) -> None:
    """Settings refused for these rows change nothing: no store made, no namespace added."""
    st = tmp_path / "s"
    small = [str(ETTH1), "--seq-len", "48", "--splits", "test"]
    refused = [
        ["prep", "features", *small, "--level", "9"],
        ["prep", "features", *small, "--wavelet", "db38"],
        ["prep", "images", *small, "--codec", "gzip"],
        ["prep", "images", str(ETTH1), "--seq-len", "1", "--label-len", "0", "--pred-len", "1"],
    ]
    for args in refused:
        result = runner.invoke(app, [*args, "--store", str(st)])
        assert result.exit_code == 2, (args, result.output)
        assert not st.exists(), args
    over = runner.invoke(app, ["prep", "features", *small, "--store", str(st), "--budget", "1K"])
    assert over.exit_code == 1, over.output
    assert "budget" in over.output
    assert not st.exists()
    ok = runner.invoke(app, ["prep", "features", *small, "--store", str(st), "-q"])
    assert ok.exit_code == 0, ok.output
    before = sorted(p.relative_to(st) for p in st.rglob("*"))
    for args in refused:
        assert runner.invoke(app, [*args, "--store", str(st)]).exit_code == 2
    assert sorted(p.relative_to(st) for p in st.rglob("*")) == before


@pytest.mark.parametrize("option", ["--jobs", "--batch-rows"])
def test_counts_below_one_are_refused(tmp_path: Path, option: str) -> None:
    args = ["prep", "features", str(ETTH1), "--store", str(tmp_path / "s"), option, "0"]
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert option in result.output
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("command", [["gc"], ["gc", "--json"], ["compact"]])
def test_maintenance_of_a_mistyped_store_path_creates_nothing(
    tmp_path: Path, command: list[str]
) -> None:
    result = runner.invoke(app, ["store", command[0], str(tmp_path / "typo"), *command[1:]])
    assert result.exit_code == 2
    assert "no tsfs store at" in result.output
    assert not (tmp_path / "typo").exists()


def test_the_file_system_saying_no_is_one_line_naming_the_path(
    capsys: pytest.CaptureFixture[str],
) -> None:
    import errno

    import typer

    from tsfs.cli._common import reports_errors

    @reports_errors
    def writes() -> None:
        raise PermissionError(errno.EROFS, "Read-only file system", "/data/store/features/x")

    with pytest.raises(typer.Exit) as exit_info:
        writes()
    assert exit_info.value.exit_code == 1
    assert capsys.readouterr().err.strip() == (
        "tsfs: error: /data/store/features/x: Read-only file system; check that path's "
        "permissions and space"
    )


def test_rows_of_other_lengths_get_their_own_namespace(tmp_path: Path) -> None:
    """The default level resolves per row length: rows with other bands never share a
    namespace, ``--level 3`` names the one the default makes at T=96, and ``show prompt``
    finds the namespace holding its window."""
    st = str(tmp_path / "s")
    t96 = [str(ETTH1), "--seq-len", "96", "--splits", "test", "--stride", "16"]
    t16 = [str(ETTH1), "--seq-len", "16", "--label-len", "8", "--pred-len", "8"]
    t16 += ["--splits", "test", "--stride", "16"]
    assert runner.invoke(app, ["prep", "features", *t96, "--store", st, "-q"]).exit_code == 0
    assert runner.invoke(app, ["prep", "features", *t16, "--store", st, "-q"]).exit_code == 0
    again = runner.invoke(app, ["prep", "features", *t96, "--level", "3", "--store", st, "--json"])
    assert again.exit_code == 0, again.output
    assert json.loads(again.output)["rows_computed"] == 0
    info = json.loads(runner.invoke(app, ["store", "info", st, "--json"]).output)
    levels = sorted(ns["spec"]["level"] for ns in info["namespaces"])
    assert levels == [1, 3]
    for rows in (t96, t16):
        shown = runner.invoke(app, ["show", "prompt", st, *rows, "--window", "1"])
        assert shown.exit_code == 0, shown.output
        assert f"given the previous {rows[2]} steps" in shown.output


def test_stored_coefficients_of_another_length_are_refused(tmp_path: Path) -> None:
    st = tmp_path / "s"
    base = [str(ETTH1), "--splits", "test", "--stride", "32", "--level", "1", "--coefficients"]
    first = runner.invoke(app, ["prep", "features", *base, "--seq-len", "96", "--store", str(st)])
    assert first.exit_code == 0, first.output
    before = sorted(p.relative_to(st) for p in st.rglob("*"))
    args = [*base, "--seq-len", "48", "--label-len", "24", "--store", str(st)]
    for command in ("plan", "prep"):  # a plan foresees the refusal
        other = runner.invoke(app, [command, "features", *args])
        assert other.exit_code == 2, other.output
        assert "'coefficients' rows of shape (102,)" in other.output
        assert "another --store" in other.output
    assert sorted(p.relative_to(st) for p in st.rglob("*")) == before


def test_bytes_written_are_what_the_store_gained(tmp_path: Path) -> None:
    st = str(tmp_path / "s")
    args = [str(ETTH1), "--splits", "test", "--stride", "8", "--batch-rows", "300"]
    report = json.loads(
        runner.invoke(app, ["prep", "features", *args, "--store", st, "--json"]).output
    )
    assert report["segments_written"] > 3
    info = json.loads(runner.invoke(app, ["store", "info", st, "--json"]).output)
    (namespace,) = info["namespaces"]
    assert report["bytes_written"] == namespace["bytes"]


@pytest.mark.parametrize("damage", ["lost", "garbled"])
def test_a_lost_or_garbled_namespace_document_is_found_and_prep_rewrites_it(
    tmp_path: Path, damage: str
) -> None:
    st = str(tmp_path / "s")
    args = ["prep", "features", str(ETTH1), "--splits", "test", "--stride", "32", "--store", st]
    assert runner.invoke(app, [*args, "-q"]).exit_code == 0
    (doc,) = (tmp_path / "s" / "features").glob("*/zarr.json")
    if damage == "lost":
        doc.unlink()
    else:
        doc.write_text("garbage\n")
        info = runner.invoke(app, ["store", "info", st])
        assert info.exit_code == 0, info.output
        assert "spec: unreadable (`tsfs store verify` says why; prep rewrites it)" in info.output
    bad = runner.invoke(app, ["store", "verify", st])
    assert bad.exit_code == 1
    assert f"{doc}: {'missing' if damage == 'lost' else 'not valid JSON'}" in bad.output
    assert "the prep command rewrites it" in bad.output
    assert "1 problem. Re-running the prep command that made the store repairs it" in bad.output
    as_json = json.loads(runner.invoke(app, ["store", "verify", st, "--json"]).output)
    assert as_json["ok"] is False
    assert [p["path"] for p in as_json["problems"]] == [str(doc)]
    assert as_json["problems"][0]["message"].endswith("the prep command rewrites it")
    again = runner.invoke(app, [*args, "--json"])
    assert json.loads(again.output)["rows_computed"] == 0
    assert doc.is_file()
    assert runner.invoke(app, ["store", "verify", st]).exit_code == 0
    shown = runner.invoke(
        app, ["show", "prompt", st, str(ETTH1), "--splits", "test", "--stride", "32"]
    )
    assert shown.exit_code == 0, shown.output


def test_a_read_only_store_serves_a_run_with_nothing_to_compute(tmp_path: Path) -> None:
    st = tmp_path / "s"
    args = ["prep", "features", str(ETTH1), "--splits", "test", "--stride", "32"]
    assert runner.invoke(app, [*args, "--store", str(st), "-q"]).exit_code == 0
    for path in [st, *st.rglob("*")]:
        path.chmod(path.stat().st_mode & ~0o222)
    try:
        done = runner.invoke(app, [*args, "--store", str(st), "--json"])
        assert done.exit_code == 0, done.output
        assert json.loads(done.output)["rows_computed"] == 0
        more = runner.invoke(app, [*args[:-1], "16", "--store", str(st)])
        assert more.exit_code == 2
        assert "is read-only and lacks" in more.output
    finally:
        for path in [st, *st.rglob("*")]:
            path.chmod(path.stat().st_mode | 0o200)


def test_compact_json_names_each_namespace_and_its_rows(tmp_path: Path) -> None:
    st = str(tmp_path / "s")
    args = [str(ETTH1), "--seq-len", "96", "--splits", "val", "--store", st, "-q"]
    assert runner.invoke(app, ["prep", "features", *args, "--batch-rows", "5000"]).exit_code == 0
    done = runner.invoke(app, ["store", "compact", st, "--json"])
    assert done.exit_code == 0, done.output
    (ns,) = json.loads(done.output)["namespaces"]
    info = json.loads(runner.invoke(app, ["store", "info", st, "--json"]).output)
    (held,) = info["namespaces"]
    assert ns == {"path": f"{st}/features/{held['fingerprint']}", "rows": held["rows"]}
    assert held["segments"] == 1


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--color", "#ff0000"], "--color does not apply to these images: drop it, or add --rgb"),
        (["--sigma", "2"], "--sigma does not apply to these images: drop it, or add --ylim sigma"),
        (["--ylim", "sigma", "--margin", "0.2"], "--margin does not apply to these images"),
    ],
)
def test_image_options_of_another_mode_are_refused(
    tmp_path: Path, options: list[str], message: str
) -> None:
    """A colour for masks, or a sigma for row limits, would be ignored without a word."""
    for command in ("prep", "plan"):
        args = [command, "images", str(ETTH1), "--store", str(tmp_path / "s"), *options]
        result = runner.invoke(app, args)
        assert result.exit_code == 2, result.output
        assert message in result.output
    assert not (tmp_path / "s").exists()


def test_rows_too_short_name_the_fix_for_the_kind_of_data(tmp_path: Path) -> None:
    import numpy as np

    np.save(tmp_path / "t1.npy", np.random.default_rng(0).normal(size=(4, 1, 2)))
    st = ["--store", str(tmp_path / "s")]
    cases = [
        (["features", str(tmp_path / "t1.npy")], "too short for Time-LLM's top 5 lags"),
        (["images", str(tmp_path / "t1.npy")], "a line plot needs at least 2 values per row"),
    ]
    for args, what in cases:
        result = runner.invoke(app, ["prep", *args, *st])
        assert result.exit_code == 2, result.output
        assert what in result.output
        # --seq-len is refused for samples: the fix named is the array's own T axis
        assert "(the T axis of t1.npy's (N, T, V) samples)" in result.output
    result = runner.invoke(
        app, ["prep", "features", str(ETTH1), "--seq-len", "4", "--label-len", "2", *st]
    )
    assert result.exit_code == 2
    assert "use rows of more than 5 values (a longer --seq-len)" in result.output
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (
            ["prep", "images", str(ETTH1), "--plan"],
            r"tsfs: error: No such option: --plan( \(Possible options: [-, a-z]+\))? "
            r"\(see `tsfs prep images --help`\)",
        ),
        (
            ["prep", "features", str(ETTH1), "--seq-len", "abc"],
            r"tsfs: error: Invalid value for '--seq-len': .*integer.* "
            r"\(see `tsfs prep features --help`\)",
        ),
        (["nope"], r"tsfs: error: No such command 'nope'\. \(see `tsfs --help`\)"),
    ],
)
def test_option_errors_are_one_line_too(args: list[str], line: str) -> None:
    """Errors the option parser finds read as every other tsfs error, not as a usage box."""
    done = subprocess.run(
        [sys.executable, "-m", "tsfs", *args], capture_output=True, text=True, check=False
    )
    assert done.returncode == 2
    (said,) = done.stderr.splitlines()
    assert re.fullmatch(line, said), said
    bare = subprocess.run([sys.executable, "-m", "tsfs", "prep"], capture_output=True, text=True)
    assert bare.returncode == 2  # a bare group shows its help, as before
    assert "Usage: tsfs prep" in bare.stdout
    assert bare.stderr == ""
