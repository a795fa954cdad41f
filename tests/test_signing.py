"""Provenance: Ed25519 signatures over a bundle's manifest; ``predict --trust`` refuses what a trusted key did not sign."""

from __future__ import annotations

import json
import shutil
import stat

import pytest

from benchmark import load_model
from benchmark.cli import main
from benchmark.errors import UserError
from benchmark.tools import hostile_corpus as hc


@pytest.fixture(scope="module")
def signed(tmp_path_factory):
    """A genuine logistic-regression bundle, a site key pair, and the bundle signed with it."""
    from benchmark.export.signing import new_keys, sign_bundle

    root = tmp_path_factory.mktemp("signing")
    data = hc.base_dataset(root)
    from benchmark.candidates.base import TrialContext, get_family
    from benchmark.candidates.calibration import Calibrator
    from benchmark.data.dataset import load_dataset
    from benchmark.export.bundle import write_bundle
    from benchmark.export.model import Component, ExportedModel
    from benchmark.export.schema import schema_of

    cohort = load_dataset(data)
    fam = get_family("logreg")().fit(cohort.view(range(cohort.n_patients), labels=True), None, TrialContext())
    p = fam.predict_proba(cohort.view(range(cohort.n_patients), labels=False))
    comp = Component("logreg", "logreg", "register", [fam], Calibrator("platt").fit(p, cohort.y), 1.0, 0.0)
    model = ExportedModel([comp], {"90": [0.3, 0.7], "95": [0.2, 0.8]}, 0.5,
                          schema_of(cohort, reads_register=True, image_size=None), {"candidate": "logreg", "seed": 0})
    key, pub = new_keys(root / "keys", "site-a")
    other_key, other_pub = new_keys(root / "keys-b", "site-b")
    bundle = write_bundle(model, root / "signed", sign=key)
    unsigned = write_bundle(model, root / "unsigned")
    later = shutil.copytree(unsigned, root / "signed-later")
    sign_bundle(later, key)
    return {"root": root, "data": data, "key": key, "pub": pub, "other_pub": other_pub, "bundle": bundle,
            "unsigned": unsigned, "later": later}


def test_keys_new_writes_an_owner_only_private_key_and_a_public_key(signed, tmp_path, capsys):
    assert main(["keys", "new", str(tmp_path / "k")]) == 0
    mode = stat.S_IMODE((tmp_path / "k" / "signing.key").stat().st_mode)
    assert mode == 0o600 and (tmp_path / "k" / "signing.pub").read_text().startswith("-----BEGIN PUBLIC KEY-----")
    assert "fingerprint:" in capsys.readouterr().out
    assert main(["keys", "new", str(tmp_path / "k")]) == 2          # never overwritten


def test_a_bundle_signed_by_a_trusted_key_loads_and_names_the_key(signed):
    from benchmark.export.signing import fingerprint, load_private

    for bundle in (signed["bundle"], signed["later"]):
        model = load_model(bundle, trust=[str(signed["pub"])])
        assert model.meta["signed_by"] == fingerprint(load_private(signed["key"]).public_key())
    assert load_model(signed["bundle"], trust=[str(signed["pub"].parent)]).meta["signed_by"]   # a folder of keys


def test_unsigned_wrongly_signed_and_changed_bundles_are_refused_under_trust(signed, tmp_path):
    with pytest.raises(UserError, match="not signed"):
        load_model(signed["unsigned"], trust=[str(signed["pub"])])
    with pytest.raises(UserError, match="not among the --trust keys"):
        load_model(signed["bundle"], trust=[str(signed["other_pub"])])
    changed = shutil.copytree(signed["bundle"], tmp_path / "changed")
    man = json.loads((changed / "bundle.json").read_text())
    man["meta"]["candidate"] = "something else"                      # the digests still hold
    (changed / "bundle.json").write_text(json.dumps(man, indent=1))
    with pytest.raises(UserError, match="does not match bundle.json"):
        load_model(changed, trust=[str(signed["pub"])])
    load_model(changed)                                               # without --trust: integrity only
    (changed / "bundle.sig").write_text("not a signature")
    with pytest.raises(UserError, match="not a signature file"):
        load_model(changed, trust=[str(signed["pub"])])


def test_predict_says_the_origin_is_unverified_without_trust_and_refuses_with_it(signed, tmp_path, capsys):
    assert main(["predict", str(signed["unsigned"]), "--data", str(signed["data"]), "--out", str(tmp_path / "a")]) == 0
    assert "origin is unverified" in capsys.readouterr().err
    rc = main(["predict", str(signed["unsigned"]), "--data", str(signed["data"]), "--out", str(tmp_path / "b"),
               "--trust", str(signed["pub"])])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "not signed" in err[0] and not (tmp_path / "b").exists()
    assert main(["predict", str(signed["bundle"]), "--data", str(signed["data"]), "--out", str(tmp_path / "c"),
                 "--trust", str(signed["pub"])]) == 0
    assert "signed by trusted key" in capsys.readouterr().out
    assert main(["keys", "verify", str(signed["bundle"]), "--trust", str(signed["pub"])]) == 0
