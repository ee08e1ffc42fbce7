"""Issue 20, items 1 and 11: a file planted in the Tune storage must not run code on --resume, and
a refused trial checkpoint is named where it lies in the storage.

One small study is interrupted after its first epoch (Ctrl-C, as a user would); each test resumes
its own copy of it, through the real driver, Ray and MLflow. The payloads write a marker file when
unpickled: the marker must not exist afterwards.
"""

from __future__ import annotations

import os
import pickle
import shutil
import signal
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient
from ray import tune

from study import storage_guard, tuner
from study.driver import run_study
from study.reconcile import saved_trial_ids
from study.storage_guard import MANIFEST, UntrustedStorage, verify_experiment
from tests.conftest import STORAGE_KEY_ENV
from tests.study.conftest import launch, tiny_study, tiny_trial
from trainables.record.store import TrackingContext

pytestmark = pytest.mark.slow

# Epochs take a fraction of a second here: enough of them that Ctrl-C after the first stops the
# trial before it finishes (a finished trial would be taken from MLflow, not restored).
EPOCHS = 10


class _Payload:
    """Unpickling it runs a shell command, as a planted pickle would."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


class _InterruptOnce(tune.Callback):
    """Ctrl-C once the first epoch's checkpoint is Tune's (so the resumed trial restores it).
    Tune keeps callbacks in tuner.pkl, so the resumed study gets this one back: the flag lives on
    the class, so it fires once per test session."""

    fired = False

    def on_checkpoint(self, iteration, trials, trial, checkpoint, **info):
        if not _InterruptOnce.fired:
            _InterruptOnce.fired = True
            os.kill(os.getpid(), signal.SIGINT)  # Tune saves its state and returns


def _cfg(tmp: Path, data_config, **kw):
    return tiny_study(
        tmp, data_config, arms=("no-seg",), trials_per_arm=1, max_concurrent=1,
        trial=tiny_trial(epochs=EPOCHS), **kw,
    )  # fmt: skip


@pytest.fixture(scope="module")
def interrupted(ray_local, tiny_data, data_config, tmp_path_factory) -> Path:
    """A study stopped by Ctrl-C after its first epoch (a checkpoint, a trial left to finish)."""
    tmp = tmp_path_factory.mktemp("interrupted")
    assert run_study(_cfg(tmp, data_config), callbacks=[_InterruptOnce()]).interrupted
    return tmp


def _copy(interrupted: Path, tmp_path: Path, data_config):
    """A copy of the interrupted study (storage and MLflow store) and its --resume config."""
    root = tmp_path / "study"
    shutil.copytree(interrupted, root)
    cfg = _cfg(root, data_config, resume=True)
    return cfg, f"{tuner.experiment_root(cfg)}/search"


def test_an_untouched_study_resumes_and_stays_signed(interrupted, data_config, tmp_path):
    cfg, search = _copy(interrupted, tmp_path, data_config)
    verify_experiment(search)  # what the interrupted driver left is signed
    summary = run_study(cfg)
    assert not summary.interrupted
    assert [r.status for r in summary.records] == ["ok"]
    # The resumed run signed what it wrote, so the study could be resumed again.
    verify_experiment(search)
    assert storage_guard.main(["verify", tuner.experiment_root(cfg)]) == 0


def test_a_planted_tuner_pkl_does_not_run(interrupted, data_config, tmp_path):
    cfg, search = _copy(interrupted, tmp_path, data_config)
    marker = tmp_path / "pwned-tuner"
    with open(f"{search}/tuner.pkl", "wb") as f:
        pickle.dump(_Payload(marker), f)
    # The driver's first reader of the storage is reconcile (before Tuner.restore).
    with pytest.raises(UntrustedStorage) as err:
        run_study(cfg)
    assert str(err.value).startswith(f"{search}/tuner.pkl: changed since this driver wrote it")
    assert "storage_guard trust" in str(err.value)
    assert not marker.exists()
    # The parent run is closed, not left RUNNING.
    client = MlflowClient(cfg.tracking_uri)
    exp = client.get_experiment_by_name(cfg.experiment).experiment_id
    (parent,) = client.search_runs([exp], "tags.role = 'study'")
    assert parent.info.status == "FAILED"


def test_a_planted_searcher_state_does_not_run(interrupted, tiny_data, data_config, tmp_path):
    cfg, search = _copy(interrupted, tmp_path, data_config)
    marker = tmp_path / "pwned-searcher"
    planted = f"{search}/searcher-state-zzzz.pkl"  # sorts last: the one Ray would restore
    with open(planted, "wb") as f:
        pickle.dump(_Payload(marker), f)
    with pytest.raises(UntrustedStorage, match=f"^{planted}: not written by it"):
        saved_trial_ids(search)  # reconcile's ExperimentAnalysis
    # Tuner.restore, reached directly (the hook in study.tuner._fit).
    ctx = TrackingContext(cfg.tracking_uri, "0", "0" * 32)
    with pytest.raises(UntrustedStorage, match=f"^{planted}: not written by it"):
        tuner.search(launch(cfg, tiny_data, ctx), ["no-seg"], "search")
    assert not marker.exists()


def test_a_refused_trial_checkpoint_is_named_in_the_storage(interrupted, data_config, tmp_path):
    """Item 11: the error names the planted state.pt where it lies, not fit's temp copy."""
    cfg, search = _copy(interrupted, tmp_path, data_config)
    (trial_dir,) = [p for p in Path(search).iterdir() if p.is_dir()]
    marker = tmp_path / "pwned-checkpoint"
    # Every checkpoint folder: the one Tune registered may not be the newest on disk.
    planted = sorted(trial_dir.glob("checkpoint_*"))
    for ckpt in planted:
        torch.save({"model": _Payload(marker)}, ckpt / "state.pt")
    summary = run_study(cfg)
    (record,) = summary.records
    assert record.status == "failed" and "CheckpointError" in record.error
    assert any(f"{ckpt}/state.pt: refused to load" in record.error for ckpt in planted)
    assert "restore-" not in record.error
    assert not marker.exists()


