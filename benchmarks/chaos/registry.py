"""Registry chaos campaign (issue 13, failures 3-5): SIGKILL during version writes, pin moves and gc; writers,
readers and gc side by side; every kind of stored damage, through `registry verify`, `team show`,
`adapter list`, `registry gc` and `history`.

No torch: adapters are small random LoRA pairs written with numpy + safetensors, and the team is created with
`Registry.create_team` from versions stored that way. Kill trials fork a child from this process (the registry
modules are imported once), so a trial costs milliseconds plus its checks; `gc_beside_writers` uses separate
Python processes. `campaign(full, workdir)` runs them all and returns the rows; tests/chaos/test_registry.py
runs the same functions at CI size.
"""
from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Callable

from benchmarks.chaos import Row

REPO = Path(__file__).resolve().parents[2]
AREA = "registry"
TEAM = "chaos"
ROLES = ("solver", "critic")
BASE = {"name": "fake", "hash": "f" * 16}
SPEC = """
name = "chaos"
base = "embedded"
[task]
name = "arithmetic"
[lora]
rank = 2
alpha = 4
target_modules = ["q_proj"]
[[roles]]
name = "solver"
system_prompt = "Solve."
[[roles]]
name = "critic"
system_prompt = "Check."
"""
ADAPTER_CONFIG = {"peft_type": "LORA", "r": 2, "lora_alpha": 4, "target_modules": ["q_proj"],
                  "base_model_name_or_path": "fake", "task_type": "CAUSAL_LM"}


def fake_adapter(dst: Path, seed: int | list[int]) -> Path:
    """A tiny PEFT LoRA dir (two 2x8 matrices), distinct content for each seed."""
    import numpy as np
    from safetensors.numpy import save_file

    rng = np.random.default_rng(seed)
    dst.mkdir(parents=True, exist_ok=True)
    key = "base_model.model.model.layers.0.self_attn.q_proj"
    save_file({f"{key}.lora_A.weight": rng.normal(size=(2, 8)).astype("float32"),
               f"{key}.lora_B.weight": rng.normal(size=(8, 2)).astype("float32")}, str(dst / "adapter_model.safetensors"))
    (dst / "adapter_config.json").write_text(json.dumps(ADAPTER_CONFIG))
    return dst


def _hold(reg: Any):
    return reg.hold() if hasattr(reg, "hold") else nullcontext()  # older registries had no shared lock


def new_registry(home: Path, pool: int = 4, seed: int = 0) -> Any:
    """A registry at `home` holding team `chaos` (solver, critic) and `pool` versions per role."""
    from teamtr_adapters.registry import Registry
    from teamtr_adapters.spec import parse_spec

    reg = Registry(home)
    src = Path(tempfile.mkdtemp(prefix="chaos-src-"))
    try:
        ids = {r: [reg.add_version(f"{TEAM}.{r}", fake_adapter(src / f"{r}{i}", [seed, k, i]), made_by="test",
                                   base=BASE).id for i in range(pool)] for k, r in enumerate(ROLES)}
    finally:
        shutil.rmtree(src, ignore_errors=True)
    reg.create_team(parse_spec(SPEC), {r: ids[r][0] for r in ROLES}, BASE, {"event": "init"})
    return reg


def snapshot(home: Path) -> dict[str, bytes]:
    """Every file under the registry home but the lock files."""
    return {str(p.relative_to(home)): p.read_bytes() for p in sorted(home.rglob("*"))
            if p.is_file() and "locks" not in p.relative_to(home).parts}


