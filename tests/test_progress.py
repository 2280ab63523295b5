"""Progress bars of the long waits: lines in a log, silence when asked, and the waits that show them."""

import io

import pytest
import torch

from voxgan.latentspace import InversionSettings, invert, iou
from voxgan.metrics.surface import surface_metrics
from voxgan.models import build_generator
from voxgan.progress import progress_bar


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_in_a_log_a_bar_is_a_line_at_its_start_and_end() -> None:
    log = io.StringIO()
    with progress_bar("inverting 2 shapes", 500, stream=log, unit="step") as bar:
        for _ in range(500):
            bar.update()
            bar.set_postfix(best_iou="0.500", refresh=False)
    lines = log.getvalue().splitlines()
    assert len(lines) == 2 and "\r" not in log.getvalue()  # not one per update, no redraws
    assert lines[0].startswith("inverting 2 shapes:   0% 0/500")
    assert lines[1].startswith("inverting 2 shapes: 100% 500/500") and "best_iou=0.500" in lines[1]


def test_on_a_terminal_a_bar_redraws_in_place_and_is_silent_when_off() -> None:
    terminal = _Terminal()
    with progress_bar("t-SNE and probes", 3, stream=terminal) as bar:
        bar.update(3)
    assert "\r" in terminal.getvalue() and "3/3" in terminal.getvalue()
    quiet = _Terminal()
    with progress_bar("t-SNE and probes", 3, enable=False, stream=quiet) as bar:
        bar.update(3)
    assert quiet.getvalue() == ""


def _targets(g: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return (g.eval()(torch.randn(2, 200, generator=torch.Generator().manual_seed(1))) >= 0.5).float()


def test_inversion_shows_its_steps_and_best_iou_on_stderr(capsys: pytest.CaptureFixture) -> None:
    torch.manual_seed(0)
    g = build_generator("dcgan3d", 200, 16, 8)
    targets = _targets(g)
    settings = InversionSettings(restarts=2, steps=20)
    sample = lambda n: torch.randn(n, 200, generator=torch.Generator().manual_seed(0))  # noqa: E731
    result = invert(g, targets, sample, settings, progress=True, label="inverting chair:0")
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("inverting chair:0, 2 restarts each:   0% 0/20")
    # the last line: every step, both shapes, and the mean IoU of what the inversion returns
    assert "20/20" in err[-1] and "shapes=2/2" in err[-1]
    assert f"best_iou={iou(result.probs, targets).mean():.3f}" in err[-1]
    invert(g, targets, sample, settings)  # library callers: off by default
    assert capsys.readouterr().err == ""


def test_surface_metrics_show_the_shapes_meshed_and_pairs_compared(capsys: pytest.CaptureFixture) -> None:
    from voxgan.data.procedural import make_shapes

    shapes = make_shapes("chair", [0, 1, 2], 16)
    surface_metrics(shapes, shapes.copy(), distances=("cd",), progress=True)
    err = capsys.readouterr().err
    assert "surface points: 100% 6/6" in err
    assert "Chamfer distances: 100% 15/15" in err  # 3 x 3 between the sets, 3 + 3 within each
    surface_metrics(shapes, shapes.copy(), distances=("cd",))
    assert capsys.readouterr().err == ""
