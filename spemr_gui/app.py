"""Entry point of ``spemr-gui``."""
from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    from PySide6.QtWidgets import QApplication, QLabel

    argv = sys.argv if argv is None else argv
    app = QApplication.instance() or QApplication(argv)
    label = QLabel("spemr: the desktop app is being built")
    label.show()
    return app.exec()


if __name__ == "__main__":
    sys.exit(main())
