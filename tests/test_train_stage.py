"""The TeamTR loop on the tiny model: trainable set, learning (and not learning with the sign flipped),
the hard trust region, rollout schedules of teamtr vs stale, suffix resampling, lineage and history."""
from __future__ import annotations

import math

import pytest
import torch

from teamtr_adapters.errors import TrainingAborted
from teamtr_adapters.train.policy import adapter_param_names, agent_rows
from teamtr_adapters.train.stage import TrainConfig, Trainer, run_stages

TINY = dict(device="cpu", dtype="float32")


def even_first_token(episode) -> float:
    """A synthetic reward with spread for the random tiny model: the final message starts with an even id."""
    return float(episode.turns[-1].message_ids[0] % 2 == 0)


BASE_CFG = dict(steps=2, group_size=4, prompts=2, max_new_tokens=4, micro_batch=8, lr=1e-2, delta=0.05)


def _trainer(reg, **cfg) -> Trainer:
    return Trainer(reg, "tiny-duo", TrainConfig(**{**BASE_CFG, **cfg}), reward_fn=even_first_token, **TINY)


def _weights(tm, version: str) -> dict[str, torch.Tensor]:
    name = tm.adapter_name(version)
    return {n: p.detach().clone() for n, p in tm.peft.named_parameters() if f".{name}." in n}


def test_only_the_trained_agents_lora_weights_train(tiny_team):
    t = _trainer(tiny_team)
    solver, critic = t.pins["solver"], t.pins["critic"]
    critic_before = _weights(t.tm, critic)
    base_before = {n: p.detach().clone() for n, p in t.tm.model.named_parameters() if "lora_" not in n}
    items = t.task.sample(2, seed=0, split="train")
    ro = t.rollout(items, seed=1)
    for e in ro.episodes:  # a reward with spread, so that the gradient is not zero
        e.reward = float(e.sample == 0)
    rec, work = t.update("solver", ro, stage=0, stage_start=ro, fresh=ro)
    trainable = {n for n, p in t.tm.peft.named_parameters() if p.requires_grad}
    assert trainable == adapter_param_names(t.tm.peft, work.name) and len(trainable) == 2 * 2 * 2  # A,B x q,v x 2 layers
    assert all(f".{work.name}." in n for n in trainable)
    assert work.changed()
    t.commit([(rec, work)])
    assert not any(p.requires_grad for p in t.tm.peft.parameters())  # the working copy is gone
    assert all(torch.equal(v, _weights(t.tm, critic)[n]) for n, v in critic_before.items())
    assert all(torch.equal(p, base_before[n]) for n, p in t.tm.model.named_parameters() if n in base_before)
    assert t.pins["solver"] == rec.version != solver and t.pins["critic"] == critic


SOLO_SPEC = """
name = "tiny-solo"
base = "{base}"
[sampling]
temperature = 0.1   # the tiny random model is near-uniform; a low temperature makes it peaky
[lora]
rank = 4
alpha = 8
target_modules = ["q_proj", "v_proj", "o_proj"]
[trust_region]
group_size = 8
prompts_per_update = 2
[[roles]]
name = "solver"
system_prompt = "Say something."
max_new_tokens = 1
"""


