"""Warm starts: a fusion member starts from the image member trained on the same patients."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from benchmark.run.runner import RunConfig, run
from runner_helpers import write_spaces

SOURCE = """
name: {name}
family: fake_families:WarmSourceFamily
modality: image
space:
  C: {{type: float, low: 0.01, high: 10, log: true}}
"""
FUSION = """
name: warm
family: fake_families:WarmFusionFamily
modality: fusion
consumes: [best_image]
space:
  C: {type: float, low: 0.01, high: 10, log: true}
"""


def test_each_fusion_fit_starts_from_the_image_model_of_its_own_training_patients(tiny_dataset, tmp_path, monkeypatch):
    ds = tiny_dataset(n_pos=10, n_neg=14)
    monkeypatch.setenv("AFF_WARM_LOG", str(tmp_path / "warm.jsonl"))
    spaces = write_spaces(tmp_path / "spaces", n_trials=2, outer_folds=2,
                          extra={"src_a": SOURCE.format(name="src_a"), "src_b": SOURCE.format(name="src_b"),
                                 "warm": FUSION})
    (spaces / "profiles.yaml").write_text((spaces / "profiles.yaml").read_text() + "  refit_full: true\n")
    out = Path(run(RunConfig(candidates=["src_a", "src_b", "warm"], data=str(ds.yaml), profile="tiny", device="cpu",
                             spaces=[str(spaces)], results_dir=str(tmp_path / "r"), run="w")))
    log = [json.loads(line) for line in (tmp_path / "warm.jsonl").read_text().splitlines()]
    # 2 outer folds x (2 trials x 2 inner folds + the refit on all of outer-train)
    assert len(log) == 2 * (2 * 2 + 1)
    for entry in log:
        assert entry["source_seen"] == entry["own"], entry      # same patients: none that scores the fusion
        assert entry["arch"] == "fake_arch"
    assert sum(e["k"] == 2 and not e["search"] for e in log) == 2   # the refits start from the source's refit
    # the fold's best image candidate is the source; the other's weights are gone
    studies = pd.read_csv(out / "studies.csv")
    folds = pd.read_csv(out / "folds.csv")
    for f in (0, 1):
        train = {int(k[1:]) - 1 for k in folds[(folds.outer_fold == f) & (folds.part == "train")].patient}
        rows = studies[(studies.outer_fold == f) & studies.candidate.isin(["src_a", "src_b"])]
        best = rows.loc[rows.best_value.idxmax(), "candidate"]
        assert {e["source"] for e in log if set(e["own"]) <= train} == {best}
        other = ({"src_a", "src_b"} - {best}).pop()
        assert not list((out / "parts").glob(f"{other}__r0_f{f}.w*.safetensors"))
        assert len(list((out / "parts").glob(f"{best}__r0_f{f}.w*.safetensors"))) == 3   # 2 members + refit

    # export does the same on the whole cohort, from the source the run chose most often
    from benchmark.export.export import build_export

    (tmp_path / "warm.jsonl").unlink()
    ex = build_export(out, "warm", device="cpu")
    log = [json.loads(line) for line in (tmp_path / "warm.jsonl").read_text().splitlines()]
    assert len(log) == 2 * 2 + 1 and all(e["source_seen"] == e["own"] for e in log)
    assert {e["source"] for e in log} == {ex.model.final.sources["best_image"]}
    assert max(len(e["own"]) for e in log) == 24                    # the refit saw every patient


def test_a_profiles_warm_start_source_names_the_image_candidate_every_fold_starts_from(tiny_dataset, tmp_path,
                                                                                      monkeypatch):
    """``warm_start_source: src_a``: every fold starts from src_a, whichever image candidate scores
    best; a fusion unit waits for src_a's unit only; --candidates warm adds src_a; export trains
    src_a for the warm start without keeping it in the bundle."""
    import numpy as np
    import pytest

    from benchmark.data.splits import outer_folds
    from benchmark.errors import UserError
    from benchmark.run.units import build_plan, resolve_candidates
    from benchmark.search.profiles import get_profile

    ds = tiny_dataset(n_pos=10, n_neg=14)
    monkeypatch.setenv("AFF_WARM_LOG", str(tmp_path / "warm.jsonl"))
    spaces = write_spaces(tmp_path / "spaces", n_trials=2, outer_folds=2,
                          extra={"src_a": SOURCE.format(name="src_a"), "src_b": SOURCE.format(name="src_b"),
                                 "warm": FUSION.replace("consumes: [best_image]\n", "")})
    profiles = spaces / "profiles.yaml"
    profiles.write_text(profiles.read_text() + "  refit_full: true\n  warm_start_source: src_a\n")
    profile = get_profile("tiny", [str(spaces)])
    cands, _ = resolve_candidates(RunConfig(candidates=["warm"], spaces=[str(spaces)]), profile)
    assert [c.name for c in cands] == ["src_a", "warm"]
    cands, _ = resolve_candidates(RunConfig(candidates=["src_b", "src_a", "warm"], spaces=[str(spaces)]), profile)
    plan = build_plan(cands, outer_folds(np.array([0, 1] * 12), n_folds=2, repeats=1, seed=0))
    assert {u.needs for u in plan if u.candidate.name == "warm"} == {(("src_a", 0, 0),), (("src_a", 0, 1),)}

    out = Path(run(RunConfig(candidates=["src_a", "src_b", "warm"], data=str(ds.yaml), profile="tiny", device="cpu",
                             spaces=[str(spaces)], results_dir=str(tmp_path / "r"), run="w")))
    log = [json.loads(line) for line in (tmp_path / "warm.jsonl").read_text().splitlines()]
    assert len(log) == 2 * (2 * 2 + 1)
    assert {e["source"] for e in log} == {"src_a"} and all(e["source_seen"] == e["own"] for e in log)
    assert not list((out / "parts").glob("src_b__*.w*.safetensors"))          # never kept: no one starts from it
    assert len(list((out / "parts").glob("src_a__*.w*.safetensors"))) == 2 * 3
    assert json.loads((out / "manifest.json").read_text())["budget"]["warm_start_source"] == "src_a"

    from benchmark.export.export import build_export

    (tmp_path / "warm.jsonl").unlink()
    ex = build_export(out, "warm", device="cpu")
    log = [json.loads(line) for line in (tmp_path / "warm.jsonl").read_text().splitlines()]
    assert len(log) == 2 * 2 + 1 and {e["source"] for e in log} == {"src_a"}
    assert [c.name for c in ex.model.components] == ["warm"]                 # src_a only gave the weights

    profiles.write_text(profiles.read_text().replace("warm_start_source: src_a", "warm_start_source: probe"))
    with pytest.raises(UserError, match="warm_start_source: 'probe' is not an image candidate"):
        resolve_candidates(RunConfig(candidates=["warm"], spaces=[str(spaces)]), get_profile("tiny", [str(spaces)]))
    # a candidate file's own warm_start wins over the profile's, and a bad one names the file
    (spaces / "warm.yaml").write_text(FUSION.replace("consumes: [best_image]\n", "fixed: {warm_start: src_b}\n"))
    cands, _ = resolve_candidates(RunConfig(candidates=["warm"], spaces=[str(spaces)]), profile)
    assert [c.name for c in cands] == ["src_b", "warm"]
    (spaces / "warm.yaml").write_text(FUSION.replace("consumes: [best_image]\n", "fixed: {warm_start: probe}\n"))
    with pytest.raises(UserError, match=r"warm\.yaml: fixed\.warm_start: 'probe' is not an image candidate"):
        resolve_candidates(RunConfig(candidates=["warm"], spaces=[str(spaces)]), profile)


def test_export_warm_starts_a_network_that_does_not_consume_its_source(tiny_dataset, tmp_path, monkeypatch):
    """A fusion network warm-started from best_image without consuming it (the real neural
    fusion families): export trains the run's choice first and starts from it, as the run did,
    and the bundle holds the network alone. (Export used to follow only ``consumes`` and so
    trained such a network from its own init.)"""
    ds = tiny_dataset(n_pos=10, n_neg=14)
    monkeypatch.setenv("AFF_WARM_LOG", str(tmp_path / "warm.jsonl"))
    spaces = write_spaces(tmp_path / "spaces", n_trials=1, outer_folds=2,
                          extra={"src_a": SOURCE.format(name="src_a"), "src_b": SOURCE.format(name="src_b"),
                                 "warm": FUSION.replace("consumes: [best_image]\n", "")})
    out = Path(run(RunConfig(candidates=["src_a", "src_b", "warm"], data=str(ds.yaml), profile="tiny", device="cpu",
                             spaces=[str(spaces)], results_dir=str(tmp_path / "r"), run="w")))
    from benchmark.export.export import build_export, role_choice

    (tmp_path / "warm.jsonl").unlink()
    ex = build_export(out, "warm", device="cpu")
    log = [json.loads(line) for line in (tmp_path / "warm.jsonl").read_text().splitlines()]
    chosen = role_choice(out, "best_image", {"src_a": "image", "src_b": "image", "warm": "fusion"})
    assert len(log) == 2 and {e["source"] for e in log} == {chosen} and all(e["source_seen"] == e["own"] for e in log)
    assert [c.name for c in ex.model.components] == ["warm"]


def test_a_fusion_network_starts_from_the_image_members_weights_and_keeps_its_architecture(tmp_path):
    """Family side: the backbone starts as the image member (its arch replaces the fusion's own),
    and a restored bundle rebuilds that architecture."""
    import numpy as np
    import torch
    from safetensors.torch import save_file
    from test_bundle_codec import round_trip
    from test_fusion import split, toy_cohort
    from test_fusion_nets import TINY, ctx

    from benchmark.candidates.base import get_family

    train, test = split(toy_cohort(n=60, size=16, seed=3)[0], seed=0, frac=0.5)
    image = get_family("timm_cnn")(arch="test_resnet", batch_size=16, epochs=1, patience=None)
    image.fit(train, None, ctx(epochs=1))
    arch, state = image.warm_start_state()
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "m0.safetensors"))
    c = ctx(epochs=1)
    c.extra.update(warm_start={"source": "img", "arch": arch, "members": [str(tmp_path / "m0.safetensors")],
                               "full": None}, inner_index=0)
    fam = get_family("joint_concat")(**{**TINY, "arch": "resnet18"})   # the file says resnet18 ...
    s = fam.settings()
    fam.configure(s)
    fam._setup(c)
    fam.prepare_fit(s, train, c)
    net = fam.network(s, train, c)()
    assert fam.arch_ == "test_resnet"                                    # ... the image member's arch wins
    got = net.backbone.state_dict()
    shared = [k for k in got if k in state]
    assert len(shared) == len(got) and all(torch.equal(got[k], state[k]) for k in shared)
    assert any("warm start: img member 0 (test_resnet)" in n for n in c.notes)
    # trained and restored from a bundle, it is rebuilt as test_resnet, not as the file's resnet18
    fam.fit(train, None, c)
    again = round_trip(fam)
    assert np.array_equal(fam.predict_proba(test), again.predict_proba(test))


def test_a_warm_started_backbone_fine_tunes_at_its_share_of_the_learning_rate(tmp_path):
    """backbone_lr: the optimiser gives a warm-started backbone lr x backbone_lr, the fusion parts lr;
    a backbone from its own init trains at lr."""
    import torch
    from safetensors.torch import save_file
    from test_fusion import split, toy_cohort
    from test_fusion_nets import TINY, ctx

    from benchmark.candidates.base import get_family
    from benchmark.candidates.torch_train import make_optimizer

    train, _ = split(toy_cohort(n=40, size=16, seed=3)[0], seed=0, frac=0.5)
    image = get_family("timm_cnn")(arch="test_resnet", batch_size=16, epochs=1, patience=None)
    image.fit(train, None, ctx(epochs=1))
    _, state = image.warm_start_state()
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "m0.safetensors"))
    nets = {}
    for warm in (True, False):
        c = ctx(epochs=1)
        if warm:
            c.extra.update(warm_start={"source": "img", "arch": "test_resnet",
                                       "members": [str(tmp_path / "m0.safetensors")], "full": None}, inner_index=0)
        fam = get_family("joint_concat")(**{**TINY, "arch": "test_resnet", "backbone_lr": 0.05})
        s = fam.settings()
        fam.configure(s)
        fam._setup(c)
        fam.prepare_fit(s, train, c)
        nets[warm] = fam.network(s, train, c)()
    for warm, net in nets.items():
        opt = make_optimizer(net, 1e-3, 1e-4, torch.device("cpu"))
        lr_of = {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}
        back = {lr_of[id(p)] for p in net.backbone.parameters()}
        rest = {lr_of[id(p)] for n, p in net.named_parameters() if not n.startswith("backbone.")}
        assert back == ({5e-5} if warm else {1e-3}) and rest == {1e-3}
    from benchmark.errors import UserError

    import pytest

    with pytest.raises(UserError, match="backbone_lr is a share of lr"):
        fam = get_family("joint_concat")(**{**TINY, "backbone_lr": 0.0})
        s = fam.settings()
        fam.network(s, train, ctx(epochs=1))


def _warm_net(name: str, train, path, **params):
    from test_fusion_nets import EXTRA, TINY, ctx

    from benchmark.candidates.base import get_family

    c = ctx(epochs=1)
    c.extra.update(warm_start={"source": "img", "arch": "test_resnet", "members": [str(path)], "full": None},
                   inner_index=0)
    fam = get_family(name)(**{**TINY, **EXTRA[name], **params})
    s = fam.settings()
    fam.configure(s)
    fam._setup(c)
    fam.prepare_fit(s, train, c)
    return fam, fam.network(s, train, c)().eval(), c


def test_with_the_logit_skip_a_warm_started_fusion_network_starts_as_its_image_model(tmp_path):
    """logit_skip (the default): the head starts at zero and the image model's classifier gives the
    skip logit, so without register pre-training every network's first logits on image rows are the
    image model's, whatever the register data, and with it the image model's plus the register
    MLP's; without the skip they are neither. Training then moves the head off zero."""
    import torch
    from safetensors.torch import save_file
    from test_fusion import split, toy_cohort
    from test_fusion_nets import NETS, ctx

    from benchmark.candidates.base import get_family

    train, _ = split(toy_cohort(n=40, size=16, seed=3)[0], seed=0, frac=0.5)
    image = get_family("timm_cnn")(arch="test_resnet", batch_size=16, epochs=1, patience=None)
    image.fit(train, None, ctx(epochs=1))
    _, state = image.warm_start_state()
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "m0.safetensors"))
    x = torch.randn(6, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = image.model_.eval()({"image": x})
    for name in NETS:
        fam, net, c = _warm_net(name, train, tmp_path / "m0.safetensors", register_epochs=0)
        tab = torch.as_tensor(fam.samples(train)[0]["tabular"][:6])
        batch = {"image": x, "has_image": torch.ones(6, dtype=torch.bool), "tabular": tab}
        with torch.no_grad():
            got = net(batch)
            shuffled = net({**batch, "tabular": tab.flip(0)})
        assert torch.allclose(got, want, atol=1e-5), name
        assert torch.allclose(shuffled, want, atol=1e-5), name          # register data enter through the head
        assert any("logit skip: starts from the image model's classifier" in n for n in c.notes), name
        # register_epochs: the register MLP trained alone first; the network starts as the sum of the logits
        fam, both, _ = _warm_net(name, train, tmp_path / "m0.safetensors", register_epochs=3)
        with torch.no_grad():
            reg = both.tabular.eval()(tab)
            assert reg.abs().sum() > 0 and torch.allclose(both(batch), want + reg, atol=1e-5), name
        _, plain, _ = _warm_net(name, train, tmp_path / "m0.safetensors", logit_skip=False)
        with torch.no_grad():
            assert plain.skip is None and not torch.allclose(plain(batch), want, atol=1e-3), name
    fam.fit(train, None, ctx(epochs=1))
    assert fam.model_.head[1].weight.abs().sum() > 0


def test_a_fusion_bundle_written_before_the_logit_skip_is_restored_without_one():
    import numpy as np
    from test_bundle_codec import round_trip
    from test_fusion import split, toy_cohort
    from test_fusion_nets import TINY, ctx

    from benchmark.candidates.base import get_family

    train, test = split(toy_cohort(n=40, size=16, seed=3)[0], seed=0, frac=0.5)
    old = get_family("gated")(**TINY, logit_skip=False).fit(train, None, ctx(epochs=1))
    del old.params["logit_skip"]          # as an older version wrote it: no such parameter, no skip weights
    again = round_trip(old)
    assert again.model_.skip is None
    assert np.array_equal(old.predict_proba(test), again.predict_proba(test))
    new = round_trip(get_family("gated")(**TINY).fit(train, None, ctx(epochs=1)))
    assert new.model_.skip is not None


def test_register_pretraining_learns_the_register_signal_and_is_seeded():
    """register_epochs: the register MLP learns alone before the joint training (its own AUC on
    the fit part well above chance; without it the zero-started register head says nothing), the
    same for the same seed."""
    import numpy as np
    import torch
    from sklearn.metrics import roc_auc_score
    from test_fusion import split, toy_cohort
    from test_fusion_nets import TINY, ctx

    from benchmark.candidates.base import get_family
    from benchmark.candidates.preprocess import register_table

    train, _ = split(toy_cohort(n=120, size=16, seed=4)[0], seed=0, frac=0.5)

    def register_logits(epochs: int) -> np.ndarray:
        c = ctx(epochs=1)
        fam = get_family("joint_concat")(**TINY, register_epochs=epochs)
        s = fam.settings()
        fam.configure(s)
        fam._setup(c)
        fam.prepare_fit(s, train, c)
        torch.manual_seed(0)                       # as the training loop seeds before it builds
        net = fam.network(s, train, c)().eval()
        X = torch.as_tensor(fam.pre_.transform(register_table(train, "joint_concat")), dtype=torch.float32)
        with torch.no_grad():
            return net.tabular(X).numpy()

    a, b = register_logits(30), register_logits(30)
    assert np.array_equal(a, b)
    assert roc_auc_score(train.labels(), a) > 0.8
    assert not np.any(register_logits(0))
