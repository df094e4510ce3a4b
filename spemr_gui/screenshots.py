"""Regenerate docs/screenshots: drive the real app under an X server and grab each
main view with ``xwd`` (a developer tool, not part of the app).

    Xvfb :9 -screen 0 1600x1000x24 &
    DISPLAY=:9 QT_QPA_PLATFORM=xcb python -m spemr_gui.screenshots docs/screenshots \\
        --real FILE.fits.gz --isochrones ISO.csv --batch-folder DIR

Without a display it falls back to QWidget.grab() (offscreen rendering).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path


def _grab(window, out: Path) -> None:
    """The window as it is on screen (xwd + ImageMagick), else an offscreen grab."""
    if os.environ.get("QT_QPA_PLATFORM") == "xcb" and shutil.which("xwd") and shutil.which("convert"):
        geometry = window.frameGeometry()
        crop = f"{geometry.width()}x{geometry.height()}+{geometry.x()}+{geometry.y()}"
        xwd = subprocess.run(["xwd", "-root", "-silent"], capture_output=True, check=True).stdout
        subprocess.run(
            ["convert", "xwd:-", "-crop", crop, "+repage", "-resize", "1400x>", "-colors", "256", f"PNG8:{out}"],
            input=xwd,
            check=True,
        )
    else:
        window.grab().save(str(out))
    print(f"wrote {out}", flush=True)


class Director:
    """Runs steps one after another: wait until a condition holds, act, pause, shoot."""

    def __init__(self, app, steps):
        from PySide6.QtCore import QTimer

        self.app, self.steps, self.timer = app, list(steps), QTimer()
        self.timer.setSingleShot(True)
        self.timer.timeout.connect(self._next)
        self.waited = 0

    def start(self) -> None:
        self.timer.start(500)

    def _next(self) -> None:
        if not self.steps:
            self.app.quit()
            return
        condition, action, pause_ms = self.steps[0]
        if condition is not None and not condition() and self.waited < 240000:
            self.waited += 200
            self.timer.start(200)
            return
        self.steps.pop(0)
        if self.waited >= 240000:
            print(f"gave up waiting before step {getattr(action, '__name__', action)}", flush=True)
        self.waited = 0
        action()
        self.timer.start(pause_ms)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--real", type=Path, required=True, help="a real LAMOST MRS file")
    parser.add_argument("--sample", type=Path, help="a shipped sample (default: the giant)")
    parser.add_argument("--batch-folder", type=Path, required=True)
    parser.add_argument("--isochrones", type=Path)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)

    import pyqtgraph as pg
    from PySide6.QtCore import QSettings
    from PySide6.QtWidgets import QApplication

    from spemr_engine import api
    from spemr_engine.config import assets_dir

    from .app import build_parser, create_window
    from .isochrones import read_isochrones
    from .settings import AppSettings
    from .views.wizard import open_wizard

    pg.setConfigOptions(antialias=True, background="w", foreground="k")
    app = QApplication(["spemr-gui"])
    work = Path(tempfile.mkdtemp(prefix="spemr-shots-"))
    settings = AppSettings(QSettings(str(work / "settings.ini"), QSettings.IniFormat))
    settings.infer_on_open = True
    sample = args.sample or next(p for p in sorted((assets_dir() / "samples").glob("*.fits*")) if "GIANT" in p.name)
    window = create_window(build_parser().parse_args([str(args.real), str(sample)]), settings)
    window.setGeometry(10, 30, 1560, 940)
    window.show()
    state, batch = window.state, window.batch_view
    shot = lambda name: lambda: _grab(window, args.out / name)  # noqa: E731
    has_result = lambda: state.current_result() is not None  # noqa: E731

    def index_of(path):
        return next(i for i, f in enumerate(state.files) if f.name == Path(path).name)

    def select_real():
        state.select(index_of(args.real), 0)
        window.tabs.setCurrentIndex(0)

    def zoom_on_mgb():
        window.spectrum_view.set_normalised(False)
        window.spectrum_view.arm_plots[0].plot.setXRange(5150, 5200)
        window.spectrum_view.arm_plots[1].plot.setXRange(6540, 6590)

    def comparison():
        window.tabs.setCurrentWidget(window.comparison_view)
        window.comparison_view.label_list.setCurrentRow(2)

    def template():
        state.select(index_of(sample), 0)
        window.tabs.setCurrentWidget(window.template_view)

    def start_batch():
        window.tabs.setCurrentWidget(batch)
        batch.add_inputs([str(args.batch_folder)])
        batch.model_path.setText(str(api.default_model_path()))
        batch.output.setText(str(work / "catalog.csv"))
        batch.exposures.setCurrentText("all")
        batch.start()

    def isochrones():
        if args.isochrones:
            batch.set_isochrones(read_isochrones(args.isochrones))

    wizard_holder = {}

    def wizard_start():
        wizard = open_wizard(window)
        wizard.setGeometry(300, 80, 1100, 800)
        wizard_holder["w"] = wizard
        page = wizard.source_page
        page.n_stars.setValue(60)
        page.output.setText(str(work / "refset"))
        page.prepare()

    def wizard_train():
        wizard = wizard_holder["w"]
        wizard.next()
        wizard.next()
        config = wizard.config_page
        config.preset.setCurrentText("tiny")
        config.members.setValue(1)
        config.epochs.setValue(6)
        config.finetune_epochs.setValue(2)
        config.batch_size.setValue(32)
        config.device.setCurrentText("cpu")
        config.output.setText(str(work / "model"))
        wizard.next()
        wizard.training_page.start()

    def wizard_shot():
        wizard_holder["w"].grab().save(str(args.out / "wizard_training.png"))
        print(f"wrote {args.out / 'wizard_training.png'}", flush=True)

    def zoom_template():
        for arm_plot, (low, high) in zip(window.template_view.spectrum_plots, ((5160, 5200), (6540, 6590))):
            arm_plot.plot.setXRange(low, high)

    steps = [
        (lambda: len(state.files) == 2 and state.model is not None, select_real, 500),
        (has_result, lambda: None, 1500),
        (None, shot("inspector.png"), 300),
        (None, zoom_on_mgb, 800),
        (None, shot("inspector_zoom.png"), 300),
        (None, lambda: window.spectrum_view.set_normalised(True), 300),
        (lambda: state.current_prepared() is not None, lambda: window.spectrum_view.reset_view(), 800),
        (None, shot("normalised.png"), 300),
        (has_result, comparison, 1200),
        (None, shot("submodels.png"), 300),
        (None, template, 300),
        (lambda: has_result() and window.template_view.matches is not None, zoom_template, 1200),
        (None, shot("template.png"), 300),
        (None, start_batch, 500),
        (lambda: not batch.is_running() and batch.model.rows, isochrones, 1500),
        (None, shot("batch.png"), 300),
        (None, wizard_start, 500),
        (lambda: bool(wizard_holder["w"].refset_path), wizard_train, 500),
        (lambda: len(wizard_holder["w"].training_page.training_state.history) >= 8, lambda: None, 800),
        (None, wizard_shot, 300),
        (None, lambda: (wizard_holder["w"].training_page.cancel(), window.shutdown()), 3000),
    ]
    director = Director(app, steps)
    director.start()
    app.exec()
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
