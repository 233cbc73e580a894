import torch

from nashcli.engine.compile import eager_fallback


def test_eager_fallback_lasts_only_while_active():
    before = torch._dynamo.config.suppress_errors
    with eager_fallback():
        assert torch._dynamo.config.suppress_errors is True
    assert torch._dynamo.config.suppress_errors == before is False  # dynamo's default, left as it was
