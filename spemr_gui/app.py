"""Entry point of ``spemr-gui [FILE...]``: the desktop app over spemr_engine."""

from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spemr-gui", description="Inspect LAMOST MRS spectra and estimate stellar parameters with SPEMR"
    )
    parser.add_argument("files", nargs="*", help="MRS FITS files to open")
    parser.add_argument("--model", help="model bundle folder (default: the shipped default model)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], help="inference device")
    parser.add_argument("--normalised", action="store_true", help="start on the normalised model input")
    parser.add_argument("--tab", type=int, default=1, help="start on this tab (1 = spectrum)")
    return parser


def create_window(args, settings=None):
    """The main window with every view installed (used by main() and the tests)."""
    from .main_window import MainWindow
    from .settings import AppSettings
    from .views.install import install_views

    settings = settings or AppSettings()
    if args.device:
        settings.device = args.device
    window = MainWindow(settings=settings)
    window.session_model_path = args.model or ""  # this launch only: never saved
    install_views(window)
    if args.normalised:
        window.spectrum_view.set_normalised(True)
    if args.files:
        window.open_files_when_shown(args.files)
    window.tabs.setCurrentIndex(max(0, min(args.tab - 1, window.tabs.count() - 1)))
    return window


def collect_garbage_on_the_gui_thread():
    """Python's cyclic collector runs in whichever thread allocates when a threshold is
    crossed; if that is a worker (a model loading) and the garbage holds Qt wrappers of a
    closed view, their C++ destructors run off the GUI thread and can deadlock on the GIL
    (seen in the GUI tests: a worker stuck in QObject::~QObject inside gc). pyqtgraph's
    GarbageCollector disables automatic collection and collects on a timer in this thread.
    Keep the returned object alive as long as the event loop runs."""
    from pyqtgraph.util.garbage_collector import GarbageCollector

    return GarbageCollector(interval=1.0)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    from PySide6.QtWidgets import QApplication

    import pyqtgraph as pg

    pg.setConfigOptions(antialias=False, background="w", foreground="k")
    app = QApplication.instance() or QApplication(["spemr-gui"])
    app.setApplicationName("spemr-gui")
    app.setOrganizationName("spemr")
    collector = collect_garbage_on_the_gui_thread()  # noqa: F841 (kept alive until exec returns)
    window = create_window(args)
    from .timing import install_from_environment

    trace = install_from_environment(window)
    window.show()
    if trace is not None:
        trace.shown()
    return app.exec()


if __name__ == "__main__":
    sys.exit(main())
