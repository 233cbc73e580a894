import errno
import json
import os
import pickle
import stat
import struct

import pytest
import torch
from safetensors import SafetensorError
from safetensors.torch import save_file
from torch import nn

from nashcli import tensor_files
from nashcli.checksums import sha256_file
from nashcli.config import NashConfig
from nashcli.engine import checkpoint as checkpoint_module
from nashcli.engine.checkpoint import prune_step_checkpoints, save_checkpoint
from nashcli.engine.checkpoint_reading import checkpoint_config, load_model_weights, load_training_state, read_checkpoint_meta
from nashcli.engine.locate import find_checkpoint
from nashcli.errors import NashError
from nashcli.runs.layout import RunLayout


class TiedToy(nn.Module):
    def __init__(self):
        super().__init__()
        self.embedding = nn.Embedding(10, 4)
        self.head = nn.Linear(4, 10, bias=False)
        self.head.weight = self.embedding.weight


CONFIG = NashConfig(name="toy").model_dump(mode="json")


def toy_state(step: int, **parts) -> dict:
    """A training state with the parts state.pt must have (their contents are the trainer's)."""
    progress = {"step": step, "values": torch.arange(3), "nested": {"lists": [1, 2.5, "x"]}}
    ranks = [{"rng": {}, "data": {}}]
    return {"progress": progress, "world_size": 1, "optimizer": {}, "grad_scaler": {}, "ranks": ranks, **parts}


def save(checkpoints_dir, names, model, step, state=None):
    state = toy_state(step) if state is None else state
    return save_checkpoint(checkpoints_dir, names, model, state, {"step": step, "config": CONFIG})


def step_of(checkpoint_dir) -> int:
    return load_training_state(checkpoint_dir)["progress"]["step"]


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
    assert load_training_state(path)["progress"]["nested"] == {"lists": [1, 2.5, "x"]}
    assert json.loads((path / "checkpoint.json").read_text())["step"] == 1


def test_extra_names_share_the_files_of_one_write(tmp_path):
    checkpoints = tmp_path / "checkpoints"
    save(checkpoints, ["last", "best", "step_000002"], TiedToy(), step=2)
    last_inode = (checkpoints / "last" / "state.pt").stat().st_ino
    assert (checkpoints / "best" / "state.pt").stat().st_ino == last_inode
    save(checkpoints, ["last"], TiedToy(), step=3)  # best keeps step 2
    assert step_of(checkpoints / "best") == 2
    assert step_of(checkpoints / "last") == 3


def test_crash_while_writing_leaves_the_previous_checkpoint_loadable(tmp_path, monkeypatch):
    checkpoints = tmp_path / "checkpoints"
    model = TiedToy()
    save(checkpoints, ["last"], model, step=1)

    def crash_after_partial_write(obj, file):
        file.write(b"half a file")
        raise OSError(errno.ENOSPC, "disk full")

    monkeypatch.setattr(checkpoint_module.torch, "save", crash_after_partial_write)
    with pytest.raises(OSError, match="disk full"):
        save(checkpoints, ["last"], TiedToy(), step=2)
    assert sorted(path.name for path in checkpoints.iterdir()) == ["last"]  # the partial .tmp-last is gone
    assert step_of(find_checkpoint(checkpoints.parent)) == 1
    restored = TiedToy()
    load_model_weights(restored, checkpoints / "last")
    assert torch.equal(restored.embedding.weight, model.embedding.weight)


def test_a_full_disk_while_writing_the_weights_is_the_os_error_it_is(tmp_path, monkeypatch):
    def save_file_on_a_full_disk(tensors, path, metadata):
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(tensor_files, "save_file", save_file_on_a_full_disk)
    with pytest.raises(OSError) as error:
        save(tmp_path / "checkpoints", ["last"], TiedToy(), step=1)
    assert error.value.errno == errno.ENOSPC and error.value.filename.endswith(".tmp-last/model.safetensors")
    assert list((tmp_path / "checkpoints").iterdir()) == []


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
    assert step_of(find_checkpoint(tmp_path, "last")) == 1
    save(checkpoints, ["last"], TiedToy(), step=3)  # the next save repairs the folder
    assert step_of(checkpoints / "last") == 3
    assert sorted(path.name for path in checkpoints.iterdir()) == ["last"]


