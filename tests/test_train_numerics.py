"""TeamTR's numbers are measurements: D_tok agrees with an independent float32 computation whatever the rollout
dtype, rollouts sample from the policy the loss calls pi_old (or are corrected by default), out-of-region is
measured on states no update trained on, and a rollout set without learning signal never freezes a stage."""
from __future__ import annotations

import json

import pytest
import torch

from teamtr_adapters.train.stage import DEFAULT_TIS_CAP, TRAIN_DTYPE, TrainConfig, Trainer, run_stages

CPU = dict(device="cpu")


def even_first_token(episode) -> float:
    """A synthetic reward with spread for the random tiny model: the final message starts with an even id."""
    return float(episode.turns[-1].message_ids[0] % 2 == 0)


def _cfg(**kw) -> TrainConfig:
    base = dict(steps=1, group_size=4, prompts=2, max_new_tokens=4, micro_batch=8, lr=2e-2, delta=0.5,
                probe_prompts=4)
    base.update(kw)
    return TrainConfig(**base)


def _signal(ro) -> None:
    for e in ro.episodes:  # half of every group right: every advantage is +-1
        e.reward = float(e.sample % 2 == 0)


def _float32_d_tok(tiny_base, parent_dir, new_dir, rows, temperature) -> float:
    """D_tok(parent || new) on `rows`' states, from a separately loaded float32 model."""
    from teamtr_adapters.runtime.team_model import TeamModel

    tm = TeamModel(tiny_base, device="cpu", dtype="float32")
    tm.ensure_adapter("parent", parent_dir)
    tm.ensure_adapter("new", new_dir)
    kls = tm.token_kl("parent", "new", rows.prompts, rows.completions, temperature=temperature)
    return float(torch.cat(kls).double().mean())


@pytest.mark.parametrize("rollout_dtype", ["bfloat16", "auto"])
def test_d_tok_matches_an_independent_float32_measurement(tiny_team, tiny_base, tmp_path, rollout_dtype):
    from teamtr_adapters.train.policy import agent_rows

    # one small Adam step (lr 3e-4): a bf16 trainer read D_tok 1.33e-6 here where an independent float32 model
    # reads 8.4e-7 (+58%); the trainer's float32 pass must agree with the independent float32 model
    t = Trainer(tiny_team, "tiny-duo", _cfg(lr=3e-4), dtype=rollout_dtype, **CPU)
    assert t.tm.dtype == TRAIN_DTYPE == "float32"
    ro = t.rollout(t.task.sample(2, seed=0, split="train"), seed=1)
    _signal(ro)
    rec, work = t.update("solver", ro, stage=0, stage_start=ro, fresh=ro)
    assert rec.accepted_steps == 1 and work.changed()
    new_dir = work.save(tmp_path / "new")
    rows = agent_rows(ro.episodes, "solver", t.advantages(ro))
    ref = _float32_d_tok(tiny_base, t.reg.version_path(rec.parent), new_dir, rows, t.loss_cfg.temperature)
    assert ref > 1e-7
    assert rec.d_tok_mean == pytest.approx(ref, rel=0.10)
    gap = rec.logprob_gap
    assert gap["tokens"] == rows.n_tokens > 0
    if rollout_dtype == "bfloat16":  # a second (bf16) model plays the rollouts: corrected by default, gap reported
        assert t.engine is not t.tm and t.engine.dtype == "bfloat16"
        assert t.tis_cap == DEFAULT_TIS_CAP and t.loss_cfg.tis_cap == DEFAULT_TIS_CAP
        assert gap["max_abs"] > 0
    else:  # rollouts come from the trainer's own float32 weights: the behaviour log-probs are pi_old's
        assert t.engine is t.tm and t.tis_cap is None
        assert gap["max_abs"] < 1e-4, gap
    work.close()
    t.close()


def test_tis_cap_zero_turns_the_default_correction_off(tiny_team):
    with Trainer(tiny_team, "tiny-duo", _cfg(tis_cap=0.0), dtype="bfloat16", **CPU) as t:
        assert t.engine is not t.tm and t.tis_cap is None


