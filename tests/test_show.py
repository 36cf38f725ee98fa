"""`tsfs show prompt|images`: what a person sees of one window, from stored values only."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from tsfs.cli.main import app

runner = CliRunner()
SMALL = ["--seq-len", "48", "--label-len", "24", "--pred-len", "24"]


def write_csv(path: Path, header: str) -> Path:
    rng = np.random.default_rng(1)
    stamps = np.datetime64("2020-01-01T00:00") + np.arange(400) * np.timedelta64(1, "h")
    rows = [
        f"{str(t).replace('T', ' ')}:00," + ",".join(f"{v:.4f}" for v in rng.normal(size=3))
        for t in stamps
    ]
    path.write_text(header + "\n" + "\n".join(rows) + "\n")
    return path


def tsfs(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output


@pytest.fixture
def store(tmp_path: Path) -> tuple[Path, Path]:
    # "$" pairs would be mathtext to matplotlib; an unpaired one made it raise.
    data = write_csv(tmp_path / "d.csv", "date,price $/kWh (peak_$),b $x^2$,OT")
    st = tmp_path / "s"
    for args in (["features"], ["images", "--size", "32"]):
        code, out = tsfs("prep", *args, str(data), *SMALL, "--store", str(st), "-q")
        assert code == 0, out
    return data, st


def test_contact_sheet_draws_column_names_as_text(store: tuple[Path, Path], tmp_path: Path) -> None:
    data, st = store
    out = tmp_path / "w.png"
    code, text = tsfs("show", "images", str(st), str(data), *SMALL, "--out", str(out))
    assert code == 0, text
    assert text.strip() == f"wrote {out}"
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    svg = tmp_path / "w.svg"
    code, text = tsfs("show", "images", str(st), str(data), *SMALL, "--out", str(svg))
    assert code == 0, text
    body = svg.read_text()
    # matplotlib's SVG keeps titles as text: the names are there literally, "$" included
    assert "price $/kWh (peak_$)" in body
    assert "b $x^2$" in body


@pytest.mark.parametrize("name", ["sheet", "sheet.foo", "adir"])
def test_out_must_name_a_file_of_a_known_format(
    store: tuple[Path, Path], tmp_path: Path, name: str
) -> None:
    data, st = store
    (tmp_path / "adir").mkdir()
    code, text = tsfs("show", "images", str(st), str(data), *SMALL, "--out", str(tmp_path / name))
    assert code == 2
    what = " is a directory;" if name == "adir" else ":"
    expected = f"tsfs: error: --out {tmp_path / name}{what} give a file name ending in .png"
    assert text.startswith(expected)
    assert not (tmp_path / f"{name}.png").exists()


def test_an_out_that_cannot_be_written_is_an_output_error(store: tuple[Path, Path]) -> None:
    """As `tsfs train` says of its --out: exit 1, one line naming the file."""
    data, st = store
    code, text = tsfs("show", "images", str(st), str(data), *SMALL, "--out", "/proc/w.png")
    assert code == 1
    assert text.splitlines() == [
        "tsfs: error: cannot write /proc/w.png: No such file or directory; choose another --out"
    ]


def test_several_features_namespaces(store: tuple[Path, Path], tmp_path: Path) -> None:
    data, st = store
    haar = ["--wavelet", "haar", "--store", str(st)]
    code, text = tsfs("prep", "features", str(data), *SMALL, *haar)
    assert code == 0, text
    result = runner.invoke(
        app, ["show", "images", str(st), str(data), *SMALL, "--out", str(tmp_path / "a.png")]
    )
    assert result.exit_code == 0
    assert "features are left out" in result.output
    assert "--features-namespace" in result.output
    names = [p.name for p in (st / "features").iterdir() if p.is_dir()]
    chosen = [n for n in names if '"haar"' in (st / "features" / n / "zarr.json").read_text()]
    assert len(chosen) == 1
    out = tmp_path / "b.png"
    args = ["--features-namespace", chosen[0][:6], "--out", str(out)]
    code, text = tsfs("show", "images", str(st), str(data), *SMALL, *args)
    assert code == 0, text
    assert "left out" not in text
    # the sheet with features is wider than the images alone
    assert out.stat().st_size > (tmp_path / "a.png").stat().st_size
    # a mistyped one lists those the store has
    args = ["--features-namespace", "zz", "--out", str(tmp_path / "c.png")]
    code, text = tsfs("show", "images", str(st), str(data), *SMALL, *args)
    assert code == 2
    assert "no features namespace zz (--features-namespace); its features namespaces are" in text
    assert all(name in text for name in names)


def test_uea_prompt_states_the_sample_length(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    head = "@problemName Toy\n@dimensions 2\n@equalLength true\n@classLabel true a b\n@data\n"
    rows = [
        ":".join(",".join(f"{v:.3f}" for v in rng.normal(size=40)) for _ in range(2)) + ":a"
        for _ in range(6)
    ]
    data = tmp_path / "Toy_TRAIN.ts"
    data.write_text(head + "\n".join(rows) + "\n")
    st = str(tmp_path / "s")
    assert tsfs("prep", "features", str(data), "--store", st, "-q")[0] == 0
    code, text = tsfs("show", "prompt", st, str(data), "--split", "train")
    assert code == 0, text
    assert text.count("given the previous 40 steps") == 3  # two variables and the window
    # a series' window length would be ignored for samples: refused, not ignored
    code, text = tsfs("show", "prompt", st, str(data), "--split", "train", "--seq-len", "512")
    assert code == 2
    assert "--seq-len shapes the windows of a series (CSV data); Toy_TRAIN.ts holds" in text


def test_sheet_of_many_variables_shows_the_first_16_or_those_picked(tmp_path: Path) -> None:
    import matplotlib.image

    rng = np.random.default_rng(2)
    stamps = np.datetime64("2020-01-01T00:00") + np.arange(400) * np.timedelta64(1, "h")
    names = [f"c{i}" for i in range(19)] + ["OT"]
    lines = [
        f"{str(t).replace('T', ' ')}:00," + ",".join(f"{v:.4f}" for v in rng.normal(size=20))
        for t in stamps
    ]
    data = tmp_path / "wide.csv"
    data.write_text("date," + ",".join(names) + "\n" + "\n".join(lines) + "\n")
    st = str(tmp_path / "s")
    code, text = tsfs("prep", "images", str(data), *SMALL, "--size", "16", "--store", st, "-q")
    assert code == 0, text

    def panels(*args: str) -> tuple[int, str]:
        out = tmp_path / "w.png"
        code, text = tsfs("show", "images", st, str(data), *SMALL, "--out", str(out), *args)
        assert code == 0, text
        return matplotlib.image.imread(out).shape[0] // 260, text  # 2.6 in at 100 dpi each

    count, text = panels()
    assert count == 16
    # a tall sheet: the two title lines, then a gap, then the first panel's title
    top = matplotlib.image.imread(tmp_path / "w.png")[:200, :, :3]
    ink = np.flatnonzero((top < 0.5).any(axis=(1, 2)))
    runs = np.split(ink, np.flatnonzero(np.diff(ink) > 1) + 1)
    assert len(runs) >= 3
    assert runs[2][0] - runs[1][-1] >= 20, [(r[0], r[-1]) for r in runs]
    assert "showing the first 16 of 20 variables; pick others with --variables" in text
    count, text = panels("--variables", "OT, 3,c0")
    assert count == 3
    assert "showing" not in text
    code, text = tsfs(
        "show", "images", st, str(data), *SMALL, "--out", "x.png", "--variables", "c7,HUFL"
    )
    assert code == 2
    assert "--variables: 'HUFL' is neither a variable of wide.csv (c0, c1," in text
    assert "nor an index below 20" in text


def test_sheet_widens_to_a_long_file_name(tmp_path: Path) -> None:
    import matplotlib.image

    data = write_csv(tmp_path / f"{'electricity_transformer_' * 4}hourly.csv", "date,a,b,OT")
    st = str(tmp_path / "s")
    code, text = tsfs("prep", "images", str(data), *SMALL, "--size", "16", "--store", st, "-q")
    assert code == 0, text
    out = tmp_path / "w.png"
    code, text = tsfs("show", "images", st, str(data), *SMALL, "--out", str(out), "--variables=OT")
    assert code == 0, text
    sheet = matplotlib.image.imread(out)[..., :3]
    ink = np.flatnonzero((sheet[:40] < 0.5).any(axis=(0, 2)))  # the title's dark columns
    assert ink.size, "no title drawn"
    # the whole title lies on the sheet: it touches neither edge, and it is wider than 3 in
    assert ink[0] > 0
    assert ink[-1] < sheet.shape[1] - 1
    assert sheet.shape[1] > 300


def test_split_defaults_to_the_only_split_loaded(store: tuple[Path, Path]) -> None:
    data, st = store
    code, only_val = tsfs("show", "prompt", str(st), str(data), *SMALL, "--splits", "val")
    assert code == 0, only_val
    code, named = tsfs("show", "prompt", str(st), str(data), *SMALL, "--split", "val")
    assert code == 0, named
    code, test = tsfs("show", "prompt", str(st), str(data), *SMALL)
    assert code == 0, test
    assert only_val == named != test  # val's window 0, not test's
    code, text = tsfs("show", "prompt", str(st), str(data), *SMALL, "--splits", "train,val")
    assert code == 2
    assert "--split 'test' is not loaded; choose one of train, val" in text