class CreatesAFile:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def test_a_pickled_code_payload_is_refused_without_running_it(tmp_path, reseal_checkpoint):
    checkpoints = tmp_path / "checkpoints"
    save(checkpoints, ["last"], TiedToy(), step=1)
    marker = tmp_path / "pwned"
    payload = pickle.dumps({"step": CreatesAFile(marker)})
    pickle.loads(payload).get("step").close()  # the payload is real: unpickling it creates the file
    assert marker.exists()
    marker.unlink()
    torch.save({"step": CreatesAFile(marker)}, checkpoints / "last" / "state.pt")
    reseal_checkpoint(checkpoints / "last")  # a stranger's checkpoint carries checksums that match
    with pytest.raises(NashError, match="refusing to load .*state.pt.*could run code"):
        load_training_state(checkpoints / "last")
    assert not marker.exists()


def test_a_pickle_in_place_of_the_weights_is_refused(tmp_path, reseal_checkpoint):
    checkpoints = tmp_path / "checkpoints"
    save(checkpoints, ["last"], TiedToy(), step=1)
    (checkpoints / "last" / "model.safetensors").write_bytes(pickle.dumps(CreatesAFile(tmp_path / "pwned")))
    reseal_checkpoint(checkpoints / "last")
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
        find_checkpoint(layout.root, "best")
    with pytest.raises(NashError, match="is a file"):
        find_checkpoint(layout.config_path)


def file_bytes(folder) -> dict:
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


def test_checkpoint_json_records_the_size_and_sha256_of_each_file_and_of_itself(tmp_path):
    path = save(tmp_path, ["last"], TiedToy(), step=1)
    meta = json.loads((path / "checkpoint.json").read_text())
    assert meta["format"] == 2
    for name in ("model.safetensors", "state.pt"):
        assert meta["files"][name] == {"sha256": sha256_file(path / name), "size_bytes": (path / name).stat().st_size}
    assert len(meta["content_sha256"]) == 64
    assert read_checkpoint_meta(path)["step"] == 1


