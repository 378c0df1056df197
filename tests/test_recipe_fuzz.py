"""Fuzz: recipes mutated from the shipped ones either pass `recipe check` or fail in one line with exit 2.

A refused recipe must also be refused by `dalle-kit run` (exit 2, one line, no traceback) with nothing
created; every accepted one must start (one step) or fail in one line. 240 mutants, seeded: 223 refused,
17 accepted, 0 tracebacks (the first run found a shapes size of 10**30 passing the check and crashing).

The CLI's own arguments likewise: 300 command lines of random commands, options and values, with hostile paths
(missing, garbage, a folder, a FIFO, links, names too long or with a newline), seeded: 209 refused in one line,
91 succeeded (listings, help), 0 tracebacks (the first runs found a name too long and a newline in a path).
"""

from __future__ import annotations

import math
import os
import random
import tomllib
from pathlib import Path

import tomli_w

RECIPES = Path(__file__).parents[1] / "recipes"
SHIPPED = sorted(
    p
    for p in RECIPES.glob("*.toml")
    if not p.name.startswith("bench-")
    and "cifar" not in p.name
    and p.name
    not in (
        "shapes-finetune.toml",
        "shapes-gan-clip.toml",
        "shapes-dalle.toml",
        "shapes-unclip.toml",
    )  # need an earlier run
    and "extra" not in tomllib.loads(p.read_text())
)  # bench grids (lucic-mnist.toml) are not recipes
BAD_VALUES = [
    "text",
    -1,
    0,
    10**30,
    2**70,
    -(2**70),
    math.nan,
    math.inf,
    -math.inf,
    1e308,
    "",
    " ",
    "ünïcødé ✓",
    "../../x",
    "a\x00b",
    "x" * 300,
    [],
    [1, 2, 3],
    {"nested": 1},
    True,
    0.5,
    -0.5,
    "nan",
]


def mutants(n: int, seed: int = 0):
    """(label, recipe dict) pairs: one mutation each, drawn with a seeded generator."""
    rng = random.Random(seed)
    bases = [(p.name, tomllib.loads(p.read_text())) for p in SHIPPED]
    for i in range(n):
        name, base = rng.choice(bases)
        data = tomllib.loads(tomli_w.dumps(base))
        tables = [k for k, v in data.items() if isinstance(v, dict)]
        kind = rng.choice(["value", "value", "value", "unknown", "drop", "part"])
        if kind == "value":
            table = rng.choice(tables + [None])
            node = data if table is None else data[table]
            keys = [k for k in node if not isinstance(node[k], dict)]
            if not keys:
                continue
            key = rng.choice(keys)
            node[key] = rng.choice(BAD_VALUES)
            label = f"{name}: {table or ''}.{key} = {node[key]!r}"[:120]
        elif kind == "unknown":
            table = rng.choice(tables)
            data[table]["colour_of_the_sky"] = "blue"
            label = f"{name}: [{table}] unknown key"
        elif kind == "drop":
            table = rng.choice(tables)
            del data[table]
            label = f"{name}: [{table}] removed"
        else:
            table = rng.choice([t for t in tables if "name" in data[t]] or tables)
            data[table]["name"] = rng.choice(["nosuchpart", "dcgan ", "DCGAN", ""])
            label = f"{name}: [{table}] name = {data[table]['name']!r}"
        yield i, label, data


def write(tmp_path: Path, i: int, data: dict) -> Path:
    path = tmp_path / f"mutant-{i:03d}.toml"
    path.write_text(tomli_w.dumps(data))
    return path


def test_mutated_recipes_pass_or_fail_in_one_line(tmp_path, run_cli, capsys):
    counts = {"tried": 0, "accepted": 0, "refused": 0, "traceback": 0}
    runs = tmp_path / "runs"
    for i, label, data in mutants(240):
        path = write(tmp_path, i, data)
        counts["tried"] += 1
        code, out, err = run_cli("recipe", "check", path)
        assert code in (0, 2), f"{label}: exit {code}: {err}"
        assert "Traceback" not in err, f"{label}: traceback at check"
        if code == 0:
            counts["accepted"] += 1
            continue
        counts["refused"] += 1
        assert len(err.strip().splitlines()) == 1, f"{label}: more than one line: {err}"
        code, out, err = run_cli("run", path, "--runs-dir", runs, "-q")
        assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, f"{label}: run said {err}"
        assert not runs.exists() or not any(runs.iterdir()), f"{label}: a run directory was made for a refused recipe"
    with capsys.disabled():
        print(f"\nrecipe fuzz: {counts}")
    assert counts["refused"] > counts["tried"] // 3 and counts["traceback"] == 0


def test_accepted_mutants_start(tmp_path, run_cli):
    """Every mutant that passes `recipe check` also starts: one step, or a one-line exit 2."""
    for i, label, data in mutants(240):
        path = write(tmp_path, i, data)
        if run_cli("recipe", "check", path)[0] != 0:
            continue
        code, out, err = run_cli(
            "run", path, "--runs-dir", tmp_path / f"runs-{i}", "-q", "--stop-at", "1", "--set", "eval.metrics=[]"
        )
        assert code in (0, 2) and "Traceback" not in err, f"{label}: exit {code}: {err[-400:]}"