def test_out_of_region_is_measured_on_held_out_states_for_every_run(tiny_team):
    # no hard check and a large step: the accepted versions leave the region, and the probe (states of the
    # pre-update team on prompts drawn for the probe alone) says so
    wild = run_stages(Trainer(tiny_team, "tiny-duo", _cfg(lr=0.5, delta=1e-3, hard_check=False),
                              reward_fn=even_first_token, **CPU), 1)
    s = wild.summary
    assert s["probed_updates"] == 2 and s["out_of_region_updates"] > 0 and s["out_of_region_rate"] > 0
    for r in wild.records:
        assert r.d_tok_heldout is not None and r.out_of_region == (r.d_tok_heldout > 1e-3)
        assert r.diag_tokens > 0  # the probe's tokens are diagnostic, not budget
    assert s["out_of_region_events"] > 0  # measured, not rolled back
    # the same run with the hard check: its excursions are caught and rolled back, and reported as such
    safe = run_stages(Trainer(tiny_team, "tiny-duo", _cfg(lr=0.5, delta=1e-3, max_backtracks=1),
                              reward_fn=even_first_token, **CPU), 1)
    assert safe.summary["out_of_region_events"] > 0 and safe.summary["rejected_steps"] + \
        safe.summary["backtracks"] > 0
    for r in safe.records:
        assert r.d_tok_mean <= 1e-3


class LateSignal:
    """Reward 0 for the first `quiet` episodes (no signal), then `even_first_token`."""

    def __init__(self, quiet: int) -> None:
        self.calls, self.quiet = 0, quiet

    def __call__(self, episode) -> float:
        self.calls += 1
        return 0.0 if self.calls <= self.quiet else even_first_token(episode)


def test_a_no_signal_update_is_reported_and_the_next_agent_gets_fresh_rollouts(tiny_team):
    t = Trainer(tiny_team, "tiny-duo", _cfg(redraws=0, probe_prompts=0), reward_fn=LateSignal(8), **CPU)
    res = run_stages(t, 1)
    first, second = res.records
    assert first.no_signal and "equal rewards" in first.no_signal and "-G" in first.no_signal
    assert first.steps == 0 and first.version is None
    assert second.tokens > 0  # a fresh rollout set of the (unchanged) team, not a 0-token copy
    assert second.no_signal is None and second.steps == 1
    assert res.summary["no_signal"] == 1


def test_a_no_signal_rollout_set_is_redrawn_within_the_budget(tiny_team):
    t = Trainer(tiny_team, "tiny-duo", _cfg(redraws=2, probe_prompts=0), reward_fn=LateSignal(8), **CPU)
    res = run_stages(t, 1)
    first = res.records[0]
    assert first.redraws == 1 and first.no_signal is None and first.steps == 1
    assert first.tokens > 0 and res.summary["redraws"] == 1 and res.summary["no_signal"] == 0


def test_cli_says_why_an_update_had_no_signal(cli, tiny_team):
    # the random tiny model never answers arithmetic right: reward 0 everywhere, after every redraw
    code, out, err = cli("train", "critic", "--team", "tiny-duo", "--updates", "1", "-G", "2", "-P", "2",
                         "--max-new-tokens", "3", "--redraws", "1", "--json")
    assert code == 0, err
    rec = json.loads(out)["records"][0]
    assert rec["redraws"] == 1 and "equal rewards" in rec["no_signal"] and rec["version"] is None
    code, out, err = cli("train", "critic", "--team", "tiny-duo", "--updates", "1", "-G", "2", "-P", "2",
                         "--max-new-tokens", "3", "--redraws", "0")
    assert code == 0, err
    lines = [line for line in out.splitlines() if "no learning signal" in line]
    assert len(lines) == 1 and "try more prompts (-P)" in lines[0]


def test_eval_change_is_paired_with_an_interval(tiny_team):
    t = Trainer(tiny_team, "tiny-duo", _cfg(eval_n=3, eval_k=2, probe_prompts=0), reward_fn=even_first_token, **CPU)
    res = run_stages(t, 1)
    before, after, ch = (res.summary[k] for k in ("eval_before", "eval_after", "eval_change"))
    assert len(before["scores"]) == len(after["scores"]) == 3 and before["k"] == 2
    assert ch["n"] == 3 and ch["ci95"][0] <= ch["change"] <= ch["ci95"][1]
    assert ch["change"] == pytest.approx(after["accuracy"] - before["accuracy"])