@pytest.mark.parametrize("name", ["model.safetensors", "state.pt"])
def test_a_flipped_or_truncated_file_is_refused_by_its_record_before_it_is_read(tmp_path, name):
    path = save(tmp_path, ["last"], TiedToy(), step=1)
    load = {"model.safetensors": lambda: load_model_weights(TiedToy(), path), "state.pt": lambda: step_of(path)}
    data = bytearray((path / name).read_bytes())
    data[len(data) // 2] ^= 0x01
    (path / name).write_bytes(data)
    with pytest.raises(NashError, match=rf"{name} is damaged \(its sha256 differs .*\): use another checkpoint"):
        load[name]()
    (path / name).write_bytes(data[:-10])
    with pytest.raises(NashError, match=rf"{name} is damaged \([\d,]+ bytes where checkpoint.json records [\d,]+\)"):
        load[name]()


def test_a_checkpoint_of_format_1_without_checksums_still_loads(tmp_path):
    model = TiedToy()
    path = save(tmp_path, ["last"], model, step=4)
    meta = json.loads((path / "checkpoint.json").read_text())
    for key in ("files", "content_sha256"):
        del meta[key]
    (path / "checkpoint.json").write_text(json.dumps({**meta, "format": 1}))
    restored = TiedToy()
    load_model_weights(restored, path)
    assert torch.equal(restored.embedding.weight, model.embedding.weight)
    assert step_of(path) == 4 and read_checkpoint_meta(path)["config"]["name"] == "toy"


def test_a_checkpoint_from_a_newer_nash_is_refused_in_one_line(tmp_path, reseal_checkpoint):
    path = save(tmp_path, ["last"], TiedToy(), step=1)
    reseal_checkpoint(path, edit=lambda meta: meta.update(format=3))
    with pytest.raises(NashError, match=r"checkpoint format 3, from a newer nash; nash .* reads formats up to 2"):
        load_model_weights(TiedToy(), path)


def test_an_edited_checkpoint_json_is_refused_by_its_own_checksum(tmp_path):
    path = save(tmp_path, ["last"], TiedToy(), step=1)
    meta = json.loads((path / "checkpoint.json").read_text())
    (path / "checkpoint.json").write_text(json.dumps({**meta, "config": {**meta["config"], "name": "other"}}))
    with pytest.raises(NashError, match="checkpoint.json is damaged or was edited"):
        checkpoint_config(path)


@pytest.mark.parametrize(
    "content, message",
    [
        ("[1, 2]", "holds a JSON list, not an object"),
        ('{"format": 2, "step"', "is not valid JSON"),
        ("[" * 100_000 + "]" * 100_000, "is not valid JSON"),  # nested too deep for the parser
        ("\udcff", "is not valid JSON"),  # not UTF-8
        (" " * (2 << 20) + "{}", "is over 1,048,576 bytes"),
    ],
    ids=["list", "truncated", "deep", "binary", "huge"],
)
def test_a_checkpoint_json_that_is_not_a_json_object_is_one_line(tmp_path, content, message):
    path = save(tmp_path, ["last"], TiedToy(), step=1)
    (path / "checkpoint.json").write_bytes(content.encode("utf-8", "surrogateescape"))
    with pytest.raises(NashError, match=message) as error:
        checkpoint_config(path)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda meta: meta.pop("config"), r"is not a nash checkpoint.json \(config: Field required\)"),
        (lambda meta: meta.update(step="3"), r"\(step: Input should be a valid integer\)"),
        (lambda meta: meta.update(config=[1]), r"\(config: Input should be a valid dictionary\)"),
        (lambda meta: meta["files"].pop("state.pt"), r"format 2 records files model.safetensors and state.pt"),
        (lambda meta: meta["files"]["state.pt"].update(sha256="x"), r"files.state.pt.sha256: String should match"),
        (lambda meta: meta["config"]["model"].update(n_layers=-1), r"invalid config \(model.n_layers=-1: "),
        (lambda meta: meta["config"].update(colour=1), r"invalid config \(unknown config key 'colour'"),
    ],
    ids=["no-config", "step-string", "config-list", "no-state-record", "bad-sha", "bad-config", "unknown-key"],
)
def test_a_checkpoint_json_of_the_wrong_shape_is_refused_in_one_line(tmp_path, reseal_checkpoint, edit, message):
    path = save(tmp_path, ["last"], TiedToy(), step=1)
    reseal_checkpoint(path, edit=edit)
    with pytest.raises(NashError, match=message) as error:
        checkpoint_config(path)
    assert "\n" not in str(error.value) and "checkpoint.json" in str(error.value)


def write_weights(path, tensors: dict, aliases) -> None:
    metadata = {"format": "nash", "aliases": aliases if isinstance(aliases, str) else json.dumps(aliases)}
    save_file(tensors, path / "model.safetensors", metadata=metadata)


TIED = {"head.weight": "embedding.weight"}


@pytest.mark.parametrize(
    "tensors, aliases, message",
    [
        ({"embedding.weight": torch.zeros(10, 4, dtype=torch.float16)}, TIED,
         r"embedding.weight is F16 \[10, 4\] where the model has F32 \[10, 4\]"),
        ({"embedding.weight": torch.zeros(11, 4)}, TIED, r"embedding.weight is F32 \[11, 4\] where the model has"),
        ({"embedding.weight": torch.zeros(10, 4), "extra": torch.zeros(1)}, TIED, r"unexpected \['extra'\]"),
        ({"embedding.weight": torch.zeros(10, 4)}, {}, r"missing \['head.weight'\]"),
        ({"embedding.weight": torch.zeros(10, 4)}, {"head.weight": "nosuch"}, "alias head.weight -> nosuch must name"),
        ({"embedding.weight": torch.zeros(10, 4), "head.weight": torch.zeros(10, 4)}, TIED, "must name an unstored"),
        ({"head.weight": torch.zeros(10, 5)}, {"embedding.weight": "head.weight"}, r"embedding.weight is F32 \[10, 5"),
        ({"embedding.weight": torch.zeros(10, 4)}, "{not json", "'aliases' metadata is not a JSON object"),
        ({"embedding.weight": torch.zeros(10, 4)}, '["head.weight"]', "'aliases' metadata is not a JSON object"),
    ],
    ids=["dtype", "shape", "extra", "missing", "alias-to-none", "alias-stored", "alias-shape", "alias-json",
         "alias-list"],
)
def test_weights_that_do_not_fit_the_model_are_refused_before_any_is_loaded(
    tmp_path, reseal_checkpoint, tensors, aliases, message
):
    path = save(tmp_path, ["last"], TiedToy(), step=1)
    write_weights(path, tensors, aliases)
    reseal_checkpoint(path)  # a hostile file carries matching checksums
    model = TiedToy()
    before = model.embedding.weight.clone()
    with pytest.raises(NashError, match=message) as error:
        load_model_weights(model, path)
    assert "\n" not in str(error.value) and "model.safetensors" in str(error.value)
    assert torch.equal(model.embedding.weight, before)


