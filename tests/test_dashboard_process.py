"""The dashboard's own process: what it imports and how it holds a model. The
latencies these serve are measured by bench/browser_latency.py, not asserted here."""

import subprocess
import sys

import numpy as np

from conftest import ROOT


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)})


def test_keras_stays_out_of_the_dashboard_process():
    """TensorFlow alone imports Keras (installed with it), and Streamlit then clears
    Keras' session after every rerun, emptying TensorFlow's kernel cache. A process
    that imports the ui package first (every page does) loads, warms and runs the
    shipped model without Keras."""
    plain = _python("import sys, tensorflow; print('keras' in sys.modules)")
    assert plain.returncode == 0, plain.stderr[-2000:]
    assert plain.stdout.strip().endswith("True"), "precondition: TensorFlow imports Keras on its own"
    dashboard = _python(
        "import sys, ui, numpy as np\n"
        "from engine.serving.inference import load_model\n"
        "model = load_model('checkpoints').warm_up()\n"
        "model.explain_all(np.zeros([2, model.image_size, model.image_size, 3], np.uint8))\n"
        "print('keras' in sys.modules)")
    assert dashboard.returncode == 0, dashboard.stderr[-2000:]
    assert dashboard.stdout.strip().endswith("False")


def test_warming_a_model_up_changes_none_of_its_answers():
    from engine.serving.inference import load_model
    cold = load_model(ROOT / "checkpoints")
    images = np.random.default_rng(0).integers(0, 256, (3, cold.image_size, cold.image_size, 3), dtype=np.uint8)
    before = cold.explain_all(images)
    warm = cold.warm_up()
    assert warm is cold
    after = warm.explain_all(images)
    np.testing.assert_allclose(after[0], before[0], atol=1e-6)
    np.testing.assert_allclose(after[1], before[1], atol=1e-6)
