"""Fixtures for the GUI tests: isolated settings, a main window with every view,
and a small random-weight model bundle (until a trained default ships, tests must not
depend on one; its caveat banner is part of what they check)."""

from __future__ import annotations

import pytest

pytest.importorskip("pytestqt")


@pytest.fixture(autouse=True)
def gui_thread_garbage_collection(qapp):
    """The app's policy (app.collect_garbage_on_the_gui_thread): no automatic collection,
    which could destroy Qt objects from a worker thread and deadlock, but collection on
    a timer in the GUI thread; after each test, automatic collection again."""
    import gc

    from spemr_gui.app import collect_garbage_on_the_gui_thread

    collector = collect_garbage_on_the_gui_thread()
    yield
    collector.timer.stop()
    gc.enable()
    gc.collect()


@pytest.fixture
def settings(tmp_path):
    from PySide6.QtCore import QSettings

    from spemr_gui.settings import AppSettings

    return AppSettings(QSettings(str(tmp_path / "spemr-gui.ini"), QSettings.IniFormat))


@pytest.fixture
def window(qtbot, settings):
    """The real main window (all views installed) with no model loaded at start."""
    from spemr_gui.main_window import MainWindow
    from spemr_gui.views.install import install_views

    settings.infer_on_open = False
    win = MainWindow(settings=settings, load_default_model=False)
    install_views(win)
    win.show()
    qtbot.waitExposed(win)
    yield win
    # Stop background work first, then close without the "a batch is running" question
    # (a modal dialog would wait forever in an unattended test run).
    win.shutdown()
    win.close_checks.without_questions()
    win.close()
    win.deleteLater()


@pytest.fixture(scope="session")
def random_bundle(tmp_path_factory):
    """A tiny random-weight SPEMR bundle (base + four regions), built once."""
    from spemr_engine.model.bundle import create_random_bundle

    return create_random_bundle(tmp_path_factory.mktemp("models") / "random-tiny", "tiny", seed=3)


@pytest.fixture
def open_file(qtbot, window):
    """open_file(path) -> OpenFile: open through the window and wait until it lands."""

    def _open(path, timeout=20000):
        with qtbot.waitSignal(window.file_opened, timeout=timeout):
            window.open_files([str(path)])
        return window.state.current

    return _open