@pytest.mark.parametrize("header_length", [2**64 - 1, 60 * 2**30], ids=["2^64", "60GB"])
def test_a_huge_safetensors_header_length_is_one_line_not_an_allocation(tmp_path, reseal_checkpoint, header_length):
    path = save(tmp_path, ["last"], TiedToy(), step=1)
    data = (path / "model.safetensors").read_bytes()
    (path / "model.safetensors").write_bytes(struct.pack("<Q", header_length) + data[8:])
    reseal_checkpoint(path)
    with pytest.raises(NashError, match=r"model.safetensors is not a readable safetensors file \(.*header too large"):
        load_model_weights(TiedToy(), path)


@pytest.mark.parametrize(
    "state, problem",
    [
        ([1, 2], "list, not dict"),
        ({key: value for key, value in toy_state(1).items() if key != "ranks"}, "no 'ranks'"),
        (toy_state(1, world_size=True), "'world_size' is bool, not int"),
        (toy_state(1, optimizer=None), "'optimizer' is NoneType, not dict"),
        (toy_state(1, world_size=2), "1 rank states for world_size 2"),
        (toy_state(1, ranks=[{"rng": {}}]), r"ranks\[0\] lacks its 'rng' and 'data' dicts"),
    ],
    ids=["list", "no-ranks", "bool-world-size", "no-optimizer", "ranks-count", "no-data"],
)
def test_a_state_pt_of_another_layout_is_refused_in_one_line(tmp_path, reseal_checkpoint, state, problem):
    path = save(tmp_path, ["last"], TiedToy(), step=1)
    torch.save(state, path / "state.pt")
    reseal_checkpoint(path)
    with pytest.raises(NashError, match=rf"state.pt is not a nash training state \({problem}\)"):
        load_training_state(path)


def test_a_state_with_nan_or_inf_is_not_saved_and_the_previous_checkpoint_is_kept(tmp_path):
    checkpoints = tmp_path / "checkpoints"
    save(checkpoints, ["last", "best"], TiedToy(), step=1)
    before = file_bytes(checkpoints)
    diverged = TiedToy()
    with torch.no_grad():
        diverged.embedding.weight[0, 0] = float("nan")
    with pytest.raises(NashError, match=r"not saving checkpoint last: model\['embedding.weight'\] holds NaN"):
        save(checkpoints, ["last"], diverged, step=2)
    optimizer = {"state": {0: {"step": torch.tensor(2.0), "exp_avg": torch.tensor([1.0, float("inf")])}}}
    with pytest.raises(NashError, match=r"last, best: state\['optimizer'\]\['state'\]\[0\]\['exp_avg'\] holds NaN"):
        save(checkpoints, ["last", "best"], TiedToy(), step=2, state=toy_state(2, optimizer=optimizer))
    assert file_bytes(checkpoints) == before


def test_checkpoint_files_get_the_permissions_the_umask_gives(tmp_path):
    umask = os.umask(0o027)
    try:
        path = save(tmp_path, ["last"], TiedToy(), step=1)
    finally:
        os.umask(umask)
    modes = {file.name: oct(stat.S_IMODE(file.stat().st_mode)) for file in path.iterdir()}
    assert modes == {"model.safetensors": "0o640", "state.pt": "0o640", "checkpoint.json": "0o640"}
