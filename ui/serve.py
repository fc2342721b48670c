"""``python -m ui.serve [streamlit run options]``: start the dashboard with its default
model already loading, so Predict is ready when a user first opens it. What
scripts/dashboard.sh runs; ``streamlit run streamlit_app.py`` still works, only with a
slower first Predict."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    import ui  # noqa: F401 - keeps Keras out of this process before TensorFlow is imported
    from engine.runs import SHIPPED_MODEL_DIR
    from ui import warmup
    if (SHIPPED_MODEL_DIR / "export").is_dir():
        warmup.start(SHIPPED_MODEL_DIR)
    from streamlit.web import cli
    sys.argv = ["streamlit", "run", str(ROOT / "streamlit_app.py"), *(sys.argv[1:] if argv is None else argv)]
    return cli.main()


if __name__ == "__main__":
    sys.exit(main())