def fork_run(fn: Callable[[], None]) -> int:
    """Run `fn` in a forked child; return its pid (the child exits 0 when fn returns, 1 on an exception)."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        code = 0
        try:
            fn()
        except BaseException:
            traceback.print_exc()
            code = 1
        os._exit(code)
    return pid


def kill_after(pid: int, delay: float) -> bool:
    """SIGKILL child `pid` after `delay` s; True when it was still running (the kill landed mid-run)."""
    time.sleep(delay)
    done, _ = os.waitpid(pid, os.WNOHANG)
    if done:
        return False
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return True


def time_child(fn: Callable[[], None]) -> float:
    t0 = time.perf_counter()
    pid = fork_run(fn)
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError("the uninterrupted run failed (see its traceback above)")
    return time.perf_counter() - t0


def pin_consistency(reg: Any, team: str = TEAM) -> list[str]:
    """Manifest and history agree: one pin event per revision 1..R, the last one matching the manifest."""
    m = reg.manifest(team)
    events = [e for e in reg.history(team) if e.get("pins_after")]
    revs = [e.get("revision") for e in events]
    out = []
    if revs != list(range(1, m["revision"] + 1)):
        out.append(f"manifest revision {m['revision']} but pin events {revs[-3:]} ({len(revs)})")
    elif events[-1]["pins_after"] != {r: p["id"] for r, p in m["roles"].items()}:
        out.append("last pin event does not match the manifest")
    return out


class _Tally:
    def __init__(self, check: str) -> None:
        self.row = Row(AREA, check, 0, 0, 0)
        self.t0 = time.perf_counter()
        self.notes: list[str] = []

    def trial(self, fn: Callable[[], list[str]]) -> None:
        self.row.trials += 1
        try:
            problems = fn()
        except Exception as e:  # a check that raised: the registry gave a traceback-worthy error
            self.row.tracebacks += 1
            self.row.failures += 1
            self.notes.append(f"{type(e).__name__}: {e}")
            return
        if problems:
            self.row.failures += 1
            self.notes.append(problems[0])

    def done(self, note: str = "") -> Row:
        self.row.seconds = time.perf_counter() - self.t0
        self.row.note = "; ".join(filter(None, [note] + self.notes[:3]))
        return self.row


# -- SIGKILL during version writes (with alias moves) ------------------------------------------------------
def kill_version_writes(workdir: Path, trials: int, seed: int = 0, per_registry: int = 25, ops: int = 12) -> Row:
    from teamtr_adapters.errors import NotFoundError
    from teamtr_adapters.registry import Registry

    tally, rng, mid = _Tally("SIGKILL during version writes"), random.Random(seed), 0
    src_root = workdir / "src-writes"

    def writer(trial: int) -> Callable[[], None]:
        def run() -> None:
            reg = Registry(home)
            for i in range(ops):
                d = fake_adapter(src_root / f"{os.getpid()}-{i}", [seed, trial + 1, i])
                with _hold(reg):
                    info = reg.add_version("crashy", d, made_by="test", base=BASE, metrics={"i": i})
                    reg.set_alias("crashy", "head", info.name)
        return run

    home = workdir / "writes-0"
    new_registry(home)
    span = time_child(writer(-1))
    for t in range(trials):
        if t and t % per_registry == 0:
            shutil.rmtree(home, ignore_errors=True)
            home = workdir / f"writes-{t}"
            new_registry(home)
        mid += kill_after(fork_run(writer(t)), rng.uniform(0.02, 0.95) * span)

        def check() -> list[str]:
            reg = Registry(home)
            report = reg.verify()
            problems = list(report["problems"])
            for info in [v for v in reg.list_versions() if v.lineage == "crashy"]:  # none if killed before v1
                reg.version_path(info.id)  # every visible version loads: its bytes match what was recorded
            try:
                reg.version_path(reg.resolve("crashy:head").id)
            except NotFoundError:
                pass  # killed before the first version was named
            return problems
        tally.trial(check)
    shutil.rmtree(src_root, ignore_errors=True)
    return tally.done(f"{mid}/{trials} kills mid-run; loop {span:.2f} s")


# -- SIGKILL during pin moves and rollbacks ------------------------------------------------------------------
def kill_pin_moves(workdir: Path, trials: int, seed: int = 0, per_registry: int = 25, ops: int = 40) -> Row:
    from teamtr_adapters.errors import InputError
    from teamtr_adapters.registry.rollback import pins_at, rollback_role, rollback_team
    from teamtr_adapters.registry import Registry

    tally, rng, mid = _Tally("SIGKILL during pin moves; rollback after"), random.Random(seed), 0

    def mover(trial: int) -> Callable[[], None]:
        def run() -> None:
            reg, r = Registry(home), random.Random(trial)
            pool = {role: [v.id for v in reg.list_versions(f"{TEAM}.{role}")] for role in ROLES}
            for i in range(ops):
                if i % 7 == 6:
                    try:
                        rollback_role(reg, TEAM, r.choice(ROLES))
                    except InputError:
                        pass  # nothing to undo
                    continue
                role = r.choice(ROLES)
                reg.update_pins(TEAM, {role: r.choice(pool[role])}, {"event": "chaos", "i": i})
        return run

    home = workdir / "pins-0"
    new_registry(home)
    span = time_child(mover(-1))
    for t in range(trials):
        if t and t % per_registry == 0:
            shutil.rmtree(home, ignore_errors=True)
            home = workdir / f"pins-{t}"
            new_registry(home)
        mid += kill_after(fork_run(mover(t)), rng.uniform(0.02, 0.95) * span)

        def check() -> list[str]:
            reg = Registry(home)
            problems = pin_consistency(reg) + reg.verify()["problems"]
            if problems:
                return problems
            m = reg.manifest(TEAM)
            current = reg.pins(TEAM)
            targets = [r for r in range(1, m["revision"]) if pins_at(reg, TEAM, r) != current]
            if targets:  # `team rollback chaos N` works after any kill point
                rev = rng.choice(targets)
                rollback_team(reg, TEAM, rev)
                if reg.pins(TEAM) != pins_at(reg, TEAM, rev):
                    return [f"rollback to {rev} did not restore its pins"]
                return pin_consistency(reg) + reg.verify()["problems"]
            return []
        tally.trial(check)

    def leftovers() -> list[str]:  # temp files of killed writers: removed by gc
        reg = Registry(home)
        reg.gc(dry_run=False)
        left = [str(p.relative_to(home)) for p in home.rglob(".*.tmp")]
        return [f"temp files left after gc: {left[:3]}"] if left else []
    tally.trial(leftovers)
    return tally.done(f"{mid}/{trials} kills mid-run; loop {span:.2f} s")


# -- SIGKILL during gc ---------------------------------------------------------------------------------------
def kill_gc(workdir: Path, trials: int, seed: int = 0, per_trial: int = 8) -> Row:
    from teamtr_adapters.registry import Registry

    tally, rng, mid = _Tally("SIGKILL during gc --yes"), random.Random(seed), 0
    home = workdir / "gc"
    new_registry(home)
    src = workdir / "src-gc"

    def litter(t: int) -> None:
        reg = Registry(home)
        for i in range(per_trial):
            reg.add_version("loose", fake_adapter(src / f"{t}-{i}", [seed, 7, t + 1, i]), made_by="test", base=BASE)
        shutil.rmtree(src, ignore_errors=True)

    litter(-1)
    span = time_child(lambda: Registry(home).gc(dry_run=False))
    for t in range(trials):
        litter(t)
        mid += kill_after(fork_run(lambda: Registry(home).gc(dry_run=False)), rng.uniform(0.0, 1.0) * span)

        def check() -> list[str]:
            reg = Registry(home)
            problems = reg.verify()["problems"] + pin_consistency(reg)
            reg.gc(dry_run=False)
            left = sorted(p.name for p in (home / "tmp").iterdir()) if (home / "tmp").is_dir() else []
            if left:
                problems.append(f"tmp/ not empty after a full gc: {left[:3]}")
            return problems + reg.verify()["problems"]
        tally.trial(check)
    return tally.done(f"{mid}/{trials} kills mid-run; gc {span:.2f} s")


# -- writers, readers and gc side by side (separate processes) ------------------------------------------------
WRITER = r"""
import json, random, shutil, sys, tempfile
from pathlib import Path
from contextlib import nullcontext
from benchmarks.chaos.registry import fake_adapter, BASE, TEAM, ROLES
from teamtr_adapters.errors import NotFoundError
from teamtr_adapters.registry import Registry
home, wid, writers, ops, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
reg, rng = Registry(home), random.Random(seed * 1000 + wid)
hold = reg.hold if hasattr(reg, "hold") else nullcontext
src = Path(tempfile.mkdtemp(prefix="chaos-writer-"))
print("ready", flush=True)
for i in range(ops):
    d = fake_adapter(src / str(i), [seed, 100 + wid, i])
    with hold():
        info = reg.add_version(f"w{wid}", d, made_by="test", base=BASE, metrics={"i": i})
        reg.set_alias(f"w{wid}", "head", info.name)
        if i % 4 == 0:
            reg.update_pins(TEAM, {ROLES[wid % 2]: info.id}, {"event": "chaos", "writer": wid, "i": i})
    print("add", info.id, info.name, flush=True)
    j = rng.randrange(writers)
    with hold():  # a reader: resolve another writer's alias and load what it points at
        try:
            got = reg.resolve(f"w{j}:head")
        except NotFoundError:
            got = None
        if got is not None:
            reg.version_path(got.id)
