"""Chaos campaign, area `cli` (issue 13, failures 1, 2 and 8): bad invocations and fuzzed specs.

- every bad invocation of the issue (mistyped commands and options, missing and malformed arguments, binary and
  hostile files, a TEAMTR_HOME that is a file, paths the OS refuses) must end with its documented exit code and
  one `error:` line on stderr (help and version: exit 0), never a traceback, and leave the registry byte-identical;
- hypothesis-generated specs: every spec that parses round-trips through the TOML writer (write -> read gives the
  same spec) and every refusal is an `InputError`, never another exception;
- Ctrl-C during `train` (full size only): exit 130, one line, registry verified clean, no temp dir left.

`campaign(full, workdir)` runs it; tests/chaos/test_cli.py runs the small version in CI.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import Row

REPO = Path(__file__).resolve().parents[2]
TEAM = "tiny-duo"


@dataclass
class Case:
    """One bad (or help/version) invocation and what it must do."""

    label: str
    args: list[str]
    code: int                      # expected exit code
    env: dict[str, str] = field(default_factory=dict)
    needs: str = ""                # a literal that the error line must contain
    home: str = ""                 # a TEAMTR_HOME other than the registry's (a file, a path under a file)

    @property
    def ok_exit(self) -> bool:
        return self.code == 0


def snapshot(home: Path) -> dict[str, bytes]:
    """Every file under `home` (locks excluded): refused input must leave it byte-identical."""
    if home.is_file():
        return {"": home.read_bytes()}
    return {str(p.relative_to(home)): p.read_bytes() for p in sorted(home.rglob("*"))
            if p.is_file() and "locks" not in p.parts}


# -- fixtures ------------------------------------------------------------------------------------------------
from . import TINY_SPEC, make_tiny_base  # noqa: E402  (shared with the hub campaign)


def make_tiny_team(home: Path, base_dir: Path) -> None:
    from teamtr_adapters.registry import Registry
    from teamtr_adapters.runtime.base import resolve_base
    from teamtr_adapters.spec import parse_spec

    Registry(home).init_team(parse_spec(TINY_SPEC.format(base=base_dir)), resolve_base(str(base_dir)))


def make_inputs(work: Path, home: Path) -> dict[str, str]:
    """Hostile files the invocations point at."""
    from teamtr_adapters.registry import Registry

    work.mkdir(parents=True, exist_ok=True)
    (work / "binary.toml").write_bytes(bytes(range(256)) * 4)
    (work / "utf16.toml").write_bytes("name = 'x'\n".encode("utf-16"))
    (work / "dated.toml").write_text("name = 'x'\n[task]\nparams = { when = 1979-05-27T07:32:00Z }\n"
                                     "[[roles]]\nname = 'a'\n")
    (work / "newline.toml").write_text('name = "x"\n[[roles]]\nname = "a\\n"\n')
    (work / "deep.toml").write_text("name = 'x'\n[task]\nparams = { a = " + "[" * 5000 + "]" * 5000 + " }\n")
    (work / "nan.toml").write_text("name = 'x'\n[trust_region]\ndelta = inf\n[[roles]]\nname = 'a'\n")
    (work / "a-dir.toml").mkdir(exist_ok=True)
    (work / "home-file").write_text("not a directory\n")
    exported = work / "exported"
    if not exported.exists():
        Registry(home).export(f"{TEAM}.solver:v1", exported)
    for name, meta in (("meta-binary", b"\xff\xfe\x00\x01garbage"), ("meta-list", b"[]"),
                       ("meta-base-str", b'{"base": "x"}')):
        d = work / name
        if not d.exists():
            shutil.copytree(exported, d)
        (d / "teamtr.json").write_bytes(meta)
    return {"work": str(work), "home": str(home)}


def cases(p: dict[str, str]) -> list[Case]:
    """The bad invocations of issue 13 (and help/version), with their expected exit codes."""
    w, t = p["work"], TEAM
    ref = f"{t}.solver:v1"
    return [
        Case("unknown option", ["--bogus"], 2, needs="--bogus"),
        Case("-h", ["-h"], 0),
        Case("--help", ["--help"], 0),
        Case("--version", ["--version"], 0),
        Case("subcommand -h", ["team", "show", "-h"], 0),
        Case("unknown command", ["nosuch"], 2, needs="nosuch"),
        Case("unknown subcommand", ["team", "frobnicate"], 2),
        Case("group without command", ["team"], 2),
        Case("missing argument", ["team", "show"], 2),
        Case("option without value", ["train", "--team"], 2, needs="--team"),
        # `--team` may be left out when the registry holds one team; with none (or several) it is a usage error
        Case("missing --team", ["train", "critic"], 2, home=f"{w}/no-home", needs="team init"),
        Case("unknown option of a command", ["team", "list", "--bogus"], 2),
        Case("--registry without value", ["team", "list", "--registry"], 2, needs="--registry"),
        Case("--registry not ORG/REPO", ["history", "--registry", "hf://no-slash"], 2, needs="invalid Hub repo"),
        Case("--registry naming a role", ["team", "list", "--registry", "hf://org/reg#solver"], 2, needs="not a role"),
        Case("extra argument", ["registry", "gc", "--yes", "extra"], 2),
        Case("--n abc", ["eval", "--team", t, "--n", "abc"], 2, needs="--n"),
        Case("--n 0 (before loading)", ["eval", "--team", t, "--n", "0"], 2),
        Case("--k -1 (before loading)", ["eval", "--team", t, "--k", "-1"], 2),
        Case("--split bogus (before loading)", ["eval", "--team", t, "--split", "bogus"], 2, needs="bogus"),
        Case("--temperature nan", ["run", "q", "--team", t, "--temperature", "nan"], 2),
        Case("--device tpu", ["train", "critic", "--team", t, "--device", "tpu"], 2, needs="tpu"),
        Case("--updates 0", ["train", "critic", "--team", t, "--updates", "0"], 2),
        Case("emoji code in a name", ["team", "show", "a:b:c"], 2, needs="a:b:c"),
        Case("markup in a name", ["team", "show", "[bold]x[/]"], 2, needs="[bold]x[/]"),
        Case("bad markup in a ref", ["adapter", "show", "[/]:v1"], 2, needs="[/]"),
        Case("name with a newline", ["team", "show", "x\n"], 2),
        Case("history of a bad name", ["history", "--team", "a\n"], 2),
        Case("binary spec", ["team", "init", f"{w}/binary.toml"], 2, needs="UTF-8"),
        Case("UTF-16 spec", ["team", "init", f"{w}/utf16.toml"], 2),
        Case("spec that is a dir", ["team", "init", f"{w}/a-dir.toml"], 2),
        Case("TOML datetime param", ["team", "init", f"{w}/dated.toml"], 2, needs="task.params.when"),
        Case("role name with newline", ["team", "init", f"{w}/newline.toml"], 2, needs="role name"),
        Case("params nested 5000 deep", ["team", "init", f"{w}/deep.toml"], 2),
        Case("delta = inf", ["team", "init", f"{w}/nan.toml"], 2, needs="delta"),
        Case("binary teamtr.json", ["adapter", "import", f"{w}/meta-binary", "x1"], 2, needs="teamtr.json"),
        Case("teamtr.json []", ["adapter", "import", f"{w}/meta-list", "x2"], 2, needs="teamtr.json"),
        Case("teamtr.json base str", ["adapter", "import", f"{w}/meta-base-str", "x3"], 2),
        Case("swap to binary teamtr.json", ["swap", "solver", f"{w}/meta-binary", "--team", t], 2),
        Case("export to /proc/x", ["adapter", "export", ref, "/proc/x"], 8, needs="/proc/x"),
        Case("export under a file", ["adapter", "export", ref, f"{w}/home-file/x"], 8),
        Case("export onto a file", ["adapter", "export", ref, f"{w}/home-file"], 2),
        Case("unknown version", ["swap", "solver", "v99", "--team", t], 2),
        Case("report of no run", ["report", "nosuch"], 2, needs="nosuch"),
        Case("bad hub ref", ["hub", "pull", "../x"], 2),
        Case("home is a file: team list", ["team", "list"], 2, home=f"{w}/home-file", needs="TEAMTR_HOME"),
        Case("home is a file: verify", ["registry", "verify"], 2, home=f"{w}/home-file", needs="TEAMTR_HOME"),
        Case("home is a file: gc", ["registry", "gc", "--yes"], 2, home=f"{w}/home-file"),
        Case("home under a file: init", ["team", "init", "math-trio"], 2, home=f"{w}/home-file/sub"),
        Case("home under a file: history", ["history"], 2, home=f"{w}/home-file/sub"),
    ]


# -- running -------------------------------------------------------------------------------------------------
def _env(home: str) -> dict[str, str]:
    env = {**os.environ, "TEAMTR_HOME": home, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1",
           "COLUMNS": "200", "TOKENIZERS_PARALLELISM": "false"}
    return env


def run_subprocess(args: list[str], home: str, timeout: float = 300) -> tuple[int, str, str]:
    r = subprocess.run([sys.executable, "-m", "teamtr_adapters", *args], env=_env(home), cwd=REPO,
                       capture_output=True, text=True, timeout=timeout)
    return r.returncode, r.stdout, r.stderr


def run_inprocess(args: list[str], home: str) -> tuple[int, str, str]:
    """`run(args)` with stdout/stderr captured; an exception escaping `run` is printed as a traceback (as the
    interpreter would) so that it counts as one."""
    import contextlib
    import io
    import traceback

    from teamtr_adapters.cli.app import run

    out, err = io.StringIO(), io.StringIO()
    old = os.environ.get("TEAMTR_HOME")
    os.environ["TEAMTR_HOME"] = home
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = run(list(args))
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else 1
            except BaseException:  # noqa: BLE001 - a crash is what this counts
                traceback.print_exc()
                code = 1
    finally:
        if old is None:
            os.environ.pop("TEAMTR_HOME", None)
        else:
            os.environ["TEAMTR_HOME"] = old
    return code, out.getvalue(), err.getvalue()


def judge(case: Case, code: int, out: str, err: str) -> tuple[bool, bool, str]:
    """(failed, traceback, why)."""
    tb = "Traceback" in err or "Traceback" in out
    if code != case.code:
        return True, tb, f"exit {code}, expected {case.code}: {err.strip()[-200:]}"
    if case.ok_exit:
        if err.strip() or not out.strip():
            return True, tb, f"help/version: stdout {len(out)} chars, stderr {err.strip()[:200]!r}"
        return False, tb, ""
    lines = err.splitlines()
    if len(lines) != 1 or not lines[0].startswith("error: "):
        return True, tb, f"stderr is not one error line: {err[:300]!r}"
    if case.needs and case.needs not in lines[0]:
        return True, tb, f"{case.needs!r} not in {lines[0]!r}"
    return False, tb, ""


def invocation_row(all_cases: list[Case], home: Path, *, subprocess_mode: bool, repeat: int = 1) -> Row:
    t0 = time.perf_counter()
    fails = tbs = changed = trials = 0
    notes = []
    for _ in range(repeat):
        for case in all_cases:
            target = Path(case.home) if case.home else home
            before, before_main = snapshot(target) if target.exists() else {}, snapshot(home)
            runner = run_subprocess if subprocess_mode else run_inprocess
            code, out, err = runner(case.args, str(target))
            failed, tb, why = judge(case, code, out, err)
            after = snapshot(target) if target.exists() else {}
            trials += 1
            fails += failed
            tbs += tb
            if after != before or snapshot(home) != before_main:
                changed += 1
                notes.append(f"{case.label}: registry changed")
            if failed:
                notes.append(f"{case.label}: {why}")
    mode = "subprocess" if subprocess_mode else "in-process"
    return Row("cli", f"bad invocations ({mode})", trials, fails, tbs, changed, time.perf_counter() - t0,
               "; ".join(notes[:5]))


# -- spec fuzzing ----------------------------------------------------------------------------------------------
def spec_documents():
    """A hypothesis strategy of TOML spec texts: mostly well-formed documents built from valid and invalid
    parts (names with newlines, non-BMP text, dates, nan and inf, wrong types, unknown keys), some mutated."""
    from hypothesis import strategies as st
    import tomli_w

    name_chars = st.sampled_from(list("abcXYZ019_-") + ["\n", " ", "/", ".", ":", "\u00e9", "\U0001f600"])
    names = st.one_of(st.sampled_from(["solver", "critic", "a", "x-1", "A_b"]),
                      st.text(name_chars, min_size=0, max_size=70))
    scalars = st.one_of(st.integers(-2**63, 2**63 - 1), st.floats(allow_nan=True, allow_infinity=True),
                        st.booleans(), st.text(max_size=30),
                        st.datetimes(timezones=st.none() | st.just(dt.timezone.utc)), st.dates(), st.times())
    values = st.recursive(scalars, lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids,
                                                                                              max_size=4),
                          max_leaves=12)
    role = st.fixed_dictionaries({"name": names}, optional={
        "system_prompt": st.text(max_size=60) | st.integers(),
        "max_new_tokens": st.integers(-5, 5000) | st.just("8"),
        "colour": st.just("red")})
    numbers = st.floats(allow_nan=True, allow_infinity=True, min_value=None) | st.integers(-3, 300)
    doc = st.fixed_dictionaries({"name": names, "roles": st.lists(role, min_size=0, max_size=4)}, optional={
        "base": st.sampled_from(["embedded", "", "org/name", "/some/dir"]) | st.text(max_size=20),
        "protocol": st.fixed_dictionaries({}, optional={"router": st.sampled_from(["round-robin", "random", "x"]),
                                                        "turns": st.integers(-1, 70)}),
        "task": st.fixed_dictionaries({}, optional={"name": st.sampled_from(["arithmetic", "gsm"]) | st.text(max_size=9),
                                                    "params": st.dictionaries(st.text(max_size=10), values, max_size=4)}),
        "sampling": st.fixed_dictionaries({}, optional={"temperature": numbers, "top_p": numbers}),
        "lora": st.fixed_dictionaries({}, optional={"rank": st.integers(-1, 2000), "alpha": numbers,
                                                    "dropout": numbers,
                                                    "target_modules": st.lists(st.text(max_size=8), max_size=3)}),
        "trust_region": st.fixed_dictionaries({}, optional={"delta": numbers, "beta0": numbers, "lr": numbers,
                                                            "group_size": st.integers(-1, 300),
                                                            "ratio": st.sampled_from(["token", "seq-product", "x"])}),
        "extra": st.integers(),
    })

    def render(d: dict[str, Any]) -> str:
        try:
            return tomli_w.dumps(d)
        except (TypeError, ValueError):
            return "name = 'x'\n"

    texts = doc.map(render)
    mutated = st.tuples(texts, st.integers(0, 10_000), st.text(max_size=3)).map(
        lambda t: t[0][: t[1] % (len(t[0]) + 1)] + t[2] + t[0][t[1] % (len(t[0]) + 1):])
    return st.one_of(texts, texts, texts, mutated)


def check_spec_text(text: str) -> str | None:
    """None when `text` behaves (refused with an InputError, or parsed and round-tripping); else what went wrong."""
    from teamtr_adapters.errors import InputError
    from teamtr_adapters.spec import parse_spec

    try:
        spec = parse_spec(text)
    except InputError:
        return None
    except BaseException as e:  # noqa: BLE001
        return f"parse raised {type(e).__name__}: {e}"
    try:
        again = parse_spec(spec.to_toml())
    except BaseException as e:  # noqa: BLE001
        return f"accepted spec does not round-trip: {type(e).__name__}: {str(e)[:200]}"
    if again != spec or again.spec_hash() != spec.spec_hash():
        return "accepted spec changed on write -> read"
    return None


def fuzz_row(n: int, seed: int = 0) -> Row:
    from hypothesis import HealthCheck, Phase, given, seed as hseed, settings

    t0 = time.perf_counter()
    stats = {"trials": 0, "accepted": 0, "failures": [], "tracebacks": 0}

    @hseed(seed)
    @settings(max_examples=n, deadline=None, database=None, derandomize=False, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(spec_documents())
    def prop(text: str) -> None:
        stats["trials"] += 1
        problem = check_spec_text(text)
        if problem:
            stats["failures"].append(problem)
            stats["tracebacks"] += problem.startswith("parse raised")

    prop()
    fails = stats["failures"]
    return Row("cli", "fuzzed specs (hypothesis)", stats["trials"], len(fails), stats["tracebacks"], 0,
               time.perf_counter() - t0, "; ".join(sorted(set(fails))[:3]))


# -- Ctrl-C during train ---------------------------------------------------------------------------------------
TRAIN_ARGS = ["train", "critic", "--team", TEAM, "--updates", "50", "--steps", "1", "-G", "2", "-P", "2",
              "--max-new-tokens", "3", "--dtype", "float32", "--device", "cpu"]


def interrupt_train(home: Path, after_updates: int = 1, timeout: float = 300) -> tuple[int, str, str]:
    """Start `train` in a subprocess, wait until it has recorded `after_updates` update(s) (0: until its run dir
    exists), send SIGINT, and return (exit code, stdout, stderr).

    The child starts with SIGINT at its default action: a background job of a non-interactive shell (`cmd &` in a
    script, as CI may launch the tests) inherits SIGINT ignored, and Python then never installs its Ctrl-C handler,
    so the run would finish instead of being interrupted."""
    proc = subprocess.Popen([sys.executable, "-m", "teamtr_adapters", *TRAIN_ARGS], env=_env(str(home)), cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            logs = list((home / "runs").glob("*/updates.jsonl")) if after_updates else list((home / "runs").glob("*/config.json"))
            if logs and (not after_updates or sum(1 for _ in open(logs[0])) >= after_updates):
                break
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return proc.returncode, out, err


def interrupt_problems(home: Path, code: int, err: str) -> list[str]:
    from teamtr_adapters.registry import Registry

    problems = []
    if code != 130:
        problems.append(f"exit {code}")
    if err.strip() != "interrupted":
        problems.append(f"stderr {err.strip()[-300:]!r}")
    report = Registry(home).verify()
    if not report["ok"]:
        problems.append(f"verify: {report['problems'][:3]}")
    loose = [p.name for p in home.iterdir() if p.name.startswith(".train-")]
    left = [p.name for p in (home / "tmp").iterdir()] if (home / "tmp").is_dir() else []
    if loose or left:
        problems.append(f"temp dirs left: {loose + left}")
    return problems


def interrupt_row(home: Path, trials: int) -> Row:
    t0 = time.perf_counter()
    fails = tbs = 0
    notes: list[str] = []
    for i in range(trials):
        code, _, err = interrupt_train(home, after_updates=i % 3)
        problems = interrupt_problems(home, code, err)
        fails += bool(problems)
        tbs += "Traceback" in err
        notes += problems
    return Row("cli", "SIGINT during train", trials, fails, tbs, 0, time.perf_counter() - t0, "; ".join(notes[:3]))


# -- the campaign ----------------------------------------------------------------------------------------------
def campaign(full: bool, workdir: Path) -> list[Row]:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TEAMTR_CACHE", str(REPO / ".cache" / "teamtr"))
    workdir = Path(workdir)
    home = workdir / "home"
    base = make_tiny_base(workdir / "tiny-llama")
    if not home.exists():
        make_tiny_team(home, base)
    all_cases = cases(make_inputs(workdir / "inputs", home))
    rows = [invocation_row(all_cases, home, subprocess_mode=False)]
    if full:
        rows.append(invocation_row(all_cases, home, subprocess_mode=True))
    rows.append(fuzz_row(10_000 if full else 200))
    if full:
        rows.append(interrupt_row(home, 3))
    return rows
