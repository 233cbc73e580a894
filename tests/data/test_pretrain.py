import io

import pytest
import torch

from nashcli.data.pretrain import PretrainBatches, resolve_dataset_dir
from nashcli.errors import NashError

from .corpora import make_dataset, split_tokens


def test_windows_are_shifted_shard_slices_that_never_cross_a_shard_end(tmp_path):
    folder = make_dataset(tmp_path / "d")
    batches = PretrainBatches(folder, "train", seq_len=64, batch_size=4, seed=0)
    # (1000-1)//64 + (777-1)//64 + (50-1)//64 = 15 + 12 + 0 windows
    assert batches.num_windows == 27 and batches.num_tokens == 1827
    shard_starts = {0: 0, 1: 1000}
    seen = []
    for _ in range(27 // 4 + 1):
        x, y = batches.next_batch()
        assert x.shape == y.shape == (4, 64) and x.dtype == y.dtype == torch.int64
        assert torch.equal(x[:, 1:], y[:, :-1])
        for row in range(4):
            start = int(x[row, 0])
            shard = 0 if start < 1000 else 1
            offset = start - shard_starts[shard]
            assert offset % 64 == 0  # windows start every seq_len tokens of their shard
            assert offset + 65 <= (1000, 777)[shard]  # and end inside it
            assert torch.equal(y[row], torch.arange(start + 1, start + 65))
            seen.append(start)
    assert sorted(seen[:27]) == sorted(set(seen[:27]))  # an epoch visits every window once


def test_state_dict_round_trip_gives_the_same_next_batches(tmp_path):
    folder = make_dataset(tmp_path / "d")
    batches = PretrainBatches(folder, "train", seq_len=32, batch_size=3, seed=7)
    for _ in range(20):  # past an epoch boundary (56 windows)
        batches.next_batch()
    buffer = io.BytesIO()
    torch.save(batches.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    expected = [batches.next_batch() for _ in range(5)]
    resumed = PretrainBatches(folder, "train", seq_len=32, batch_size=3, seed=7)
    resumed.load_state_dict(state)
    for (x, y), (x2, y2) in zip(expected, (resumed.next_batch() for _ in range(5))):
        assert torch.equal(x, x2) and torch.equal(y, y2)
    fresh = PretrainBatches(folder, "train", seq_len=32, batch_size=3, seed=7)
    assert not torch.equal(fresh.next_batch()[0], expected[0][0])


def test_ranks_split_the_global_batch(tmp_path):
    folder = make_dataset(tmp_path / "d")
    single = PretrainBatches(folder, "train", seq_len=16, batch_size=6, seed=3)
    ranks = [PretrainBatches(folder, "train", seq_len=16, batch_size=3, seed=3, rank=r, world_size=2) for r in (0, 1)]
    for _ in range(4):
        x, _ = single.next_batch()
        parts = [rank.next_batch()[0] for rank in ranks]
        assert torch.equal(torch.cat(parts), x)


def test_eval_batches_are_fixed_and_independent_of_training_position(tmp_path):
    folder = make_dataset(tmp_path / "d")
    batches = PretrainBatches(folder, "val", seq_len=16, batch_size=2, seed=1)
    first = [x for x, _ in batches.eval_batches(3)]
    batches.next_batch()
    other_seed = PretrainBatches(folder, "val", seq_len=16, batch_size=2, seed=99)
    for x, x2, x3 in zip(first, (x for x, _ in batches.eval_batches(3)), (x for x, _ in other_seed.eval_batches(3))):
        assert torch.equal(x, x2) and torch.equal(x, x3)
    ranks = [PretrainBatches(folder, "val", seq_len=16, batch_size=2, seed=1, rank=r, world_size=2) for r in (0, 1)]
    starts = [set(int(x[i, 0]) for x, _ in rank.eval_batches(2) for i in range(2)) for rank in ranks]
    assert not starts[0] & starts[1]


def test_reads_a_prepared_dataset_end_to_end(tmp_path):
    from nashcli.data.prepare import prepare_dataset
    from nashcli.data.sources import resolve_source

    out = tmp_path / "data" / "shakespeare"
    prepare_dataset(resolve_source("shakespeare"), out)
    tokens = split_tokens(out, "val")
    batches = PretrainBatches(resolve_dataset_dir("shakespeare", tmp_path / "data"), "val", 128, 8, seed=0, vocab_size=50257)
    x, y = batches.next_batch()
    windows = {tuple(tokens[i : i + 129].tolist()) for i in range(0, len(tokens) - 128, 128)}
    for row in range(8):
        assert tuple(torch.cat([x[row], y[row, -1:]]).tolist()) in windows


def test_user_errors_are_one_line(tmp_path):
    folder = make_dataset(tmp_path / "d", val_tokens=0, max_token_id=50256)
    with pytest.raises(NashError, match=r"has no 'val' split \(splits with data: train\)"):
        PretrainBatches(folder, "val", 16, 2, seed=0)
    with pytest.raises(NashError, match="holds token ids up to 50256 .* set model.vocab_size to at least 50257"):
        PretrainBatches(folder, "train", 16, 2, seed=0, vocab_size=1000)
    with pytest.raises(NashError, match=r"fewer than one sequence of 1025 \(model.max_seq_len \+ 1\)"):
        PretrainBatches(folder, "train", 1024, 2, seed=0)
    other = PretrainBatches(folder, "train", 32, 2, seed=0)
    with pytest.raises(NashError, match="resume with the same data and model.max_seq_len"):
        other.load_state_dict(PretrainBatches(folder, "train", 16, 2, seed=0).state_dict())


def test_a_token_id_above_max_token_id_stops_the_batch_naming_its_shard(tmp_path):
    # meta.json says ids stop at 999; train_001.bin holds 1000..1776 (a dataset that lies, say, or a
    # damaged one without checksums): no such id may reach the model's embedding.
    folder = make_dataset(tmp_path / "d", max_token_id=999)
    assert int(next(PretrainBatches(folder, "val", 16, 4, seed=0).eval_batches(1))[0].max()) <= 999
    batches = PretrainBatches(folder, "train", 16, 64, seed=0, vocab_size=50257)
    with pytest.raises(NashError, match=r"d/train_001.bin holds token id 1\d{3}, above max_token_id 999 in .*d/meta.json"):
        batches.next_batch()


def test_resolve_dataset_dir_names_what_is_prepared_and_the_fix(tmp_path):
    data_dir = tmp_path / "data"
    make_dataset(data_dir / "mine")
    assert resolve_dataset_dir("mine", data_dir) == data_dir / "mine"
    assert resolve_dataset_dir(str(data_dir / "mine"), tmp_path / "elsewhere") == data_dir / "mine"
    with pytest.raises(NashError, match=r"no prepared dataset 'shakespeare' in .*data/ \(prepared: mine\): run `nash prepare shakespeare`"):
        resolve_dataset_dir("shakespeare", data_dir)
    with pytest.raises(NashError, match=r"no prepared dataset 'notes' .*run `nash prepare PATH --out .*data/notes`"):
        resolve_dataset_dir("notes", data_dir)
    (data_dir / "half").mkdir()
    with pytest.raises(NashError, match="half is not a prepared dataset"):
        resolve_dataset_dir("half", data_dir)