def _first_token_probs(t: Trainer, prompt_ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        logits, _, _ = t.tm.completion_logits([prompt_ids], [[0]], t.pins["solver"])
    return (logits[0, 0] / t.loss_cfg.temperature).softmax(-1)


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_reward_for_a_target_token_rises_and_not_with_the_sign_flipped(home, tiny_base, tiny_base_dir, sign):
    """Synthetic task: reward 1 when the solver's first token is a target token it emits 5-90% of the time."""
    from teamtr_adapters.registry import Registry
    from teamtr_adapters.spec import parse_spec

    reg = Registry()
    reg.init_team(parse_spec(SOLO_SPEC.format(base=tiny_base_dir)), tiny_base)
    t = Trainer(reg, "tiny-solo", TrainConfig(steps=4, lr=2e-3, delta=0.3, beta0=0.01, micro_batch=16), **TINY)
    items = [t.task.sample(1, seed=0, split="train")[0]] * 2  # one prompt: one first-token distribution
    prompt = t.rollout(items, seed=0).episodes[0].turns[0].prompt_ids
    probs = _first_token_probs(t, prompt)
    target = int((probs - 0.3).abs().argmin())
    p0 = float(probs[target])
    rewards = []
    for k in range(3):
        ro = t.rollout(items, seed=10 + k)
        hits = [float(e.turns[0].message_ids[0] == target) for e in ro.episodes]
        rewards.append(sum(hits) / len(hits))
        for e, h in zip(ro.episodes, hits):
            e.reward = sign * h
        rec, work = t.update("solver", ro, stage=0, stage_start=ro, fresh=ro)
        assert rec.d_tok_mean <= 0.3
        t.commit([(rec, work)])
    p1 = float(_first_token_probs(t, prompt)[target])
    assert 0.05 < p0 < 0.9
    if sign > 0:
        assert p1 > p0 + 0.15, (p0, p1, rewards)
    else:
        assert p1 < p0 - 0.05, (p0, p1, rewards)


def test_accepted_updates_stay_in_region(tiny_team):
    t = _trainer(tiny_team, steps=4, lr=5e-2, delta=0.02)
    res = run_stages(t, 1)
    assert [r.role for r in res.records] == ["critic", "solver"]  # the default order: last speaker first
    for r in res.records:
        assert r.d_tok_mean <= 0.02 and r.d_tok_fresh == r.d_tok_mean  # teamtr trains on fresh states
        assert r.tokens > 0 and r.reward_after is not None and r.l_fresh is not None and r.beta > 0
    assert any(r.backtracks for r in res.records) or all(r.d_tok_mean > 0 for r in res.records)
    summary = res.summary
    assert summary["updates"] == 2 and summary["out_of_region_rate"] == 0.0
    assert (res.run_dir / "updates.jsonl").read_text().count("\n") == 2


def test_step_forced_out_of_region_is_rolled_back_and_writes_nothing(tiny_team):
    t = _trainer(tiny_team, steps=1, lr=0.5, delta=1e-9, max_backtracks=1)
    manifest = tiny_team.manifest("tiny-duo")
    n_versions = len(tiny_team.list_versions())
    items = t.task.sample(2, seed=0, split="train")
    ro = t.rollout(items, seed=1)
    for e in ro.episodes:
        e.reward = float(e.sample == 0)
    rec, work = t.update("solver", ro, stage=0, stage_start=ro, fresh=ro)
    assert (rec.steps, rec.accepted_steps, rec.rejected_steps, rec.backtracks) == (1, 0, 1, 1)
    assert rec.out_of_region_events == 2 and rec.d_tok_mean == 0.0
    assert all(torch.equal(p.detach(), p0) for p, p0 in zip(work.params, work.initial))  # bitwise
    assert rec.beta > t.cfg.beta0  # raised on every excursion
    t.commit([(rec, work)])
    assert rec.version is None and len(tiny_team.list_versions()) == n_versions
    assert tiny_team.manifest("tiny-duo")["revision"] == manifest["revision"]


def test_non_finite_loss_aborts_and_writes_nothing(tiny_team):
    t = _trainer(tiny_team)
    ro = t.rollout(t.task.sample(2, seed=0, split="train"), seed=1)
    for e in ro.episodes:
        e.reward = float("nan")
    with pytest.raises(TrainingAborted, match="non-finite"):
        t.update("solver", ro, stage=0, stage_start=ro, fresh=ro)
    assert len(tiny_team.list_versions()) == 2 and tiny_team.manifest("tiny-duo")["revision"] == 1
    assert not any(p.requires_grad for p in t.tm.peft.parameters())


def test_no_advantage_signal_takes_no_step_and_writes_nothing(tiny_team):
    t = _trainer(tiny_team)
    ro = t.rollout(t.task.sample(2, seed=0, split="train"), seed=1)
    for e in ro.episodes:
        e.reward = 1.0  # equal rewards in every group: every advantage is 0
    rec, work = t.update("solver", ro, stage=0, stage_start=ro, fresh=ro)
    assert rec.steps == 0 and rec.d_tok_mean == 0.0 and not work.changed()
    t.commit([(rec, work)])
    assert rec.version is None and tiny_team.manifest("tiny-duo")["revision"] == 1


@pytest.mark.parametrize("method,sets", [("teamtr", 4), ("stale", 2), ("resample-every-k", 2), ("joint", 2)])
def test_rollout_sets_per_stage(tiny_team, method, sets):
    t = _trainer(tiny_team, method=method, steps=1, resample_every=2)
    res = run_stages(t, 2)
    charged = [r for r in res.records if r.tokens > 0]
    assert len(res.records) == 4 and len(charged) == sets
    if method == "stale":  # the second update of a stage trains on stage-start data; fresh data is diagnostic
        assert res.records[1].tokens == 0 and res.records[1].diag_tokens > 0 and res.records[1].l_stale is not None
    if method == "joint":  # one manifest move per stage for both agents
        events = [e for e in tiny_team.history("tiny-duo") if e["event"] == "train-joint"]
        assert len(events) == 2 and all(len(e["updates"]) == 2 for e in events if e.get("updates"))


def test_suffix_resampling_keeps_prefixes_and_generates_fewer_tokens(tiny_team):
    t = _trainer(tiny_team, max_new_tokens=6)
    items = t.task.sample(2, seed=0, split="train")
    first = t.rollout(items, seed=1)
    suffix = t.rollout(items, seed=2, prev=first, changed={"critic"})
    for a, b in zip(first.episodes, suffix.episodes):
        assert (a.prompt, a.sample) == (b.prompt, b.sample)
        assert a.turns[0].message_ids == b.turns[0].message_ids  # the solver's turn is kept as it was
        assert a.turns[0].prompt_ids == b.turns[0].prompt_ids
    assert suffix.tokens == sum(len(e.turns[1].message_ids) for e in suffix.episodes)
    full = Trainer(tiny_team, "tiny-duo", TrainConfig(**{**t.cfg.__dict__, "resample": "full"}), **TINY)
    regenerated = full.rollout(items, seed=2, prev=first, changed={"critic"})
    assert regenerated.tokens == sum(len(m.message_ids) for e in regenerated.episodes for m in e.turns)
    assert suffix.tokens < regenerated.tokens


def test_versions_carry_lineage_and_history_shows_each_update(tiny_team, cli):
    v1 = tiny_team.pins("tiny-duo")
    t = _trainer(tiny_team, steps=1, order="speaking")
    res = run_stages(t, 1)
    solver, critic = (tiny_team.version(r.version) for r in res.records)
    assert solver.meta["parent"] == v1["solver"] and critic.meta["parent"] == v1["critic"]
    assert solver.meta["made_by"] == "train" and solver.name == "v2" and critic.name == "v2"
    assert solver.meta["context"] == {"critic": v1["critic"]}
    assert critic.meta["context"] == {"solver": solver.id}  # fresh: rolled out with the updated solver
    assert solver.meta["config"]["method"] == "teamtr" and solver.meta["rollout_seed"] == res.records[0].rollout_seed
    assert solver.meta["run"] == res.run_id and "d_tok_mean" in solver.meta["metrics"]
    assert tiny_team.pins("tiny-duo") == {"solver": solver.id, "critic": critic.id}
    code, out, _ = cli("history", "--team", "tiny-duo", "--json")
    assert code == 0
    import json

    events = [e for e in json.loads(out) if e.get("event") == "train"]
    assert [e["updates"][0]["role"] for e in events] == ["solver", "critic"]
    assert events[0]["pins_after"]["solver"] == solver.id and events[1]["pins_before"]["solver"] == solver.id


def test_stale_versions_record_stage_start_context(tiny_team):
    v1 = tiny_team.pins("tiny-duo")
    res = run_stages(_trainer(tiny_team, method="stale", steps=1, order="speaking"), 1)
    critic = tiny_team.version(res.records[1].version)
    assert critic.meta["context"] == {"solver": v1["solver"]}  # trained on the stage-start team's rollouts


def test_stale_and_joint_write_the_same_versions(tiny_team, tmp_path, tiny_spec, tiny_base):
    """Each agent's loss depends only on its own adapter and the stage-start rollouts, so updating the agents one
    after another on one rollout set (stale) or all at once (joint) is the same computation: the same versions,
    bitwise. Only the diagnostics differ (stale rolls out the intermediate teams to measure them)."""
    from teamtr_adapters.registry import Registry

    other = Registry(tmp_path / "other")
    other.init_team(tiny_spec, tiny_base)
    v1 = tiny_team.pins("tiny-duo")
    assert other.pins("tiny-duo") == v1
    stale = run_stages(_trainer(tiny_team, method="stale", steps=1), 2)
    joint = run_stages(_trainer(other, method="joint", steps=1), 2)
    assert [r.version for r in stale.records] == [r.version for r in joint.records]
    assert tiny_team.pins("tiny-duo") == other.pins("tiny-duo") != v1
    assert sum(r.diag_tokens for r in stale.records) > sum(r.diag_tokens for r in joint.records)


@pytest.mark.parametrize("method,dtype", [("teamtr", "float32"), ("stale-is", "bfloat16")])
def test_a_run_continued_from_its_state_on_a_registry_copy_is_the_uninterrupted_run(tiny_team, tmp_path, method,
                                                                                    dtype):
    """benchmarks/learning.py continues an interrupted run from a stage-end snapshot: a copy of the registry and
    `Trainer.state()`. One Trainer running two stages, and one stage then a new Trainer on a copy of the registry
    restored from the state running the second, write the same versions bitwise (ids are content hashes) with
    the same KL coefficients; stale-is with bf16 rollouts is the benchmark's separate-engine path."""
    import shutil

    from teamtr_adapters.registry import Registry

    shutil.copytree(tiny_team.home, tmp_path / "fresh")
    cfg = dict(method=method, steps=1)

    def trainer(reg):
        return Trainer(reg, "tiny-duo", TrainConfig(**{**BASE_CFG, **cfg}), reward_fn=even_first_token,
                       device="cpu", dtype=dtype)

    with trainer(tiny_team) as one:
        for stage in (0, 1):
            run_stages(one, 1, first_stage=stage)
    with trainer(Registry(tmp_path / "fresh")) as first:
        run_stages(first, 1, first_stage=0)
        state = first.state()
    shutil.copytree(tmp_path / "fresh", tmp_path / "copy")
    with trainer(Registry(tmp_path / "copy")) as second:
        second.restore(state)
        run_stages(second, 1, first_stage=1)
    versions = [r.version for r in one.records]
    assert [r.version for r in second.records] == versions
    assert any(r.version for r in one.records if r.stage == 1)  # the second stage trained something
    assert {r: b.beta for r, b in second.betas.items()} == {r: b.beta for r, b in one.betas.items()}
    assert [r.d_tok_mean for r in second.records] == [r.d_tok_mean for r in one.records]
    assert Registry(tmp_path / "copy").pins("tiny-duo") == tiny_team.pins("tiny-duo")


@pytest.mark.parametrize("order,turns", [(None, [3, 1, 2]), ("speaking", [3, 3, 2])])
def test_update_order_sets_what_suffix_resampling_regenerates(home, tiny_base, tiny_base_dir, order, turns):
    """Three agents with equal budgets, one teamtr stage: in the default (reverse) order the rollout sets
    regenerate 3, 1 and 2 turns, (n+1)/2n = 2/3 of full resampling's 9; in speaking order 3, 3 and 2."""
    from conftest import TINY_SPEC
    from teamtr_adapters.registry import Registry
    from teamtr_adapters.spec import parse_spec

    text = TINY_SPEC.format(base=tiny_base_dir).replace('name = "tiny-duo"', 'name = "tiny-trio"')
    spec = parse_spec(text + '[[roles]]\nname = "refiner"\nsystem_prompt = "Answer."\nmax_new_tokens = 6\n')
    reg = Registry()
    reg.init_team(spec, tiny_base)
    cfg = dict(steps=1, group_size=4, prompts=2, max_new_tokens=4, lr=1e-2, delta=0.05, probe_prompts=0, redraws=0)
    if order:
        cfg["order"] = order
    t = Trainer(reg, "tiny-trio", TrainConfig(**cfg), reward_fn=even_first_token, **TINY)
    assert t.cfg.order == (order or "reverse")
    res = run_stages(t, 1)
    assert [r.role for r in res.records] == (["refiner", "critic", "solver"] if order is None
                                             else ["solver", "critic", "refiner"])
    # the random tiny model never samples EOS in these seeds: every message has the 4-token budget
    assert [r.tokens for r in res.records] == [k * 2 * 4 * 4 for k in turns]


def test_diagnostic_options_skip_their_work(tiny_team):
    """--no-stale-gap skips L_stale's forward on the stage-start rows; --no-reward-after skips the end-of-stage
    diagnostic rollout (no diag tokens for it, reward_after unknown). The defaults compute both."""
    on = run_stages(_trainer(tiny_team, steps=1, probe_prompts=0, redraws=0), 1)
    assert on.records[1].l_stale is not None and on.records[1].stale_gap is not None
    assert on.records[-1].reward_after is not None and on.records[-1].diag_tokens > 0
    off = run_stages(_trainer(tiny_team, steps=1, probe_prompts=0, redraws=0, stale_gap=False, reward_after=False), 1)
    assert off.records[0].l_stale is not None  # the first update trains on the stage-start rollouts: free
    assert off.records[1].l_stale is None and off.records[1].stale_gap is None
    assert off.records[-1].reward_after is None and off.records[-1].diag_tokens == 0


def test_micro_batches_in_length_order_give_row_order_results(tiny_team):
    """Rows run in length-sorted micro-batches; the measurement comes back in row order and does not depend on
    the micro-batch size."""
    from teamtr_adapters.train.policy import WorkingCopy

    t = _trainer(tiny_team, max_new_tokens=6)
    ro = t.rollout(t.task.sample(3, seed=0, split="train"), seed=1)
    rows = agent_rows(ro.episodes, "critic", [float(i % 3) - 1 for i in range(len(ro.episodes))])
    rows.completions = [c[:1 + i % 6] for i, c in enumerate(rows.completions)]  # unequal lengths
    rows.engine_logprobs = [lp[:len(c)] for lp, c in zip(rows.engine_logprobs, rows.completions)]
    parent = t.pins["critic"]
    out = []
    for mb in (8, 3):
        work = WorkingCopy(t.tm, parent, tiny_team.version_path(parent), f"mb-{mb}", t.loss_cfg, micro_batch=mb)
        try:
            out.append(work.run_pass(rows, [], 0.1, backward=False))
        finally:
            work.close()
    expected = t.tm.logprobs(rows.prompts, rows.completions, parent, temperature=t.loss_cfg.temperature)
    for m in out:
        assert [len(r) for r in m.trainer_logprobs] == [len(c) for c in rows.completions]
        for got, want in zip(m.trainer_logprobs, expected):
            torch.testing.assert_close(torch.tensor(got), want, atol=1e-4, rtol=0)
    assert abs(out[0].loss - out[1].loss) < 1e-5
