import json
import pickle

import pytest
import torch
from torch import nn

from nashcli.config import NashConfig
from nashcli.engine import checkpoint as checkpoint_module
from nashcli.engine.checkpoint import (
    load_model_weights,
    load_training_state,
    prune_step_checkpoints,
    resolve_checkpoint_dir,
    save_checkpoint,
)
from nashcli.errors import NashError
from nashcli.runs.layout import RunLayout


class TiedToy(nn.Module):
    def __init__(self):
        super().__init__()
        self.embedding = nn.Embedding(10, 4)
        self.head = nn.Linear(4, 10, bias=False)
        self.head.weight = self.embedding.weight


def save(checkpoints_dir, names, model, step):
    state = {"step": step, "tensor": torch.arange(3), "nested": {"lists": [1, 2.5, "x"]}}
    return save_checkpoint(checkpoints_dir, names, model, state, {"step": step})


def test_tied_weights_are_stored_once_and_retied_on_load(tmp_path):
    model = TiedToy()
    path = save(tmp_path / "checkpoints", ["last"], model, step=1)
    restored = TiedToy()
    load_model_weights(restored, path)
    assert torch.equal(restored.embedding.weight, model.embedding.weight)
    assert restored.head.weight is restored.embedding.weight
    from safetensors import safe_open

    with safe_open(path / "model.safetensors", "pt") as stored:
        assert list(stored.keys()) == ["embedding.weight"]
    assert load_training_state(path)["nested"] == {"lists": [1, 2.5, "x"]}
    assert json.loads((path / "checkpoint.json").read_text())["step"] == 1


def test_extra_names_share_the_files_of_one_write(tmp_path):
    checkpoints = tmp_path / "checkpoints"
    save(checkpoints, ["last", "best", "step_000002"], TiedToy(), step=2)
    last_inode = (checkpoints / "last" / "state.pt").stat().st_ino
    assert (checkpoints / "best" / "state.pt").stat().st_ino == last_inode
    save(checkpoints, ["last"], TiedToy(), step=3)  # best keeps step 2
    assert load_training_state(checkpoints / "best")["step"] == 2
    assert load_training_state(checkpoints / "last")["step"] == 3


def test_crash_while_writing_leaves_the_previous_checkpoint_loadable(tmp_path, monkeypatch):
    checkpoints = tmp_path / "checkpoints"
    model = TiedToy()
    save(checkpoints, ["last"], model, step=1)

    def crash_after_partial_write(obj, path):
        open(path, "wb").write(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint_module.torch, "save", crash_after_partial_write)
    with pytest.raises(OSError):
        save(checkpoints, ["last"], TiedToy(), step=2)
    assert load_training_state(resolve_checkpoint_dir(checkpoints.parent))["step"] == 1
    restored = TiedToy()
    load_model_weights(restored, checkpoints / "last")
    assert torch.equal(restored.embedding.weight, model.embedding.weight)


def test_crash_between_the_two_renames_falls_back_to_the_previous_checkpoint(tmp_path, monkeypatch):
    checkpoints = tmp_path / "checkpoints"
    save(checkpoints, ["last"], TiedToy(), step=1)
    real_replace, calls = checkpoint_module.os.replace, []

    def crash_on_second_rename(source, destination):
        calls.append(destination)
        if len(calls) == 2:
            raise KeyboardInterrupt  # killed after `last` moved aside, before the new one moved in
        real_replace(source, destination)

    monkeypatch.setattr(checkpoint_module.os, "replace", crash_on_second_rename)
    with pytest.raises(KeyboardInterrupt):
        save(checkpoints, ["last"], TiedToy(), step=2)
    monkeypatch.setattr(checkpoint_module.os, "replace", real_replace)
    assert not (checkpoints / "last").exists()
    assert load_training_state(resolve_checkpoint_dir(tmp_path, "last"))["step"] == 1
    save(checkpoints, ["last"], TiedToy(), step=3)  # the next save repairs the folder
    assert load_training_state(checkpoints / "last")["step"] == 3
    assert sorted(path.name for path in checkpoints.iterdir()) == ["last"]


class CreatesAFile:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def test_a_pickled_code_payload_is_refused_without_running_it(tmp_path):
    checkpoints = tmp_path / "checkpoints"
    save(checkpoints, ["last"], TiedToy(), step=1)
    marker = tmp_path / "pwned"
    payload = pickle.dumps({"step": CreatesAFile(marker)})
    pickle.loads(payload).get("step").close()  # the payload is real: unpickling it creates the file
    assert marker.exists()
    marker.unlink()
    torch.save({"step": CreatesAFile(marker)}, checkpoints / "last" / "state.pt")
    with pytest.raises(NashError, match="refusing to load .*state.pt.*could run code"):
        load_training_state(checkpoints / "last")
    assert not marker.exists()


def test_a_pickle_in_place_of_the_weights_is_refused(tmp_path):
    checkpoints = tmp_path / "checkpoints"
    save(checkpoints, ["last"], TiedToy(), step=1)
    (checkpoints / "last" / "model.safetensors").write_bytes(pickle.dumps(CreatesAFile(tmp_path / "pwned")))
    with pytest.raises(NashError, match="not a readable safetensors file"):
        load_model_weights(TiedToy(), checkpoints / "last")
    assert not (tmp_path / "pwned").exists()


def test_keep_k_prunes_the_oldest_step_checkpoints(tmp_path):
    layout = RunLayout(tmp_path / "run")
    for step in (1, 2, 3):
        save(layout.checkpoints_dir, [RunLayout.step_checkpoint_name(step)], TiedToy(), step)
    prune_step_checkpoints(layout, keep=2)
    assert [path.name for path in layout.step_checkpoint_dirs()] == ["step_000002", "step_000003"]


def test_missing_checkpoint_names_what_the_run_has(tmp_path):
    layout = RunLayout(tmp_path / "run")
    layout.write_config(NashConfig(name="run"))
    save(layout.checkpoints_dir, ["last"], TiedToy(), step=1)
    with pytest.raises(NashError, match="has no 'best' checkpoint; it has: last"):
        resolve_checkpoint_dir(layout.root, "best")
    with pytest.raises(NashError, match="is a file"):
        resolve_checkpoint_dir(layout.config_path)
