"""The live training display's evaluation line (plain lines: the test console is not a terminal)."""

from nashcli.cli import training_display
from nashcli.cli.training_display import TrainingDisplay
from nashcli.engine.records import EvalRecord


def test_an_evaluation_line_shows_bits_per_byte_and_the_task_metrics(monkeypatch):
    printed = []
    monkeypatch.setattr(training_display.console, "print", lambda text, **options: printed.append(str(text)))
    record = EvalRecord(
        step=200, val_loss=3.25, val_bpb=1.1234, val_perplexity=25.79, val_accuracy=0.31, val_tokens=4096,
        val_bytes=17000, is_best=True, task_metrics={"hellaswag_acc": 0.2859, "hellaswag_acc_norm": 0.2955},
    )
    TrainingDisplay().on_eval(record)
    assert printed == [
        "eval step 200: val loss [bold]3.2500[/]  bpb 1.1234  perplexity 25.7900  accuracy 31.0%  "
        "hellaswag_acc 28.6%  hellaswag_acc_norm 29.5%  [bold green]best[/]"
    ]
    TrainingDisplay(quiet=True).on_eval(record)
    assert len(printed) == 1