shutil.rmtree(src, ignore_errors=True)
print("done", flush=True)
"""

GC_LOOP = r"""
import sys, time
from pathlib import Path
from teamtr_adapters.registry import Registry
home, stop = sys.argv[1], Path(sys.argv[2])
reg, runs, removed = Registry(home), 0, 0
print("ready", flush=True)
while not stop.exists():
    removed += len(reg.gc(dry_run=False)["remove"])
    runs += 1
    time.sleep(0.05)  # a gc every 50 ms: far more often than anyone runs it, with room for the writers
print("gc", runs, removed, flush=True)
"""


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}


def gc_beside_writers(workdir: Path, writers: int, ops: int, rounds: int = 1, seed: int = 0) -> Row:
    """`writers` processes x `ops` (add a version, move an alias to it, every 4th op pin it; read another
    writer's alias and load it) while one process runs `gc --yes` in a loop. A trial is one writer op: it fails
    when the writer crashed before finishing it. After each round: every writer's last version is stored and its
    alias points at it, and `verify` is clean."""
    from teamtr_adapters.registry import Registry

    tally = _Tally(f"gc --yes beside {writers} writers x {ops} ops")
    gc_runs = 0
    for rnd in range(rounds):
        home = workdir / f"side-{rnd}"
        new_registry(home, seed=seed + rnd)
        stop = workdir / f"stop-{rnd}"
        gc = subprocess.Popen([sys.executable, "-c", GC_LOOP, str(home), str(stop)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=_env(), cwd=REPO)
        assert gc.stdout.readline().strip() == "ready", gc.communicate()[1]
        procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(home), str(w), str(writers), str(ops),
                                   str(seed + rnd)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  env=_env(), cwd=REPO) for w in range(writers)]
        outs = [p.communicate(timeout=1800) for p in procs]
        stop.touch()
        gc_out, gc_err = gc.communicate(timeout=600)
        if gc.returncode != 0 or "Traceback" in gc_err:
            tally.row.failures += 1
            tally.row.tracebacks += "Traceback" in gc_err
            tally.notes.append("gc: " + (gc_err.strip().splitlines() or ["?"])[-1])
        else:
            gc_runs += int(gc_out.split()[1])
        reg = Registry(home)
        for w, (p, (out, err)) in enumerate(zip(procs, outs)):
            adds = [line.split() for line in out.splitlines() if line.startswith("add ")]
            tally.row.trials += ops
            lost = ops - len(adds)
            if p.returncode != 0 or lost:
                tally.row.failures += max(lost, 1)
                tally.row.tracebacks += "Traceback" in err
                tally.notes.append(f"writer {w}: " + (err.strip().splitlines() or ["exit %d" % p.returncode])[-1])
                continue

            def last_kept(adds=adds, w=w) -> list[str]:
                head = reg.resolve(f"w{w}:head")
                _, vid, name = adds[-1]
                if (head.id, head.name) != (vid, name):
                    return [f"writer {w}: head is {head.name}, wrote {name} last"]
                reg.version_path(vid)
                return []
            tally.trial(last_kept)
        tally.trial(lambda: reg.verify()["problems"] + pin_consistency(reg))
        shutil.rmtree(home, ignore_errors=True)
    return tally.done(f"{rounds} round(s), {gc_runs} gc runs beside them")


# -- damage of every kind --------------------------------------------------------------------------------
def _flip_meta_parsable(reg: Any) -> None:
    p = reg.resolve(f"{TEAM}.solver:v1").path / "teamtr.json"
    meta = json.loads(p.read_text())
    meta["metrics"] = {"reward": 0.99}
    p.write_text(json.dumps(meta, sort_keys=True, indent=2) + "\n")


def _rewrite_meta(key: str, value: Any) -> Callable[[Any], None]:
    def mutate(reg: Any) -> None:
        p = reg.resolve(f"{TEAM}.solver:v1").path / "teamtr.json"
        meta = json.loads(p.read_text())
        meta[key] = value
        p.write_text(json.dumps(meta, sort_keys=True, indent=2) + "\n")
    return mutate


def _pickle_in_version(reg: Any) -> None:
    (reg.resolve(f"{TEAM}.solver:v1").path / "adapter_model.bin").write_bytes(b"\x80\x04\x95pickle")


def _truncate(rel: str, keep: float = 0.5) -> Callable[[Any], None]:
    def mutate(reg: Any) -> None:
        p = reg.home / rel
        data = p.read_bytes()
        p.write_bytes(data[: int(len(data) * keep)])
    return mutate


def _edit_spec(reg: Any) -> None:
    p = reg.home / "teams" / TEAM / "spec.toml"
    p.write_text(p.read_text().replace('system_prompt = "Check."', 'system_prompt = "Check twice."'))


def _binary_history(reg: Any) -> None:
    p = reg.home / "history.jsonl"
    lines = p.read_bytes().splitlines(keepends=True)
    p.write_bytes(b"".join(lines[:1] + [b"\x00\xff\xfe garbage \x9c\n"] + lines[1:]))


def _dangling_alias(reg: Any) -> None:
    p = reg.home / "lineages" / f"{TEAM}.solver.json"
    doc = json.loads(p.read_text())
    doc["aliases"]["best"] = "v99"
    p.write_text(json.dumps(doc))


def _removed_version(reg: Any) -> None:
    shutil.rmtree(reg.resolve(f"{TEAM}.critic:v3").path)


def _unknown_parent(reg: Any) -> None:
    src = fake_adapter(Path(tempfile.mkdtemp(prefix="chaos-parent-")), [4, 5, 6])
    reg.add_version("orphan", src, made_by="train", base=BASE, parent="ab" * 32)
    shutil.rmtree(src)


def _lost_pin_event(reg: Any) -> None:
    reg.update_pins(TEAM, {"solver": reg.resolve(f"{TEAM}.solver:v2").id}, {"event": "chaos"})
    p = reg.home / "history.jsonl"
    lines = p.read_bytes().splitlines(keepends=True)
    p.write_bytes(b"".join(lines[:-1]))


def _damaged_journal(reg: Any) -> None:
    (reg.home / "teams" / TEAM / "pending.json").write_text('{"manifest": {"team": "chaos"}')


def _stray_in_versions(reg: Any) -> None:
    (reg.home / "versions" / "notes.txt").write_text("hello")


def _edited_files_hash(reg: Any) -> None:
    p = reg.resolve(f"{TEAM}.solver:v1").path / "teamtr.json"
    meta = json.loads(p.read_text())
    meta["files"]["adapter_model.safetensors"] = "0" * 64
    p.write_text(json.dumps(meta, sort_keys=True, indent=2) + "\n")


# (name, mutation, text verify must report, commands that must exit 4). Every command is also run on every
# case: exit 0 or 4 only, one `error:` line when non-zero, never a traceback, the registry unchanged by a refusal.
CASES: list[tuple[str, Callable[[Any], None], str, tuple[str, ...]]] = [
    ("teamtr.json edited, still valid JSON", _flip_meta_parsable, "teamtr.json does not match", ("load",)),
    ("teamtr.json base identity rewritten", _rewrite_meta("base", {"name": "other", "hash": "0" * 16}),
     "teamtr.json does not match", ("load",)),
    ("teamtr.json lineage rewritten", _rewrite_meta("lineage", "elsewhere"), "teamtr.json does not match",
     ("load",)),
    ("teamtr.json files hashes edited", _edited_files_hash, "records other file hashes", ("load",)),
    ("pickle adapter_model.bin in a version", _pickle_in_version, "unexpected file adapter_model.bin", ("load",)),
    ("lineage JSON truncated", _truncate(f"lineages/{TEAM}.solver.json"), "lineage chaos.solver",
     ("team show", "adapter list", "gc", "load")),
    ("manifest truncated", _truncate(f"teams/{TEAM}/manifest.json"), "team chaos",
     ("team show", "team list", "gc", "history")),
    ("spec.toml deleted", lambda reg: (reg.home / "teams" / TEAM / "spec.toml").unlink(), "spec.toml missing",
     ("team show", "gc")),
    ("spec.toml edited", _edit_spec, "spec_hash", ("team show", "gc")),
    ("binary bytes in history.jsonl", _binary_history, "history.jsonl line 2", ("gc", "history")),
    ("alias to a missing version", _dangling_alias, "alias best points to v99", ("alias",)),
    ("version dir removed", _removed_version, "points to missing version", ()),
    ("parent chain broken", _unknown_parent, "is neither stored nor in any lineage", ()),
    ("pin event missing from history", _lost_pin_event, "pin events", ()),
    ("pin journal damaged", _damaged_journal, "pending.json is damaged", ("team show", "gc", "history")),
    ("stray file in versions/", _stray_in_versions, "versions/notes.txt", ()),
]
COMMANDS = {"verify": ["registry", "verify"], "team show": ["team", "show", TEAM], "team list": ["team", "list"],
            "adapter list": ["adapter", "list"], "gc": ["registry", "gc", "--yes"],
            "history": ["history", "--team", TEAM], "load": ["adapter", "export", f"{TEAM}.solver:v1", "@OUT"],
            "alias": ["adapter", "show", f"{TEAM}.solver:best"]}


def subprocess_cli(home: Path, args: list[str]) -> tuple[int, str, str]:
    p = subprocess.run([sys.executable, "-m", "teamtr_adapters", *args], capture_output=True, text=True,
                       env={**_env(), "TEAMTR_HOME": str(home), "HF_HUB_OFFLINE": "1"}, cwd=REPO, timeout=300)
    return p.returncode, p.stdout, p.stderr


def corruption_cases(workdir: Path, cli: Callable[[Path, list[str]], tuple[int, str, str]] = subprocess_cli,
                     cases: list | None = None) -> list[Row]:
    """One row per kind of damage: `verify` names it and exits 4; the commands that read the damaged file exit 4
    with one `error:` line; no command prints a traceback or changes the registry when it refuses."""
    from teamtr_adapters.registry import Registry

    rows = []
    pristine = workdir / "pristine"
    reg0 = new_registry(pristine)
    for role in ROLES:
        reg0.set_alias(f"{TEAM}.{role}", "best", "v2")
    for n, (name, mutate, expect, must_fail) in enumerate(cases or CASES):
        t0 = time.perf_counter()
        row = Row(AREA, f"damage: {name}", 0, 0, 0)
        notes = []
        home = workdir / f"case-{n}"
        shutil.copytree(pristine, home)
        mutate(Registry(home))
        report = Registry(home).verify()
        row.trials += 1
        if report["ok"] or not any(expect in p for p in report["problems"]):
            row.failures += 1
            notes.append(f"verify: {report['problems'][:2]}")
        for cmd, args in COMMANDS.items():
            args = [str(workdir / f"out-{n}-{cmd.replace(' ', '_')}") if a == "@OUT" else a for a in args]
            before = snapshot(home)
            code, out, err = cli(home, args)
            row.trials += 1
            bad = []
            if "Traceback" in err or "Traceback" in out:
                row.tracebacks += 1
                bad.append("traceback")
            want = 4 if cmd == "verify" or cmd in must_fail else None
            if code not in (0, 4) or (want is not None and code != want):
                bad.append(f"exit {code}")
            errs = [line for line in err.splitlines() if line.strip()]
            if code and (len(errs) != 1 or not errs[0].startswith("error:")):
                bad.append(f"stderr {errs[:2]}")
            if code and snapshot(home) != before:
                row.changed_after_refusal += 1
                bad.append("registry changed")
            if bad:
                row.failures += 1
                notes.append(f"{cmd}: {', '.join(bad)} {errs[-1:] if errs else ''}")
        row.seconds = time.perf_counter() - t0
        row.note = "; ".join(notes[:3])
        rows.append(row)
        shutil.rmtree(home, ignore_errors=True)
    return rows


def campaign(full: bool, workdir: Path) -> list[Row]:
    """Full: 520 kills during version writes, 520 during pin moves (and rollbacks), 60 during gc, 8 writers x 100
    ops beside a gc loop (2 rounds), every damage case through the CLI in subprocesses. Small: CI-like sizes."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    n = (520, 520, 60, 8, 100, 2) if full else (15, 30, 8, 4, 12, 1)
    rows = [kill_version_writes(workdir, n[0], ops=8), kill_pin_moves(workdir, n[1], ops=15), kill_gc(workdir, n[2]),
            gc_beside_writers(workdir, n[3], n[4], rounds=n[5])]
    rows += corruption_cases(workdir)
    return rows