# ---------------------------------------------------------------------------------------------- the CLI's arguments
def hostile_paths(tmp: Path) -> list[str]:
    """Paths a careless or hostile command line names: missing, empty, garbage, a folder, a FIFO, links (one to a
    device), a path under a file, names too long or with a newline; never a recipe that would train."""
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "empty.toml").write_text("")
    (tmp / "garbage.toml").write_bytes(bytes(random.Random(1).randrange(256) for _ in range(300)))
    (tmp / "bad.toml").write_text('name = "x"\npipeline = "gan"\n[train]\nsteps = -1\n')
    (tmp / "folder").mkdir(exist_ok=True)
    run_like = tmp / "run-like"
    (run_like / "checkpoints").mkdir(parents=True, exist_ok=True)
    (run_like / "recipe.toml").write_text("this is [not toml")
    fifo = tmp / "fifo"
    if not fifo.exists():
        os.mkfifo(fifo)
    for name, target in (("to-devnull", "/dev/null"), ("dangling", str(tmp / "nowhere"))):
        if not (tmp / name).is_symlink():
            (tmp / name).symlink_to(target)
    return [
        str(tmp / "missing.toml"),
        str(tmp / "empty.toml"),
        str(tmp / "garbage.toml"),
        str(tmp / "bad.toml"),
        str(tmp / "folder"),
        str(run_like),
        str(fifo),
        str(tmp / "to-devnull"),
        str(tmp / "dangling"),
        str(tmp / "empty.toml" / "under-a-file"),
        str(tmp / ("n" * 300)),
        str(tmp / "new\nline"),
        "-",
        str(tmp / "out.png"),
        str(tmp / "new-folder"),
    ]


STRINGS = [
    "",
    " ",
    "ünïcødé ✓",
    "x" * 300,
    "a\nb",
    "--",
    "-1",
    "a red circle",
    "train.steps=5",
    "fid",
    "dcgan",
    "nosuch=",
    "=1",
    "seed",
]
NUMBERS = ["0", "-1", "1", "3", str(2**70), "abc", "1.5", "", "nan"]


def commands(group=None, path=()):
    """(command path, click command) for every command of the CLI, the tools' (loaded through their entry points)
    with the core's."""
    import click

    from dalle_kit.cli import cli

    group = group or cli
    ctx = click.Context(group)
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        if isinstance(command, click.Group):
            yield from commands(command, (*path, name))
        else:
            yield (*path, name), command


def random_argv(rng: random.Random, paths: list[str]) -> list[str]:
    import click

    path, command = rng.choice(list(commands()))
    argv = list(path)
    for param in command.params:
        if isinstance(param, click.Argument):
            count = rng.randint(0, 3) if param.nargs == -1 else (1 if param.required or rng.random() < 0.8 else 0)
            pool = paths if not (path == ("sample",) and param.name == "prompts") else STRINGS
            if path == ("run",):
                pool = [p for p in paths if p not in ("-",)]  # `run` with no recipe would train the default one
                count = 1
            argv += [rng.choice(pool) for _ in range(count)]
            continue
        if rng.random() < 0.5 or param.name == "help":
            continue
        flag = rng.choice(param.opts)
        if getattr(param, "is_flag", False):
            argv.append(flag)
            continue
        for _ in range(rng.randint(1, 2) if param.multiple else 1):
            numeric = isinstance(param.type, (click.types.IntParamType, click.types.FloatParamType))
            value = rng.choice(NUMBERS if numeric else paths + STRINGS)
            argv += [flag, value]
    if rng.random() < 0.15:  # and sometimes an option no command has, or a stray value
        argv.insert(rng.randint(len(path), len(argv)), rng.choice(["--no-such-option", "-z", "stray", "--set"]))
    return argv


def test_cli_arguments_fail_in_one_line(tmp_path, run_cli, monkeypatch, capsys):
    """300 command lines with random commands, options, values and hostile paths: each succeeds or fails in one
    line with exit 2 (`plugins doctor` may say 1: problems found); not one traceback, nothing hangs."""
    monkeypatch.chdir(tmp_path)  # commands whose default output is relative (runs/, compare/) write only here
    paths = hostile_paths(tmp_path / "hostile")
    rng = random.Random(0)
    counts = {"tried": 0, "ok": 0, "refused": 0, "traceback": 0}
    for _ in range(300):
        argv = random_argv(rng, paths)
        counts["tried"] += 1
        try:
            code, out, err = run_cli(*argv)
        except BaseException as exc:  # noqa: BLE001  (anything escaping main() is a traceback for the user)
            counts["traceback"] += 1
            raise AssertionError(f"dalle-kit {argv!r}: {type(exc).__name__}: {exc}") from exc
        errors = [line for line in err.splitlines() if line.startswith("dalle-kit: error:")]
        assert "Traceback" not in err, f"{argv!r}: {err}"
        if code == 0 or (code == 1 and argv[:2] == ["plugins", "doctor"]):
            counts["ok"] += 1
            continue
        counts["refused"] += 1
        assert code == 2 and len(errors) == 1, f"dalle-kit {argv!r}: exit {code}: {err}"
        others = [line for line in err.splitlines() if line.strip() and not line.startswith("dalle-kit: ")]
        assert not others, f"dalle-kit {argv!r}: more than one line: {err}"
    assert os.path.islink(paths[7]) and os.readlink(paths[7]) == "/dev/null" and Path(paths[6]).is_fifo()
    with capsys.disabled():
        print(f"\ncli fuzz: {counts}")
    assert counts["refused"] > counts["tried"] // 2 and counts["traceback"] == 0