# -- without Ray: the manifest and the key ------------------------------------------------------


def _experiment(tmp_path: Path) -> str:
    exp = tmp_path / "storage" / "a-study" / "search"
    (exp / "trial1").mkdir(parents=True)
    (exp / "tuner.pkl").write_bytes(pickle.dumps({"ok": 1}))
    (exp / "experiment_state-1.json").write_text("{}")
    (exp / "trial1" / "params.pkl").write_bytes(pickle.dumps({"lr": 1}))
    (exp / "trial1" / "result.json").write_text("{}")  # not unpickled: not guarded
    return str(exp)


def test_trust_signs_and_verify_names_each_changed_unsigned_or_forged_file(tmp_path, capsys):
    exp = _experiment(tmp_path)
    with pytest.raises(UntrustedStorage, match=f"^{exp}/experiment_state-1.json: not signed"):
        verify_experiment(exp)
    assert storage_guard.main(["trust", str(Path(exp).parent)]) == 0  # the study folder
    assert "signed 3 files" in capsys.readouterr().out
    verify_experiment(exp)
    Path(exp, "trial1", "result.json").write_text('{"changed": 1}')
    verify_experiment(exp)  # not a file Ray unpickles
    Path(exp, "trial2").mkdir()
    Path(exp, "trial2", "error.pkl").write_bytes(b"x")
    with pytest.raises(UntrustedStorage, match=f"^{exp}/trial2/error.pkl: not written by it"):
        verify_experiment(exp)
    Path(exp, "trial2", "error.pkl").unlink()
    Path(exp, "tuner.pkl").write_bytes(pickle.dumps({"ok": 2}))
    with pytest.raises(UntrustedStorage, match=f"^{exp}/tuner.pkl: changed since"):
        verify_experiment(exp)
    assert storage_guard.main(["verify", exp]) == 1
    assert capsys.readouterr().err.startswith(f"error: {exp}/tuner.pkl: changed")
    # Whoever writes the storage cannot re-sign: a manifest edited to the new digest is refused.
    manifest = Path(exp, MANIFEST)
    with open(Path(exp, "trial1", "params.pkl"), "rb") as f:
        digest = storage_guard._digest(f)
    manifest.write_text(manifest.read_text().replace(digest, "0" * 64))
    with pytest.raises(UntrustedStorage, match=f"^{manifest}: its signature does not match"):
        verify_experiment(exp)
    # Nor move a manifest to another experiment of the same user.
    storage_guard.trust_experiment(exp)
    other = tmp_path / "storage" / "b-study" / "search"
    shutil.copytree(exp, other)
    with pytest.raises(UntrustedStorage, match="signed for experiment 'a-study/search'"):
        verify_experiment(str(other))


def test_the_key_is_private_and_outside_the_storage(tmp_path, monkeypatch):
    assert storage_guard.KEY_ENV == STORAGE_KEY_ENV  # what tests/conftest.py sets
    monkeypatch.delenv(storage_guard.KEY_ENV)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    path = tmp_path / "config" / "gaze-study" / "storage.key"
    assert storage_guard.key_file() == path
    exp = _experiment(tmp_path)
    storage_guard.trust_experiment(exp)
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.read_text().strip() not in "".join(
        p.read_text(errors="replace") for p in Path(exp).rglob("*") if p.is_file()
    )
    path.chmod(0o644)  # others could sign planted files with it
    with pytest.raises(UntrustedStorage, match="open to other users"):
        verify_experiment(exp)
    # Another key (another machine or user): the study is refused until the user vouches for it.
    path.chmod(0o600)
    monkeypatch.setenv(storage_guard.KEY_ENV, str(tmp_path / "other.key"))
    storage_guard.load_key(create=True)
    with pytest.raises(UntrustedStorage, match="does not match this driver's key"):
        verify_experiment(exp)


def test_the_signer_never_pickles_its_key(tmp_path):
    signer = storage_guard.StorageSigner()
    signer._files = {"tuner.pkl": ["ab"]}
    clone = pickle.loads(pickle.dumps(signer))  # what Tune stores in tuner.pkl
    assert clone._files is None
    assert pickle.dumps(signer) == pickle.dumps(storage_guard.StorageSigner())
